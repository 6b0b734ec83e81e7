"""Bidirectional text: embedding levels (Unicode UAX #9, implicit rules) and visual order.

A document is one paragraph whose direction is that of its first strong character. The
explicit embedding and isolate controls (U+202A..U+202E, U+2066..U+2069) are treated as
boundary neutrals, i.e. ignored; everything else follows rules W1-W7, N0 (paired brackets),
N1-N2, I1-I2 and L1, computed with array operations (N0 walks the brackets only) so that long
documents stay cheap. Lines (strips) are reordered with rule L2. Checked against Unicode's
conformance file ``BidiCharacterTest.txt`` (tests/render/test_bidi.py).
"""

from __future__ import annotations

import heapq
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


# Bidi_Paired_Bracket (UCD BidiBrackets.txt, the same in Unicode 14 and 15): the opening
# brackets; each one's closing bracket is the next code point but for the exceptions. U+2329
# and U+232A are canonically equivalent to U+3008 and U+3009 and pair with them (BD16).
_OPENING = (
    0x0028, 0x005B, 0x007B, 0x0F3A, 0x0F3C, 0x169B, 0x2045, 0x207D, 0x208D, 0x2308, 0x230A, 0x2329,
    0x2768, 0x276A, 0x276C, 0x276E, 0x2770, 0x2772, 0x2774, 0x27C5, 0x27E6, 0x27E8, 0x27EA, 0x27EC,
    0x27EE, 0x2983, 0x2985, 0x2987, 0x2989, 0x298B, 0x298D, 0x298F, 0x2991, 0x2993, 0x2995, 0x2997,
    0x29D8, 0x29DA, 0x29FC, 0x2E22, 0x2E24, 0x2E26, 0x2E28, 0x2E55, 0x2E57, 0x2E59, 0x2E5B, 0x3008,
    0x300A, 0x300C, 0x300E, 0x3010, 0x3014, 0x3016, 0x3018, 0x301A, 0xFE59, 0xFE5B, 0xFE5D, 0xFF08,
    0xFF3B, 0xFF5B, 0xFF5F, 0xFF62,
)  # fmt: skip
_CLOSING_EXCEPTIONS = {
    0x005B: 0x005D,
    0x007B: 0x007D,
    0x298D: 0x2990,
    0x298F: 0x298E,
    0xFF3B: 0xFF3D,
    0xFF5B: 0xFF5D,
}
_EQUIVALENT = {0x2329: 0x3008, 0x232A: 0x3009}
_CLOSING_OF = {
    _EQUIVALENT.get(o, o): _EQUIVALENT.get(c, c)
    for o, c in ((o, _CLOSING_EXCEPTIONS.get(o, o + 1)) for o in _OPENING)
}
_BRACKETS = regex.compile(
    "["
    + "".join(regex.escape(chr(c)) for o in _OPENING for c in (o, _CLOSING_EXCEPTIONS.get(o, o + 1)))
    + "]"
)
_MAX_OPEN = 63  # BD16's stack: deeper nesting stops the pairing


def has_rtl(text: str) -> bool:
    return _RTL.search(text) is not None


def _last_where(mask: np.ndarray) -> np.ndarray:
    """For each position, the index of the last True at or before it (-1 if none)."""
    return np.maximum.accumulate(np.where(mask, np.arange(len(mask)), -1))


def _next_where(mask: np.ndarray) -> np.ndarray:
    """For each position, the index of the first True at or after it (len if none)."""
    n = len(mask)
    return np.minimum.accumulate(np.where(mask, np.arange(n), n)[::-1])[::-1]


def embedding_levels(text: str, base: int | None = None) -> np.ndarray:
    """Resolved embedding level of every character (uint8). ``base``: the paragraph level (0
    left to right, 1 right to left); by default that of the first strong character (P2, P3)."""
    n = len(text)
    if base is None and not has_rtl(text):
        return np.zeros(n, np.uint8)
    original = np.frombuffer(text.translate(_CLASSES).encode("latin-1"), np.uint8)
    kind = original.copy()
    strong = np.isin(kind, (L, R, AL))
    if base is None:
        base = 0 if not strong.any() or kind[np.argmax(strong)] == L else 1
    sos = L if base == 0 else R

    def before(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
        where = _last_where(mask)
        return np.where(where >= 0, values[np.maximum(where, 0)], sos)

    # W1: a non-spacing mark takes the type of the character before it (boundary neutrals, which
    # X9 removes, are not in between).
    kind = before(~np.isin(kind, (NSM, BN)), kind) if (kind == NSM).any() else kind
    kind[original == BN] = BN
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
    # N0: paired brackets take the direction of the strong text inside them, or of the context.
    if _BRACKETS.search(text):
        _resolve_brackets(text, kind, original, base)
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
    levels = (base + raised).astype(np.uint8)
    # L1: separators, and whitespace before them or at the end of the line, at the paragraph level.
    separator = np.isin(original, (S, B))
    blank = np.isin(original, (WS, BN))
    after = _next_where(~blank)  # the first character after a run of whitespace
    levels[separator | (blank & ((after == n) | separator[np.minimum(after, n - 1)]))] = base
    return levels


def _resolve_brackets(text: str, kind: np.ndarray, original: np.ndarray, base: int) -> None:
    """Rule N0, in place: each bracket pair (BD16) whose inside holds strong text in the
    paragraph's direction takes it; one whose inside holds only the other direction takes that
    one if the strong text before the opening bracket is of it too; EN and AN count as R."""
    pairs, stack = [], []
    for match in _BRACKETS.finditer(text):
        position = match.start()
        if kind[position] != ON:
            continue
        code = _EQUIVALENT.get(ord(match.group()), ord(match.group()))
        if code in _CLOSING_OF:
            if len(stack) == _MAX_OPEN:
                break
            stack.append((_CLOSING_OF[code], position))
            continue
        depth = next((d for d in range(len(stack) - 1, -1, -1) if stack[d][0] == code), None)
        if depth is not None:
            pairs.append((stack[depth][1], position))
            del stack[depth:]
    direction = np.where(kind == L, L, np.where(np.isin(kind, (R, EN, AN)), R, ON))
    lefts = np.concatenate([[0], np.cumsum(direction == L)])
    rights = np.concatenate([[0], np.cumsum(direction == R)])
    last_strong = _last_where(direction != ON)
    embedding = L if base == 0 else R
    # the last bracket set so far that lies before the current opening one, as (position,
    # direction); pairs go in order of their opening, so only closings set earlier can lie after
    # it: they wait in a heap until an opening passes them (linear, not quadratic, in the pairs)
    latest, pending = (-1, embedding), []
    for opening, closing in sorted(pairs):
        while pending and pending[0][0] < opening:
            latest = max(latest, heapq.heappop(pending))
        inside = {L: lefts[closing] - lefts[opening + 1], R: rights[closing] - rights[opening + 1]}
        if inside[embedding]:
            chosen = embedding
        elif inside[L] or inside[R]:
            other = R if embedding == L else L
            at = int(last_strong[opening - 1]) if opening else -1
            context = latest[1] if latest[0] > at else (int(direction[at]) if at >= 0 else embedding)
            chosen = other if context == other else embedding
        else:
            continue
        for bracket in (opening, closing):
            kind[bracket] = chosen
            follower = bracket + 1
            while follower < len(kind) and original[follower] in (NSM, BN):  # its marks follow it
                kind[follower] = chosen if original[follower] == NSM else BN
                follower += 1
        latest = (opening, chosen)
        heapq.heappush(pending, (closing, chosen))


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
