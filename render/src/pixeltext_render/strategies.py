"""Rendering strategies: where the pieces of a text go in a strip (``RenderConfig.strategy``).

``continuous`` (PIXEL's) lays shaped pieces, a word with the whitespace before it, end to end
from ``margin_left``. The structured strategies of Lotz et al. (2023) cut the text into units
instead and start every unit on a grid, so a unit is drawn the same wherever it falls:

- ``words``: a word, from a patch boundary, and the whitespace after it as room (PIXEL's word
  renderer draws each word and a space, then moves to the next patch);
- ``bigrams``: two grapheme clusters of a word from a patch boundary, or one where two are
  wider than a patch; whitespace takes no room, the boundary parts words (PIXEL-M4);
- ``mono``: one grapheme cluster, whitespace too, per cell of half a patch, as a monospaced
  face draws at the default size (0.6 em = 8 pixels).

Words are what whitespace separates, as ``str.split`` has them; a line break drawn as a
visible glyph (``newline_glyph``) is a word of its own. Text written without spaces (Chinese,
Thai) has no word boundaries to align to, so ``words`` cuts its runs every 64 characters as
pieces are cut (text.py). A unit is shaped as one piece (HarfBuzz over the fallback chain: a
pair of Arabic letters joins, the next pair starts anew) and takes whole cells, ``ceil(advance
/ cell)`` and at least one, so a unit wider than a cell (a wide emoji; a CJK character, alone
in bigrams) takes the cells it needs and never shares one. Units are also cut where the bidi
level changes and laid out in visual order, so right-to-left text reads right to left, unit by
unit. Margins do not apply: they would move the grid off the patch boundaries.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import pairwise

import numpy as np

from pixeltext_render.config import RenderConfig
from pixeltext_render.shaping import Piece, PieceCache, Shaper
from pixeltext_render.text import cut_long_pieces, grapheme_starts, piece_bounds, space_mask


class Layout:
    """``continuous``: the pieces text.py cuts, from the config's margins."""

    def __init__(self, config: RenderConfig, shaper: Shaper):
        self.margin_left, self.margin_right = config.margin_left, config.margin_right
        self.piece = shaper.piece  # (text, rtl) -> Piece, cached; ``.many`` for a batch

    def bounds(self, text: str, levels: np.ndarray | None) -> list[int]:
        """Offsets that cut ``text`` into pieces (``levels``: the bidi level of each character)."""
        return _with_level_changes(piece_bounds(text), levels)


class GridLayout(Layout):
    """The structured strategies: units in whole cells of a grid (see the module docstring)."""

    def __init__(self, config: RenderConfig, shaper: Shaper, display: dict[int, str]):
        self.margin_left = self.margin_right = 0
        self.strategy = config.strategy
        self.cell = config.patch_size // 2 if config.strategy == "mono" else config.patch_size
        self._shape = shaper.piece
        self._display = display
        self.piece = PieceCache(self._units, config.cache_size)

    def bounds(self, text: str, levels: np.ndarray | None) -> list[int]:
        if not text:
            return [0]
        starts = grapheme_starts(text)
        if self.strategy == "mono":
            return cut_long_pieces(text, _with_level_changes(starts, levels))
        first = np.asarray(starts[:-1])
        space = np.logical_and.reduceat(space_mask(text), first)
        blank = np.logical_and.reduceat(space_mask(text.translate(self._display)), first)
        # a unit begins with a word after whitespace, and with a visible line break
        begins = ~blank[1:] & (space[1:] | space[:-1])
        bounds = _with_level_changes([0, *first[1:][begins].tolist(), len(text)], levels)
        if self.strategy == "bigrams":
            bounds = self._pairs(text, bounds, starts, blank.tolist(), levels)
        return cut_long_pieces(text, bounds)

    def _pairs(
        self, text: str, words: list[int], starts: list[int], blank: list[bool], levels: np.ndarray | None
    ) -> list[int]:
        """Cut each word into its grapheme clusters two by two (one by one where two are wider
        than a patch); the whitespace after a word stays with its last unit."""
        bounds = [0]
        narrow: dict[tuple[str, bool], bool] = {}  # a text repeats its pairs: each is shaped once
        for a, b in pairwise(words):
            rtl = levels is not None and bool(levels[a] & 1)
            i = stop = bisect_left(starts, a)
            while starts[stop] < b and not blank[stop]:
                stop += 1
            while i < stop:
                two = False
                if i + 2 <= stop:
                    pair = (text[starts[i] : starts[i + 2]], rtl)
                    two = narrow.get(pair)
                    if two is None:
                        two = narrow[pair] = self._shape(*pair).width <= self.cell
                i += 2 if two else 1
                if i < stop:
                    bounds.append(starts[i])
            bounds.append(b)
        return bounds

    def _units(self, keys: list[tuple[str, bool]]) -> list[Piece]:
        """The units of ``(text, rtl)``, their parts (see ``_unit``) shaped as one batch."""
        if self.strategy == "mono":
            ends = [len(text) for text, _ in keys]
        else:
            ends = [len(text.translate(self._display).rstrip()) for text, _ in keys]
        parts = [(text[:end], rtl) for (text, rtl), end in zip(keys, ends, strict=True)]
        parts += [(text[end:], rtl) for (text, rtl), end in zip(keys, ends, strict=True)]
        shaped = self._shape.many(parts)
        contents, tails = shaped[: len(keys)], shaped[len(keys) :]
        return list(map(self._unit, keys, ends, contents, tails))

    def _unit(self, key: tuple[str, bool], end: int, content: Piece, tail: Piece) -> Piece:
        """The text of ``key`` as one unit in whole cells: its characters (the first ``end``
        shaped as ``content``) shaped from the unit's start (its left edge, or its right edge
        when right-to-left, so a unit begins on the grid in its reading direction). The
        whitespace after them (shaped as ``tail``) draws nothing: it is placed at the unit's
        end, so a token that starts with it lies on the next unit's patches (left to right),
        and in ``words`` it keeps its advance as room (words at least a space apart)."""
        text, rtl = key
        room = content.width + (tail.width if self.strategy == "words" else 0)
        width = max(self.cell if end else 0, -(-room // self.cell) * self.cell)
        shift = width - content.width if rtl else 0
        chars = np.concatenate([content.chars, np.zeros((3, len(text) - end), np.int32)], axis=1)
        chars[:2, :end] += shift
        chars[:2, end:] = 0 if rtl else width
        chars[2, max(end - 1, 0)] += width - content.width  # the advances add up to the width
        ink, colors = content.ink, content.colors
        if shift:
            ink = ink + shift * 256  # packed as canvas index * 256 + coverage (raster.Geometry)
            colors = tuple((x + shift, glyph) for x, glyph in colors)
        return Piece(
            width,
            content.missing + tail.missing,
            chars,
            ink,
            content.ink_count,
            content.ink_left + shift,
            content.ink_right + shift,
            colors,
        )


def layout_for(config: RenderConfig, shaper: Shaper, display: dict[int, str]) -> Layout:
    """The layout of ``config.strategy``."""
    return Layout(config, shaper) if config.strategy == "continuous" else GridLayout(config, shaper, display)


def _with_level_changes(bounds: list[int], levels: np.ndarray | None) -> list[int]:
    """``bounds`` and every offset where the bidi level changes (pieces have one direction)."""
    if levels is None:
        return bounds
    changes = np.flatnonzero(np.diff(levels)) + 1
    return sorted(set(bounds).union(changes.tolist()))
