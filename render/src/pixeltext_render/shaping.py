"""Shaping: a piece of text becomes positioned, inked glyphs, cached by its text.

HarfBuzz shapes each font run of a piece; advances and offsets are rounded to whole pixels
per glyph (as hinted metrics are), so a piece's drawing does not depend on where it lands
in a strip and can be cached as a whole: its ink, its width, and where each of its
characters lies.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import accumulate
from typing import NamedTuple

import numpy as np
import uharfbuzz as hb

from pixeltext_render.fonts import ColorInk, FontChain
from pixeltext_render.glyphs import Glyphs
from pixeltext_render.raster import InkCache


class Piece(NamedTuple):
    """A shaped and inked piece of text, positioned from its own start (x = 0).

    A flat tuple, so the pieces of a strip transpose into columns with one ``zip``.
    """

    width: int
    missing: int  # characters no font has
    chars: np.ndarray  # int32 [3, chars]: left, right of each character's cluster; its advance
    ink: np.ndarray  # packed canvas index and coverage (see raster.Geometry)
    ink_count: int
    ink_left: int
    ink_right: int
    colors: tuple[tuple[int, ColorInk], ...]  # colour glyphs: (x of the pen, glyph)


def shape_runs(chain: FontChain, text: str, runs: list[tuple[int, int, int]], rtl: bool) -> Glyphs:
    """Shape font runs ``(start, end, font)`` of ``text`` that share one direction."""
    glyphs = Glyphs([], [], [], [], [], [], [])
    pen = 0
    for start, end, font_index in reversed(runs) if rtl else runs:
        buffer = hb.Buffer()
        buffer.add_str(text[start:end])
        buffer.direction = "rtl" if rtl else "ltr"
        buffer.guess_segment_properties()
        hb.shape(chain.fonts[font_index].hb_font, buffer)
        infos, positions = buffer.glyph_infos, buffer.glyph_positions
        advances = [(p.x_advance + 32) >> 6 for p in positions]  # 26.6 fixed point to pixels
        pens = list(accumulate(advances, initial=pen))
        glyphs.fonts.extend([font_index] * len(infos))
        glyphs.ids.extend(i.codepoint for i in infos)
        glyphs.clusters.extend(i.cluster + start for i in infos)
        glyphs.x.extend(x + ((p.x_offset + 32) >> 6) for x, p in zip(pens, positions, strict=False))
        glyphs.y.extend((p.y_offset + 32) >> 6 for p in positions)
        glyphs.pen.extend(pens[:-1])
        glyphs.advance.extend(advances)
        pen = pens[-1]
    return glyphs


def char_extents(glyphs: Glyphs, length: int) -> np.ndarray:
    """[3, length]: left and right of each character's cluster, and the cluster's advance on
    its first character. Pieces are short, so plain Python beats array calls here."""
    pens, advances = glyphs.pen, glyphs.advance
    if glyphs.clusters == list(range(length)):  # one glyph per character, in order: most text
        return np.array([pens, [p + a for p, a in zip(pens, advances, strict=True)], advances], np.int32)
    left: dict[int, int] = {}
    right: dict[int, int] = {}
    advance: dict[int, int] = {}
    for cluster, pen, width in zip(glyphs.clusters, pens, advances, strict=True):
        if cluster in left:
            left[cluster] = min(left[cluster], pen)
            right[cluster] = max(right[cluster], pen + width)
            advance[cluster] += width
        else:
            left[cluster], right[cluster], advance[cluster] = pen, pen + width, width
    table = [[0] * length, [0] * length, [0] * length]
    owner = min(left, default=0)
    for i in range(length):
        if i in left:
            owner = i
            table[2][i] = advance[i]
        if owner in left:
            table[0][i], table[1][i] = left[owner], right[owner]
    return np.array(table, np.int32).reshape(3, length)


class Shaper:
    """Shapes and inks pieces of text, with an LRU cache of pieces by (text, direction)."""

    def __init__(self, chain: FontChain, display: dict[int, str], inks: InkCache, cache_size: int):
        self.chain = chain
        self._display = display
        self._inks = inks
        self.piece = lru_cache(maxsize=cache_size)(self._make_piece)

    def _make_piece(self, text: str, rtl: bool) -> Piece:
        shown = text.translate(self._display)
        runs, missing = self.chain.itemize(shown)
        glyphs = shape_runs(self.chain, shown, runs, rtl)
        ink = self._inks.ink(glyphs)
        return Piece(
            glyphs.width, missing, char_extents(glyphs, len(text)), ink.packed, len(ink.packed), *ink[1:]
        )
