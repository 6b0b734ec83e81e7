"""Bidirectional text: embedding levels (Unicode UAX #9, implicit rules) and visual order.

A document is one paragraph whose direction is that of its first strong character. The
explicit embedding and isolate controls (U+202A..U+202E, U+2066..U+2069) are treated as
boundary neutrals, i.e. ignored; everything else follows rules W1-W7, N1-N2 and I1-I2,
computed with array operations so that long documents stay cheap. Lines (strips) are
reordered with rule L2.
"""

from __future__ import annotations

import unicodedata

import numpy as np
import regex

_RTL = regex.compile(r"[\p{Bidi_Class=R}\p{Bidi_Class=AL}\p{Bidi_Class=AN}]", regex.VERSION1)
_KINDS = ["L", "R", "AL", "EN", "ES", "ET", "AN", "CS", "NSM", "BN", "B", "S", "WS", "ON"]
L, R, AL, EN, ES, ET, AN, CS, NSM, BN, B, S, WS, ON = range(len(_KINDS))
_CODE = {kind: code for code, kind in enumerate(_KINDS)}


class _BidiClasses(dict):
    """``str.translate`` table: character -> one-byte code of its bidi class (computed once)."""

    def __missing__(self, code: int) -> str:
        kind = unicodedata.bidirectional(chr(code)) or "L"
        value = self[code] = chr(_CODE.get(kind, BN))  # explicit controls count as BN
        return value


_CLASSES = _BidiClasses()


def has_rtl(text: str) -> bool:
    return _RTL.search(text) is not None


def _last_where(mask: np.ndarray) -> np.ndarray:
    """For each position, the index of the last True at or before it (-1 if none)."""
    return np.maximum.accumulate(np.where(mask, np.arange(len(mask)), -1))


def _next_where(mask: np.ndarray) -> np.ndarray:
    """For each position, the index of the first True at or after it (len if none)."""
    n = len(mask)
    return np.minimum.accumulate(np.where(mask, np.arange(n), n)[::-1])[::-1]


def embedding_levels(text: str) -> np.ndarray:
    """Resolved embedding level of every character (uint8)."""
    n = len(text)
    if not has_rtl(text):
        return np.zeros(n, np.uint8)
    kind = np.frombuffer(text.translate(_CLASSES).encode("latin-1"), np.uint8).copy()
    strong = np.isin(kind, (L, R, AL))
    first = kind[np.argmax(strong)] if strong.any() else L
    base = 0 if first == L else 1
    sos = L if base == 0 else R

    def before(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
        where = _last_where(mask)
        return np.where(where >= 0, values[np.maximum(where, 0)], sos)

    # W1: a non-spacing mark takes the type of the character before it.
    kind = before(kind != NSM, kind)
    # W2, W3: European numbers after Arabic letters are Arabic numbers; AL becomes R.
    last_strong = before(np.isin(kind, (L, R, AL)), kind)
    kind[(kind == EN) & (last_strong == AL)] = AN
    kind[kind == AL] = R
    # W4: a single separator between two numbers of the same kind joins them.
    if n > 2:
        left, mid, right = kind[:-2], kind[1:-1], kind[2:]
        same = left == right
        joins = same & ((mid == ES) & (left == EN) | (mid == CS) & np.isin(left, (EN, AN)))
        mid[joins] = left[joins]
    # W5: terminators next to European numbers become European numbers.
    terminator = kind == ET
    if terminator.any():
        prev_other, next_other = _last_where(~terminator), _next_where(~terminator)
        touches = (prev_other >= 0) & (kind[np.maximum(prev_other, 0)] == EN)
        touches |= (next_other < n) & (kind[np.minimum(next_other, n - 1)] == EN)
        kind[terminator & touches] = EN
    # W6: remaining separators and terminators are neutral.
    kind[np.isin(kind, (ES, ET, CS))] = ON
    # W7: European numbers after L are L.
    kind[(kind == EN) & (before(np.isin(kind, (L, R)), kind) == L)] = L
    # N1, N2: neutrals between equal directions take it, the rest the paragraph's.
    neutral = np.isin(kind, (B, S, WS, ON, BN))
    direction = np.where(np.isin(kind, (R, EN, AN)), R, L)
    prev_strong, next_strong = _last_where(~neutral), _next_where(~neutral)
    left = np.where(prev_strong >= 0, direction[np.maximum(prev_strong, 0)], sos)
    right = np.where(next_strong < n, direction[np.minimum(next_strong, n - 1)], sos)
    kind = np.where(neutral, np.where(left == right, left, sos), kind)
    # I1, I2: implicit levels.
    if base == 0:
        raised = np.where(kind == R, 1, np.where(np.isin(kind, (AN, EN)), 2, 0))
    else:
        raised = np.isin(kind, (L, EN, AN)).astype(np.int64)
    return (base + raised).astype(np.uint8)


def visual_order(levels: list[int]) -> list[int]:
    """Rule L2: indices of runs in display order, given each run's level."""
    order = list(range(len(levels)))
    if not levels:
        return order
    lowest_odd = min(levels) | 1
    for level in range(max(levels), lowest_odd - 1, -1):
        i = 0
        while i < len(order):
            if levels[order[i]] >= level:
                j = i
                while j < len(order) and levels[order[j]] >= level:
                    j += 1
                order[i:j] = order[i:j][::-1]
                i = j
            else:
                i += 1
    return order
