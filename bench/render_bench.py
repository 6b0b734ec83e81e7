"""``make bench`` (renderer): strips per second per core, three renderers, same strips, same run.

- pixeltext: this renderer (HarfBuzz shaping, cached glyph ink, numpy canvas), cold (fresh
  caches) and warm, with the byte tokenizer (rendering alone) and with SentencePiece;
- Pillow: a naive ``ImageDraw.text`` per strip (RAQM layout, main font only: Pillow has no
  font fallback, so it does less work on multilingual text);
- PangoCairo: PIXEL's reference renderer, under Debian's Python (installed with apt-get
  when missing and running as root; otherwise skipped with the reason).

English: strips of the Wikipedia sample; multilingual: strips of Django's catalogues
(24 languages). Also checks the fast path against the uncached slow path, pixel for pixel.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pixeltext_render import Renderer
from pixeltext_render.assets import assets_dir
from pixeltext_render.job.corpora import django_languages, django_messages, wikipedia_articles
from pixeltext_render.reference import render_line_uncached
from pixeltext_render.renderer import Strip

PANGO_PACKAGES = ["python3-gi", "python3-gi-cairo", "gir1.2-pango-1.0", "python3-numpy"]
SYSTEM_PYTHON = "/usr/bin/python3"


def corpora(english_docs: int) -> dict[str, list[str]]:
    english = [a["text"] for a in itertools.islice(wikipedia_articles(), english_docs)]
    multilingual = [" ".join(django_messages(lang)) for lang in django_languages()]
    return {"english": english, "multilingual": multilingual}


def strip_texts(documents: list[str]) -> list[str]:
    """The texts of the strips the documents become (each fits one strip)."""
    renderer = Renderer(tokenizer="bytes")
    return [strip.text for doc in documents for strip in renderer.render(doc).strips]


def time_ours(texts: list[str], tokenizer: str, passes: int) -> list[float]:
    """Seconds per strip for each pass over ``texts`` with one renderer (pass 0 is cold)."""
    renderer = Renderer(tokenizer=tokenizer)
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        for text in texts:
            renderer.render(text)
        rates.append((time.perf_counter() - start) / len(texts))
    return rates


def time_pillow(texts: list[str], renderer: Renderer) -> float:
    config = renderer.config
    font = ImageFont.truetype(
        str(renderer.chain.fonts[0].path), config.font_size, layout_engine=ImageFont.Layout.RAQM
    )
    start = time.perf_counter()
    for text in texts:
        image = Image.new("RGB", (config.width, config.height), config.background)
        ImageDraw.Draw(image).text(
            (config.margin_left, renderer.baseline),
            text.translate(renderer.display),
            font=font,
            fill=config.text_color,
            anchor="ls",
        )
        np.asarray(image)
    return (time.perf_counter() - start) / len(texts)


def ensure_pango() -> str | None:
    """None if PangoCairo is usable, else why not."""
    probe = [SYSTEM_PYTHON, "-c", "import gi, cairo, numpy; gi.require_version('PangoCairo', '1.0')"]
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    if subprocess.run(probe, capture_output=True).returncode == 0:
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"needs Debian packages {' '.join(PANGO_PACKAGES)} (apt-get as root)"
    print(f"installing {' '.join(PANGO_PACKAGES)} with apt-get ...", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
    install = subprocess.run(
        ["apt-get", "install", "-y", "-qq", *PANGO_PACKAGES], capture_output=True, text=True
    )
    if install.returncode != 0 or subprocess.run(probe, capture_output=True).returncode != 0:
        return f"apt-get install failed: {install.stderr.strip()[-300:]}"
    return None


def time_pango(texts: list[str], renderer: Renderer) -> dict[str, float]:
    """Means per strip (seconds to render; render + RGB array; render + PNG; the PNG's bytes),
    after a warm-up run. Fails if PangoCairo's strips carry much less or more ink than ours:
    a reference that draws its text outside the strip would be timed on blank images."""
    config = renderer.config
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp, "fonts.conf")
        conf.write_text(
            '<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>'
            f"<dir>{assets_dir() / 'fonts'}</dir><cachedir>{tmp}/cache</cachedir></fontconfig>"
        )
        job = Path(tmp, "job.json")
        job.write_text(
            json.dumps(
                {
                    "texts": [t.translate(renderer.display) for t in texts],
                    "font": "Noto Sans",
                    "points": 8,
                    "dpi": 120,  # 8 pt at 120 dpi = 13.33 px, as PIXEL
                    "height": config.height,
                    "width": config.width,
                    "patch": config.patch_size,
                }
            )
        )
        env = {**os.environ, "FONTCONFIG_FILE": str(conf)}
        worker = [SYSTEM_PYTHON, str(Path(__file__).with_name("pango_render.py")), str(job)]
        subprocess.run(worker, env=env, check=True, capture_output=True)  # warm-up: font cache
        result = json.loads(subprocess.run(worker, env=env, check=True, capture_output=True).stdout)
    firsts = (renderer.render(text).strips[0] for text in texts)
    ours = [inked_columns(strip, config.patch_size) for strip in firsts]
    ratio = sum(result.pop("inked_columns")) / max(sum(ours), 1)
    if not 0.8 <= ratio <= 1.25:
        raise RuntimeError(f"PangoCairo inked {ratio:.2f}x the columns this renderer inked: not drawn alike")
    return {key: statistics.mean(values) for key, values in result.items()}


def inked_columns(strip: Strip, patch_size: int) -> int:
    """Columns of a strip's text patches with a dark pixel (the black end patch left out)."""
    text = strip.pixels[:, : strip.num_text_patches * patch_size]
    return int((text < 128).any(axis=(0, 2)).sum())


def identical_to_slow_path(texts: list[str]) -> tuple[int, int]:
    renderer = Renderer(tokenizer="bytes")
    same = 0
    for text in texts:
        strip = renderer.render(text).strips[0]
        slow, _ = render_line_uncached(renderer, text)
        cut = strip.num_text_patches * renderer.config.patch_size
        same += bool(np.array_equal(strip.pixels[:, :cut], slow[:, :cut]))
    return same, len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--english-docs", type=int, default=30)
    parser.add_argument("--pillow-strips", type=int, default=30, help="Pillow is slow: time this many")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()

    pango_problem = ensure_pango()
    reference = Renderer(tokenizer="bytes")
    rows = []
    for name, documents in corpora(args.english_docs).items():
        texts = strip_texts(documents)
        chars = sum(map(len, texts)) / len(texts)
        print(f"[{name}] {len(texts)} strips, {chars:.0f} characters per strip", file=sys.stderr)
        ours = time_ours(texts, "bytes", args.passes)
        with_tokens = time_ours(texts, "sentencepiece", args.passes)
        warm, warm_tokens = min(ours[1:] or ours), min(with_tokens[1:] or with_tokens)
        pillow = time_pillow(texts[: args.pillow_strips], reference)
        row = {
            "corpus": name,
            "strips": len(texts),
            "chars_per_strip": round(chars),
            "pixeltext_cold": 1 / ours[0],
            "pixeltext_warm": 1 / warm,
            "pixeltext_warm_with_sentencepiece": 1 / warm_tokens,
            "pillow": 1 / pillow,
        }
        if pango_problem is None:
            pango = time_pango(texts, reference)
            row["pangocairo_render"] = 1 / pango["render_s"]
            row["pangocairo_render_to_array"] = 1 / pango["array_s"]
            row["pangocairo_render_and_png"] = 1 / pango["png_s"]
        same, total = identical_to_slow_path(texts)
        row["identical_to_slow_path"] = f"{same}/{total}"
        rows.append(row)

    print("\nstrips per second per core (higher is better); ratio = pixeltext warm / other")
    print(f"{'corpus':14}{'engine':36}{'strips/s':>10}{'ratio':>8}")
    for row in rows:
        ours = row["pixeltext_warm"]
        for key in [k for k in row if k.startswith(("pixeltext", "pillow", "pangocairo"))]:
            print(f"{row['corpus']:14}{key:36}{row[key]:10.1f}{ours / row[key]:8.2f}")
        print(f"{row['corpus']:14}{'pixel-identical to the slow path':36}{row['identical_to_slow_path']:>10}")
    if pango_problem:
        print(f"PangoCairo skipped: {pango_problem}")
    out = Path("outputs/bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / "render.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
