"""The slow path: one line drawn with no caches, the way a simple renderer would.

Each run of one font and direction is shaped in a single HarfBuzz call (not piece by
piece), every glyph is rasterised afresh by FreeType and blended on its own into a dense
canvas (the coverage maximum, as Pillow does). The fast renderer must produce the same
pixels; tests and ``make bench`` check that it does.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from pixeltext_render.bidi import embedding_levels, visual_order
from pixeltext_render.raster import composite_premultiplied, coverage_colors
from pixeltext_render.renderer import Renderer
from pixeltext_render.shaping import shape_runs
from pixeltext_render.text import normalize_text, piece_bounds


def render_line_uncached(renderer: Renderer, text: str) -> tuple[np.ndarray, int]:
    """Pixels [H, W, 3] of ``text`` as one line, and the right edge of its content."""
    config, chain = renderer.config, renderer.chain
    text = normalize_text(text).text
    shown = text.translate(renderer.display)
    levels = embedding_levels(shown)
    cuts = sorted(set(piece_bounds(text)).union((np.flatnonzero(np.diff(levels)) + 1).tolist()))
    runs: list[list[int]] = []  # [start, end, font, level], adjacent equal ones merged
    for a, b in pairwise(cuts):
        for start, end, font in chain.itemize(shown[a:b])[0]:
            if runs and runs[-1][1] == a + start and runs[-1][2:] == [font, levels[a]]:
                runs[-1][1] = a + end
            else:
                runs.append([a + start, a + end, font, int(levels[a])])
    coverage = np.zeros((config.height, config.width), np.uint8)
    colors = []
    x = right = config.margin_left
    for index in visual_order([run[3] for run in runs]):
        start, end, font, level = runs[index]
        glyphs = shape_runs(chain, shown, [(start, end, font)], bool(level & 1))
        for glyph, gx, gy in zip(glyphs.ids, glyphs.x, glyphs.y, strict=True):
            top, left, image = chain.fonts[font].bitmap(glyph)
            if image.ndim == 3:
                colors.append((x + gx + left, renderer.baseline - gy - top, image))
            elif image.size:
                _blend_max(coverage, x + gx + left, renderer.baseline - gy - top, image)
            right = max(right, x + gx + left + image.shape[1])
        x += glyphs.width
    pixels = coverage_colors(config.text_color, config.background)[coverage]
    for cx, cy, image in colors:
        composite_premultiplied(pixels, cx, cy, image)
    return pixels, max(x, right)


def _blend_max(canvas: np.ndarray, x: int, y: int, image: np.ndarray) -> None:
    """Keep the larger coverage of canvas and glyph, clipped to the canvas."""
    height, width = canvas.shape
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + image.shape[0], height), min(x + image.shape[1], width)
    if top < bottom and left < right:
        region = canvas[top:bottom, left:right]
        np.maximum(region, image[top - y : bottom - y, left - x : right - x], out=region)
