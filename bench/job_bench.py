"""``make bench`` (render job): the whole Beam job against the renderer alone, same run.

On the default corpus (106 Wikipedia articles): documents and strips per second for the job
with one worker, end to end (Beam start-up, reading, shuffling, rendering, encoding, tar
writing, manifest), against the renderer alone, and rendering plus sample encoding alone,
in the same process; bytes per strip on disk. Then the strip-image encodings compared on
the same strips (bytes, encode and decode time), which is how the job's PNG was chosen.
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pixeltext_render import Renderer
from pixeltext_render.corpora import default_corpus
from pixeltext_render.pipeline import RenderJob, run
from pixeltext_render.schema import encode_png, encode_strip
from pixeltext_render.shards import tar_bytes


def documents() -> list[str]:
    with open(default_corpus(), encoding="utf-8") as lines:
        return [json.loads(line)["text"] for line in lines]


def time_renderer(texts: list[str], encode: bool) -> tuple[float, int, list]:
    """Seconds for a fresh renderer (cold caches, as a job worker starts) over the corpus."""
    renderer = Renderer()
    start = time.perf_counter()
    strips, samples = [], []
    for n, text in enumerate(texts):
        document = renderer.render(text)
        strips += document.strips
        if encode:
            count = len(document.strips)
            samples += [
                (f"d{n}_{i:04d}", encode_strip(s, f"d{n}", i, count, "bench", 16))
                for i, s in enumerate(document.strips)
            ]
    if encode:
        tar_bytes(samples)
    return time.perf_counter() - start, len(strips), strips


def time_job(workers: int, shard_samples: int = 1000, corpus: str | None = None) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        job = RenderJob((corpus or str(default_corpus()),), out, shard_samples=shard_samples)
        manifest = run(job, workers=workers, progress=False)
        return time.perf_counter() - start, manifest


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


def main() -> None:
    texts = documents()
    render_s, strips, rendered = time_renderer(texts, encode=False)
    encoded_s, _, _ = time_renderer(texts, encode=True)
    job_s, manifest = time_job(workers=1)
    job2_s, _ = time_job(workers=2)
    job2_small_s, _ = time_job(workers=2, shard_samples=100)
    with tempfile.TemporaryDirectory() as folder:  # the fixed cost: a one-line corpus
        tiny = Path(folder, "one.jsonl")
        tiny.write_text(json.dumps({"id": "one", "text": "One short document."}) + "\n")
        fixed_1, _ = time_job(workers=1, corpus=str(tiny))
        fixed_2, _ = time_job(workers=2, corpus=str(tiny))
    totals = manifest["totals"]
    assert totals["strips"] == strips, (totals["strips"], strips)
    print(f"\nrender job on the default corpus: {len(texts)} documents, {strips} strips")
    print(f"{'':46}{'docs/s':>9}{'strips/s':>10}{'vs renderer':>13}")
    rows = [
        ("renderer alone (cold, SentencePiece tokens)", render_s),
        ("renderer + sample encoding + tar (no Beam)", encoded_s),
        ("whole job, 1 worker, end to end", job_s),
        ("whole job, 2 workers (2 shards)", job2_s),
        ("whole job, 2 workers, 100 strips/shard (12)", job2_small_s),
    ]
    rows += [
        ("  the same, less a 1-document job (1 worker)", job_s - fixed_1),
        ("  the same, less a 1-document job (2 workers)", job2_small_s - fixed_2),
    ]
    for name, seconds in rows:
        print(f"{name:46}{len(texts) / seconds:9.1f}{strips / seconds:10.1f}{render_s / seconds:13.2f}")
    print(f"fixed cost of a job (start-up, stages, summary): {fixed_1:.1f} s (1 worker), {fixed_2:.1f} s (2)")
    print(f"bytes per strip on disk: {totals['bytes'] / strips:,.0f} (shards {totals['bytes'] / 1e6:.1f} MB)")
    print("\nstrip image encodings (stored part of each strip, same strips):")
    print(f"{'':64}{'bytes':>9}{'encode ms':>11}{'decode ms':>11}")
    for name, size, encode_ms, decode_ms in encodings(rendered[:300]):
        print(f"{name:64}{size:9,.0f}{encode_ms:11.2f}{decode_ms:11.2f}")
    out = Path("outputs/bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / "job.json").write_text(
        json.dumps(
            {
                "documents": len(texts),
                "strips": strips,
                "seconds": dict(
                    renderer=render_s,
                    renderer_and_encoding=encoded_s,
                    job_1_worker=job_s,
                    job_2_workers=job2_s,
                    job_2_workers_12_shards=job2_small_s,
                ),
                "bytes_per_strip": totals["bytes"] / strips,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
