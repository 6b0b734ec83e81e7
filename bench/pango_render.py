"""PIXEL's reference renderer, PangoCairo, timed on given strip texts.

Runs under Debian's system Python (``/usr/bin/python3`` with python3-gi, gir1.2-pango-1.0,
python3-gi-cairo, python3-numpy), not in the project's environment. Reads a JSON file
``{"texts": [...], "font": "Noto Sans", "points": 8, "dpi": 120, "height": 16, "width": 16384,
"patch": 16}``
and prints ``{"render_s": [...], "array_s": [...], "png_s": [...], "png_bytes": [...],
"inked_columns": [...]}``: per strip, seconds to draw into a cairo surface, to also copy it
out as an RGB numpy array (what PIXEL returns), and to also encode that as a PNG (cairo's
encoder, as a pre-rendering job would store it); the PNG's size, and how many columns have
ink (so a caller can check the text was drawn inside the strip).

The layout is placed as PIXEL's ``PangoCairoTextRenderer`` places a sentence: its top-left
at x = 2 and y = patch / 2 - layout height / 2 - 2, drawn with ``show_layout``.
"""

import io
import json
import sys
import time

import cairo
import gi
import numpy as np

gi.require_version("Pango", "1.0")
gi.require_version("PangoCairo", "1.0")
from gi.repository import Pango, PangoCairo  # noqa: E402


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        job = json.load(handle)
    height, width = job["height"], job["width"]
    font = Pango.FontDescription.from_string(f"{job['font']} {job['points']}")
    render_s, array_s, png_s, png_bytes, inked_columns = [], [], [], [], []
    for text in job["texts"]:
        start = time.perf_counter()
        surface = cairo.ImageSurface(cairo.FORMAT_RGB24, width, height)
        context = cairo.Context(surface)
        context.set_source_rgb(1, 1, 1)
        context.paint()
        layout = PangoCairo.create_layout(context)
        PangoCairo.context_set_resolution(layout.get_context(), job["dpi"])
        layout.set_font_description(font)
        layout.set_text(text, -1)
        _, layout_height = layout.get_pixel_size()
        context.set_source_rgb(0, 0, 0)
        context.move_to(2, job["patch"] / 2 - layout_height / 2 - 2)
        PangoCairo.show_layout(context, layout)
        surface.flush()
        rendered = time.perf_counter()
        pixels = np.frombuffer(surface.get_data(), np.uint8).reshape(height, width, 4)[:, :, 2::-1].copy()
        done = time.perf_counter()
        png = io.BytesIO()
        surface.write_to_png(png)
        encoded = time.perf_counter()
        assert pixels.shape == (height, width, 3)
        render_s.append(rendered - start)
        array_s.append(done - start)
        png_s.append(encoded - start - (done - rendered))
        png_bytes.append(len(png.getvalue()))
        inked_columns.append(int((pixels < 128).any(axis=(0, 2)).sum()))
    times = {"render_s": render_s, "array_s": array_s, "png_s": png_s}
    json.dump({**times, "png_bytes": png_bytes, "inked_columns": inked_columns}, sys.stdout)


if __name__ == "__main__":
    main()
