"""Shaping: a piece of text becomes positioned, inked glyphs, cached by its text.

HarfBuzz shapes each font run of a piece; advances and offsets are rounded to whole pixels
per glyph (as hinted metrics are), so a piece's drawing does not depend on where it lands
in a strip and can be cached as a whole: its ink, its width, and where each of its
characters lies.

A text's new pieces are made together: HarfBuzz shapes each on its own, exactly as if it
were alone, and the batch's glyphs are then placed and inked with array calls, so a new
piece costs little more than its HarfBuzz call. A piece or two (where a strip's edge cuts a
word) are made one by one in plain Python, which the arrays' fixed cost would outweigh.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from itertools import accumulate, pairwise
from operator import attrgetter
from typing import NamedTuple

import numpy as np
import uharfbuzz as hb

from pixeltext_render.fonts import ColorInk, FontChain
from pixeltext_render.glyphs import GlyphBatch, Glyphs
from pixeltext_render.raster import InkCache

Run = tuple[int, int, int]  # a font run of a text: start, end, font index
_FEW = 8  # fewer new pieces are made one by one (a batch's array calls cost about 7 pieces)
_BATCH = 1024  # more are made in batches of at most this many (bounding the batch's arrays)


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


def _pixels(positions: list[hb.GlyphPosition], field: str) -> np.ndarray:
    """A 26.6 fixed-point field of HarfBuzz glyph positions, in whole pixels (rounded)."""
    return (np.fromiter(map(attrgetter(field), positions), np.int64, len(positions)) + 32) >> 6


def shape_batch(chain: FontChain, texts: list[tuple[str, list[Run], bool]]) -> GlyphBatch:
    """``shape_runs`` of each ``(text, font runs, rtl)``: HarfBuzz's glyph records are read
    field by field for the whole batch, not glyph by glyph."""
    fonts = [font.hb_font for font in chain.fonts]
    infos: list[hb.GlyphInfo] = []
    positions: list[hb.GlyphPosition] = []
    run_fonts, run_starts, run_glyphs, text_glyphs = [], [], [], []
    for text, runs, rtl in texts:
        before, direction = len(infos), "rtl" if rtl else "ltr"
        for start, end, font in reversed(runs) if rtl else runs:
            buffer = hb.Buffer()
            buffer.add_str(text[start:end])
            buffer.direction = direction
            buffer.guess_segment_properties()
            hb.shape(fonts[font], buffer)
            glyphs = buffer.glyph_infos
            infos += glyphs
            positions += buffer.glyph_positions
            run_fonts.append(font)
            run_starts.append(start)
            run_glyphs.append(len(glyphs))
        text_glyphs.append(len(infos) - before)
    advance = _pixels(positions, "x_advance")
    starts = np.concatenate([[0], np.cumsum(text_glyphs, dtype=np.int64)])
    total = np.concatenate([[0], np.cumsum(advance)])  # pens from the batch's start
    pen = total[:-1] - np.repeat(total[starts[:-1]], text_glyphs)
    clusters = np.fromiter(map(attrgetter("cluster"), infos), np.int64, len(infos))
    return GlyphBatch(
        starts,
        np.repeat(np.array(run_fonts, np.int64), run_glyphs),
        np.fromiter(map(attrgetter("codepoint"), infos), np.int64, len(infos)),
        clusters + np.repeat(np.array(run_starts, np.int64), run_glyphs),
        pen + _pixels(positions, "x_offset"),
        _pixels(positions, "y_offset"),
        pen,
        advance,
        np.diff(total[starts]),
    )


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


def batch_char_extents(glyphs: GlyphBatch, lengths: np.ndarray) -> np.ndarray:
    """``char_extents`` of each text of a batch (``lengths`` characters each), one after another."""
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    count = int(offsets[-1])
    at = glyphs.clusters + np.repeat(offsets[:-1], np.diff(glyphs.starts))  # in the batch's characters
    right = glyphs.pen + glyphs.advance
    if len(at) == count and (at == np.arange(count)).all():  # one glyph per character, in order: most text
        return np.stack([glyphs.pen, right, glyphs.advance]).astype(np.int32)
    first = np.zeros(count, bool)  # the characters that begin a cluster
    first[at] = True
    left_of, right_of, advance_of = np.zeros((3, count), np.int64)
    left_of[at], right_of[at] = glyphs.pen, right  # then the extremes where a cluster has several glyphs
    np.minimum.at(left_of, at, glyphs.pen)
    np.maximum.at(right_of, at, right)
    np.add.at(advance_of, at, glyphs.advance)
    index = np.arange(count)
    before = np.maximum.accumulate(np.where(first, index, -1))  # the last cluster at or before
    after = np.minimum.accumulate(np.where(first, index, count)[::-1])[::-1]  # the first at or after
    owner = np.where(before >= np.repeat(offsets[:-1], lengths), before, after)  # that of its text
    owned = owner < np.repeat(offsets[1:], lengths)  # false only in a text with no glyphs
    owner = np.where(owned, owner, 0)
    return np.stack([left_of[owner] * owned, right_of[owner] * owned, advance_of * first]).astype(np.int32)


class PieceCache:
    """A cache of pieces by (text, rtl) that makes the missing ones a batch at a time
    (``functools.lru_cache`` makes them one call at a time, and making them together is what
    makes them cheap). Safe to share between threads (a Dask worker's).

    About ``size`` pieces at most, the least recently used dropped first, in two generations
    rather than an LRU list, so that a piece found costs one dict lookup: pieces are kept in
    the recent one, those found in the old one move to it, and when it holds half the size it
    becomes the old one, the pieces left in the old one being dropped.
    """

    def __init__(self, make: Callable[[list[tuple[str, bool]]], list[Piece]], size: int):
        self._make, self._half = make, (size + 1) // 2
        self._recent: dict[tuple[str, bool], Piece] = {}
        self._old: dict[tuple[str, bool], Piece] = {}
        self._lock = threading.Lock()

    def __call__(self, text: str, rtl: bool) -> Piece:
        key = (text, rtl)
        piece = self._recent.get(key)
        if piece is None:
            piece = self._old.get(key) or self._make([key])[0]
            self._keep({key: piece})
        return piece

    def many(self, keys: list[tuple[str, bool]]) -> list[Piece]:
        """The pieces of ``keys`` (in order), the missing ones made together."""
        found = list(map(self._recent.get, keys))
        if all(found):  # (a piece is a non-empty tuple)
            return found
        missing = dict.fromkeys(key for key, piece in zip(keys, found, strict=True) if piece is None)
        kept = {key: piece for key in missing if (piece := self._old.get(key)) is not None}
        new = [key for key in missing if key not in kept]
        kept.update(zip(new, self._make(new), strict=True))
        self._keep(kept)
        return list(map(kept.get, keys, found))  # the piece kept or made, else the one found

    def _keep(self, pieces: dict[tuple[str, bool], Piece]) -> None:
        """Put pieces in the recent generation, which becomes the old one when it holds half the size."""
        if self._half:
            with self._lock:
                self._recent.update(pieces)
                if len(self._recent) >= self._half:
                    self._old, self._recent = self._recent, {}


class Shaper:
    """Shapes and inks pieces of text, with a cache of pieces by (text, direction)."""

    def __init__(self, chain: FontChain, display: dict[int, str], inks: InkCache, cache_size: int):
        self.chain = chain
        self._display = display
        self._displayed = frozenset(map(chr, display))  # what the display rule replaces
        self._inks = inks
        self.piece = PieceCache(self._make_pieces, cache_size)

    def _make_pieces(self, keys: list[tuple[str, bool]]) -> list[Piece]:
        if len(keys) < _FEW:
            return [self._make_piece(text, rtl) for text, rtl in keys]
        batches = (self._make_batch(keys[i : i + _BATCH]) for i in range(0, len(keys), _BATCH))
        return [piece for batch in batches for piece in batch]

    def _make_piece(self, text: str, rtl: bool) -> Piece:
        shown = text.translate(self._display)
        runs, missing = self.chain.itemize(shown)
        glyphs = shape_runs(self.chain, shown, runs, rtl)
        ink = self._inks.ink(glyphs)
        return Piece(
            glyphs.width, missing, char_extents(glyphs, len(text)), ink.packed, len(ink.packed), *ink[1:]
        )

    def _make_batch(self, keys: list[tuple[str, bool]]) -> list[Piece]:
        display, plain = self._display, self._displayed.isdisjoint  # (faster than translating all)
        shown = [text if plain(text) else text.translate(display) for text, _ in keys]
        items = self.chain.itemize_all(shown)
        runs = [(text, runs, rtl) for text, (runs, _), (_, rtl) in zip(shown, items, keys, strict=True)]
        glyphs = shape_batch(self.chain, runs)
        lengths = np.fromiter(map(len, shown), np.int64, len(shown))
        chars = batch_char_extents(glyphs, lengths)
        bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        chars = [chars[:, a:b].copy() for a, b in pairwise(bounds)]  # (see raster.BatchInk.packed)
        missing = [count for _, count in items]
        return list(map(Piece, glyphs.widths.tolist(), missing, chars, *self._inks.batch_ink(glyphs)))
