"""Shaped glyphs: what shaping hands to the raster (kept apart so that neither imports the other)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Glyphs:
    """Shaped glyphs of a text in visual order, in whole pixels from the text's start.

    Plain lists: a piece has a handful of glyphs, too few for arrays to pay off.
    """

    fonts: list[int]  # font index in the chain
    ids: list[int]  # glyph id in that font
    clusters: list[int]  # first character of the glyph's cluster
    x: list[int]  # pen position + x offset
    y: list[int]  # rows above the baseline (y offset)
    pen: list[int]  # pen position before the glyph
    advance: list[int]

    @property
    def width(self) -> int:
        return sum(self.advance)


@dataclass(frozen=True)
class GlyphBatch:
    """The shaped glyphs of many texts at once (as ``Glyphs`` each), in flat int64 arrays.

    HarfBuzz still shapes the texts one by one, but placing and inking their glyphs then take
    a few array calls for the whole batch instead of Python per glyph: what makes a new piece
    cheap when many are made together.
    """

    starts: np.ndarray  # [texts + 1]: the glyphs of text i are starts[i]:starts[i + 1]
    fonts: np.ndarray
    ids: np.ndarray
    clusters: np.ndarray  # from the start of the glyph's text
    x: np.ndarray
    y: np.ndarray
    pen: np.ndarray  # from the start of the glyph's text
    advance: np.ndarray
    widths: np.ndarray  # each text's advance

    @property
    def text_of(self) -> np.ndarray:
        """The text each glyph belongs to."""
        return np.repeat(np.arange(len(self.starts) - 1), np.diff(self.starts))
