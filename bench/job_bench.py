"""``make bench`` (render job): the whole Beam job against PIXEL's approach, same strips, same run.

PIXEL pre-renders with PangoCairo and stores PNGs; its cost per strip is PangoCairo drawing
plus PNG encoding (cairo's encoder), timed under Debian's Python on the same strip texts.
Measured here, with one worker end to end (Beam start-up, both passes, reading, shuffling,
rendering, tokenising, encoding, tar writing, manifest):

- the default corpus (106 Wikipedia articles) from cold caches, as a fresh worker starts;
- a mix of English, French, Spanish and German documents (Django's messages and their
  translations) repeated 40 times under distinct ids, where the caches are warm;
- the job's time per stage (exclusive wall time, `stage_clock.py`), the rest being Beam's;
- the strip-image encodings and deflate libraries on the same strips, which is how the
  stored PNG was chosen;
- the colour modes (``RenderConfig.color``: rgb, gray, binary) on the same documents: shard
  bytes per strip (the whole job's tar files) and strips/s, of the job and of rendering and
  encoding alone with warm caches.
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from render_bench import ensure_pango, time_pango
from stage_clock import StageClock
from zlib_ng import zlib_ng

from pixeltext_render import RenderConfig, Renderer
from pixeltext_render.config import COLORS
from pixeltext_render.format.sample import encode_png, encode_strip
from pixeltext_render.job.corpora import default_corpus, django_catalogue, django_messages
from pixeltext_render.job.pipeline import RenderJob, process_renderer, run

MIX_LANGUAGES = ("fr", "es", "de")
MIX_DOCUMENTS_PER_LANGUAGE = 5
MIX_REPEATS = 40
MIX_CHARACTERS = 2000  # about one strip per document


def default_documents() -> list[dict[str, str]]:
    with open(default_corpus(), encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def _chunks(messages: list[str], count: int) -> list[str]:
    """The first ``count`` documents of about MIX_CHARACTERS, messages joined by spaces."""
    documents, current = [], ""
    for message in messages:
        current = f"{current} {message}" if current else message
        if len(current) >= MIX_CHARACTERS:
            documents.append(current)
            current = ""
            if len(documents) == count:
                break
    return documents


def mixed_documents() -> list[dict[str, str]]:
    """English (the source messages), French, Spanish and German, repeated with distinct ids."""
    english = sorted({key for key in django_catalogue("fr") if isinstance(key, str) and key})
    texts = _chunks(english, MIX_DOCUMENTS_PER_LANGUAGE)
    for language in MIX_LANGUAGES:
        texts += _chunks(django_messages(language), MIX_DOCUMENTS_PER_LANGUAGE)
    return [{"id": f"r{r}-{i}", "text": t} for r in range(MIX_REPEATS) for i, t in enumerate(texts)]


def time_job(
    documents: list[dict[str, str]],
    workers: int = 1,
    clock: StageClock | None = None,
    config: RenderConfig | None = None,
):
    """Seconds for the whole job on ``documents`` (a JSONL corpus), and its manifest. The job
    starts with cold caches, as a fresh worker does: no renderer is kept from an earlier job."""
    process_renderer.cache_clear()
    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder, "corpus.jsonl")
        corpus.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in documents), "utf-8")
        job = RenderJob((str(corpus),), str(Path(folder, "out")), config=config or RenderConfig())
        start = time.perf_counter()
        if clock is None:
            manifest = run(job, workers=workers, progress=False)
        else:
            with clock.running():
                manifest = run(job, workers=workers, progress=False)
        return time.perf_counter() - start, manifest


def strip_texts(documents: list[dict[str, str]]) -> list[str]:
    """The texts of the strips the job makes of ``documents`` (the default tokenizer decides
    where strips end), as PangoCairo is given them."""
    renderer = Renderer()
    return [strip.text for d in documents for strip in renderer.render(d["text"]).strips]


def encodings(strips: list) -> list[tuple[str, float, float, float]]:
    """(choice, bytes, encode ms, decode ms) on the stored part of each strip."""
    stored = [np.ascontiguousarray(s.image[:, : (s.num_text_patches + 1) * 16]) for s in strips]

    def pillow(image: np.ndarray, **options) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", **options)
        return buffer.getvalue()

    def rgb(image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.repeat(image[..., None], 3, axis=2)) if image.ndim == 2 else image

    choices = {
        "Pillow PNG, RGB, level 6 (default)": lambda im: pillow(rgb(im)),
        "Pillow PNG, RGB, level 1": lambda im: pillow(rgb(im), compress_level=1),
        "Pillow PNG, grey when possible, level 1": lambda im: pillow(im, compress_level=1),
        "Pillow PNG, grey when possible, level 6": lambda im: pillow(im, compress_level=6),
        "pixeltext PNG, grey when possible, no filter, level 1": lambda im: encode_png(im, 1),
        "pixeltext PNG, grey when possible, no filter, level 3 (chosen)": lambda im: encode_png(im, 3),
        "pixeltext PNG, grey when possible, no filter, level 6": lambda im: encode_png(im, 6),
    }
    rows = []
    for name, encode in choices.items():
        start = time.perf_counter()
        data = [encode(image) for image in stored]
        encode_ms = (time.perf_counter() - start) / len(stored) * 1e3
        start = time.perf_counter()
        for blob in data:
            np.asarray(Image.open(io.BytesIO(blob)))
        decode_ms = (time.perf_counter() - start) / len(stored) * 1e3
        rows.append((name, statistics.mean(map(len, data)), encode_ms, decode_ms))
    return rows


def deflates(strips: list) -> list[tuple[str, float, float]]:
    """(library and level, bytes, encode ms) of the PNG's deflate on the stored rows."""
    rows = []
    for strip in strips:
        image = np.ascontiguousarray(strip.image[:, : (strip.num_text_patches + 1) * 16])
        filtered = np.zeros((image.shape[0], 1 + image[0].size), np.uint8)
        filtered[:, 1:] = image.reshape(image.shape[0], -1)
        rows.append(filtered.tobytes())
    table = []
    for name, compress in (("stdlib zlib", zlib.compress), ("zlib-ng", zlib_ng.compress)):
        for level in (1, 3, 6):
            start = time.perf_counter()
            sizes = [len(compress(data, level)) for data in rows]
            label = f"{name}, level {level}" + (" (chosen)" if name == "zlib-ng" and level == 3 else "")
            table.append((label, statistics.mean(sizes), (time.perf_counter() - start) / len(rows) * 1e3))
    return table


def colour_modes(documents: list[dict[str, str]], report: dict) -> None:
    """Each colour mode on the same documents: the whole job (1 worker, cold) and its shard bytes
    per strip, then rendering and encoding alone, the second pass (warm caches)."""
    print(f"\ncolour modes (RenderConfig.color), the same {len(documents)} documents:")
    print(
        f"{'mode':8}{'strips':>8}{'shard bytes/strip':>19}{'png bytes/strip':>17}{'job strips/s':>14}"
        f"{'render+encode strips/s':>24}"
    )
    rows = {}
    for color in COLORS:
        config = RenderConfig(color=color)
        seconds, manifest = time_job(documents, config=config)
        totals = manifest["totals"]
        renderer = Renderer(config)
        for _ in range(2):  # (the first pass fills the caches)
            start, samples = time.perf_counter(), []
            for document in documents:
                strips = renderer.render(document["text"]).strips
                for index, strip in enumerate(strips):
                    samples.append(
                        encode_strip(strip, document["id"], index, len(strips), "bench", config.patch_size)
                    )
            warm = time.perf_counter() - start
        row = {
            "strips": totals["strips"],
            "shard_bytes_per_strip": totals["bytes"] / totals["strips"],
            "png_bytes_per_strip": statistics.mean(len(sample["png"]) for sample in samples),
            "job_strips_per_s": totals["strips"] / seconds,
            "render_encode_strips_per_s": len(samples) / warm,
        }
        print(
            f"{color:8}{row['strips']:8}{row['shard_bytes_per_strip']:19,.0f}{row['png_bytes_per_strip']:17,.0f}"
            f"{row['job_strips_per_s']:14.1f}{row['render_encode_strips_per_s']:24.1f}"
        )
        rows[color] = row
    report["colour_modes"] = rows


def compare(name: str, documents: list[dict[str, str]], pango_problem: str | None, report: dict) -> None:
    """The whole job, one worker, against PangoCairo + PNG on the same strips."""
    seconds, manifest = time_job(documents)
    strips = manifest["totals"]["strips"]
    row = {"documents": len(documents), "strips": strips, "job_strips_per_s": strips / seconds}
    print(f"\n[{name}] {len(documents)} documents, {strips} strips")
    print(f"  whole job, 1 worker, end to end: {seconds:6.1f} s  {strips / seconds:6.1f} strips/s")
    if pango_problem is None:
        texts = strip_texts(documents)
        assert len(texts) == strips, (len(texts), strips)
        pango = time_pango(texts, Renderer(tokenizer="bytes"))
        row["pango_png_strips_per_s"] = 1 / pango["png_s"]
        row["ratio"] = row["job_strips_per_s"] / row["pango_png_strips_per_s"]
        print(f"  PangoCairo drawing + PNG alone:        {1 / pango['png_s']:6.1f} strips/s")
        print(f"  job / (PangoCairo + PNG):              {row['ratio']:6.2f}x")
    else:
        print(f"  PangoCairo skipped: {pango_problem}")
    report[name] = row


def profile(documents: list[dict[str, str]], report: dict) -> None:
    clock = StageClock()
    seconds, manifest = time_job(documents, clock=clock)
    strips = manifest["totals"]["strips"]
    stages = dict(clock.seconds)
    stages["Beam (graph, start-up, bundles, shuffle, both passes)"] = seconds - sum(stages.values())
    print(f"\nwhere one worker's time goes (default corpus, cold, {seconds:.1f} s, {strips} strips):")
    print(f"{'stage':58}{'seconds':>9}{'share':>8}{'ms/strip':>10}")
    for stage, spent in stages.items():
        print(f"{stage:58}{spent:9.2f}{spent / seconds:8.0%}{spent / strips * 1e3:10.2f}")
    report["stages_default_corpus"] = stages


def main() -> None:
    pango_problem = ensure_pango()
    report: dict = {}
    default = default_documents()
    compare("default corpus, cold caches", default, pango_problem, report)
    compare("en/fr/es/de mix repeated 40 times, warm caches", mixed_documents(), pango_problem, report)
    profile(default, report)
    renderer = Renderer()
    rendered = [s for d in default[:30] for s in renderer.render(d["text"]).strips][:300]
    print("\nstrip image encodings (stored part of each strip, same strips):")
    print(f"{'':64}{'bytes':>9}{'encode ms':>11}{'decode ms':>11}")
    for name, size, encode_ms, decode_ms in encodings(rendered):
        print(f"{name:64}{size:9,.0f}{encode_ms:11.2f}{decode_ms:11.2f}")
    print("\nthe PNG's deflate (same rows, no filter):")
    print(f"{'':64}{'bytes':>9}{'encode ms':>11}")
    for name, size, encode_ms in deflates(rendered):
        print(f"{name:64}{size:9,.0f}{encode_ms:11.2f}")
    colour_modes(default[:30], report)
    out = Path("outputs/bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / "job.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
