"""Text before layout: the normalisation rule, the whitespace display rule, segmentation.

The rule, applied before both rendering and tokenising so the stored text is exactly what
the strip shows:
- ``\\r\\n``, ``\\r``, U+2028 and U+2029 become ``\\n``; lone surrogates become U+FFFD;
- other control characters (C0, DEL, C1) are removed;
- everything else is kept as is (no Unicode normalisation).
When drawn, a line break shows as ``RenderConfig.newline_glyph`` and a tab as
``RenderConfig.tab_glyph``, one character each, so positions in the text and in the
drawing correspond one to one.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import regex

_LINE_BREAKS = regex.compile(r"\r\n?|[\u2028\u2029]")
_SURROGATES = regex.compile(r"[\ud800-\udfff]")
_ANY_CONTROL = regex.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CONTROLS = {code: None for code in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0))}

# Pieces are the units of shaping and caching: a run of non-space characters with the
# whitespace before it (as SentencePiece and GPT-style tokenisers attach it), or trailing
# whitespace. Text without spaces (Chinese, Japanese, Thai) is cut into pieces of
# MAX_PIECE_CHARS at grapheme boundaries. Whitespace is what ``str.isspace`` says.
_LAST_SPACE = 0x3000
_IS_SPACE = np.array([chr(c).isspace() for c in range(_LAST_SPACE + 1)] + [False])
_GRAPHEME = regex.compile(r"\X")
MAX_PIECE_CHARS = 64  # longer pieces are cut at grapheme boundaries


@dataclass(frozen=True)
class NormalizedText:
    text: str
    changed: int  # characters removed or replaced by the rule


def normalize_text(text: str) -> NormalizedText:
    """Apply the normalisation rule (see the module docstring)."""
    out, breaks = _LINE_BREAKS.subn("\n", text)
    out, surrogates = _SURROGATES.subn("\ufffd", out)
    before = len(out)
    if _ANY_CONTROL.search(out):
        out = out.translate(_CONTROLS)
    return NormalizedText(out, breaks + surrogates + before - len(out))


def display_table(newline_glyph: str, tab_glyph: str) -> dict[int, str]:
    """``str.translate`` table of the whitespace display rule."""
    return {ord("\n"): newline_glyph, ord("\t"): tab_glyph}


def grapheme_starts(text: str) -> list[int]:
    """Offsets where extended grapheme clusters begin (plus ``len(text)``)."""
    return [m.start() for m in _GRAPHEME.finditer(text)] + [len(text)]


def space_mask(text: str) -> np.ndarray:
    """bool [len(text)]: which characters are whitespace."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
    return _IS_SPACE[np.minimum(codes, _LAST_SPACE + 1)]


def piece_bounds(text: str) -> list[int]:
    """Offsets that cut ``text`` into pieces (first 0, last ``len(text)``)."""
    space = space_mask(text)
    ends = np.flatnonzero(~space[:-1] & space[1:]) + 1  # a piece ends where spaces begin
    return cut_long_pieces(text, [0, *ends.tolist(), len(text)] if len(text) else [0])


def cut_long_pieces(text: str, bounds: list[int]) -> list[int]:
    """``bounds`` with every piece longer than MAX_PIECE_CHARS cut (see ``_cut_long``)."""
    if len(bounds) > 1 and int(np.diff(bounds).max()) > MAX_PIECE_CHARS:
        return [0, *(cut for a, b in pairwise(bounds) for cut in _cut_long(text, a, b))]
    return bounds


def _cut_long(text: str, start: int, end: int) -> list[int]:
    """Ends of the sub-pieces of ``text[start:end]``: at grapheme boundaries, each at least
    MAX_PIECE_CHARS long, and a grapheme longer than 4 * MAX_PIECE_CHARS (a ZWJ or combining
    chain) cut every MAX_PIECE_CHARS characters, so a piece is never much wider than its text."""
    if end - start <= MAX_PIECE_CHARS:
        return [end]
    cuts, mark = [], start
    for offset in grapheme_starts(text[start:end])[1:-1]:
        if start + offset - mark >= MAX_PIECE_CHARS:
            mark = start + offset
            cuts.append(mark)
    ends = []
    for a, b in pairwise([start, *cuts, end]):
        if b - a > 4 * MAX_PIECE_CHARS:
            ends.extend(range(a + MAX_PIECE_CHARS, b, MAX_PIECE_CHARS))
        ends.append(b)
    return ends
