"""Shaped glyphs: what shaping hands to the raster (kept apart so that neither imports the other)."""

from __future__ import annotations

from dataclasses import dataclass


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
