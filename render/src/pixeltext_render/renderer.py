"""The renderer: a text (or a pair of texts) becomes strips (RGB, or one channel: ``RenderConfig.color``)
with aligned tokens.

A document is tokenised once, cut into pieces that are shaped (and cached) one by one,
then split into strips. Strips are cut only where a token starts, at a piece (word)
boundary if one fits, else at a grapheme boundary, so no glyph and no token is split
between two strips, and the strips' tokens concatenate to the document's tokens. What a
piece is, and where it goes, is the config's strategy (strategies.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import uharfbuzz as hb

from pixeltext_render.bidi import embedding_levels, has_rtl, visual_order
from pixeltext_render.config import RENDERER_VERSION, RenderConfig, fingerprint
from pixeltext_render.fonts import ColorInk, FontChain, engine_versions
from pixeltext_render.raster import Canvas, InkCache, Line
from pixeltext_render.shaping import Piece, Shaper
from pixeltext_render.strategies import layout_for
from pixeltext_render.text import display_table, grapheme_starts, normalize_text
from pixeltext_render.tokenizers import DEFAULT_TOKENIZER, Encoding, Tokenizer, load_tokenizer


@dataclass
class Strip:
    """One rendered strip: pixels, the exact text drawn, and its tokens aligned to patches."""

    image: np.ndarray  # uint8 [H, W] if rgb and grey (R = G = B), else [H, W, 3]; gray, binary: [H, W, 1]
    text: str  # exactly the text drawn (normalised); for a pair, the first text
    start: int  # offset of ``text`` in the normalised document
    num_text_patches: int  # patches before the black end-of-text patch
    token_ids: np.ndarray  # int32 [tokens]
    token_patches: np.ndarray  # int32 [tokens, 2]: first and last patch of each token
    missing_glyphs: int  # characters drawn as a "missing glyph" box
    overflow: bool = False  # a unit wider than a strip had to be clipped (never in practice)

    @property
    def pixels(self) -> np.ndarray:
        """The strip in its channels, uint8 [H, W, C]: RGB (a read-only view when a rgb strip is
        grey), or the one channel of gray and binary."""
        if self.image.ndim == 3:
            return self.image
        return np.broadcast_to(self.image[..., None], (*self.image.shape, 3))

    @property
    def is_grey(self) -> bool:
        """A rgb strip stored as one grey plane."""
        return self.image.ndim == 2


@dataclass
class PairStrip(Strip):
    """Two texts in one strip: ``text``, a black separator patch, then ``text_pair``."""

    text_pair: str = ""
    separator_patch: int = 0
    pair_tokens_start: int = 0  # index of the first token of ``text_pair``
    truncated: bool = False  # tokens were dropped from the end to fit the strip


@dataclass
class RenderedDocument:
    text: str  # the normalised document; the strips' texts concatenate to it
    changed_chars: int  # characters the normalisation rule removed or replaced
    strips: list[Strip]

    @property
    def token_ids(self) -> np.ndarray:
        return np.concatenate([s.token_ids for s in self.strips]) if self.strips else np.zeros(0, np.int32)

    @property
    def missing_glyphs(self) -> int:
        return sum(s.missing_glyphs for s in self.strips)


@dataclass(slots=True)
class _PieceColumns:
    """Shaped pieces transposed, one entry per piece (logical order) in each field.

    Built once per text, so placing a strip slices arrays instead of looping over pieces.
    The pieces' character extents are per character, not per piece: see ``_ShapedText``.
    """

    width: np.ndarray  # int64: each piece's advance
    missing: np.ndarray  # int64: characters no font has
    ink: tuple[np.ndarray, ...]  # packed ink (see raster.Geometry)
    ink_count: np.ndarray  # int64
    ink_left: np.ndarray  # int64
    ink_right: np.ndarray  # int64
    colors: tuple[tuple[tuple[int, ColorInk], ...], ...]

    @classmethod
    def of(cls, pieces: list[Piece], order: list[int]) -> _PieceColumns:
        """The columns of a text's pieces, ``pieces[order[i]]`` being its i-th: a text repeats
        its words, so each distinct piece is transposed once (one ``zip``) and then gathered."""
        if not pieces:
            empty = np.zeros(0, np.int64)
            return cls(empty, empty, (), empty, empty, empty, ())
        width, missing, _, ink, count, ink_left, ink_right, colors = zip(*pieces, strict=True)
        numbers = np.array((width, missing, count, ink_left, ink_right), np.int64)  # one call, not five
        numbers = numbers[:, np.array(order)]
        ink, colors = tuple(map(ink.__getitem__, order)), tuple(map(colors.__getitem__, order))
        return cls(numbers[0], numbers[1], ink, numbers[2], numbers[3], numbers[4], colors)

    def slice(self, first: int, stop: int) -> _PieceColumns:
        """Pieces ``first:stop`` (arrays as views)."""
        return _PieceColumns(
            self.width[first:stop],
            self.missing[first:stop],
            self.ink[first:stop],
            self.ink_count[first:stop],
            self.ink_left[first:stop],
            self.ink_right[first:stop],
            self.colors[first:stop],
        )

    def replaced(self, pieces: dict[int, Piece]) -> _PieceColumns:
        """A copy with the pieces at these indices replaced (pieces cut by a strip's edge)."""
        width, missing, count, ink_left, ink_right = (
            a.copy() for a in (self.width, self.missing, self.ink_count, self.ink_left, self.ink_right)
        )
        ink, colors = list(self.ink), list(self.colors)
        for index, piece in pieces.items():
            width[index], missing[index], count[index] = piece.width, piece.missing, piece.ink_count
            ink_left[index], ink_right[index] = piece.ink_left, piece.ink_right
            ink[index], colors[index] = piece.ink, piece.colors
        return _PieceColumns(width, missing, tuple(ink), count, ink_left, ink_right, tuple(colors))

    def line(self) -> Line:
        """The pieces' ink, as the canvas draws it."""
        return Line(self.ink, self.ink_count, self.ink_left, self.ink_right, self.colors)


class _ShapedText(NamedTuple):
    """A text cut into shaped pieces, in logical order."""

    text: str
    bounds: np.ndarray  # piece boundaries: 0, ..., len(text)
    levels: np.ndarray  # bidi level of each piece
    columns: _PieceColumns
    extents: np.ndarray  # [3, len(text)]: the pieces' character extents, each from its piece
    widths: np.ndarray  # prefix sums of character advances, [len(text) + 1]


class _PairFit(NamedTuple):
    """How much of each text of a pair fits in a strip."""

    ends: tuple[int, int]  # characters kept of each text
    token_ends: tuple[int, int]  # tokens kept of each text
    truncated: bool  # tokens were dropped


class _Placed(NamedTuple):
    """One line of pieces: their x and ink, and where each character landed."""

    origins: np.ndarray  # x of each piece (logical order)
    line: Line
    char_left: np.ndarray  # per character, logical order
    char_right: np.ndarray
    right: int  # pen position after the line
    missing: int


class Renderer:
    """Renders texts to strips as ``config`` says, tokenising with ``tokenizer``."""

    def __init__(self, config: RenderConfig | None = None, tokenizer: Tokenizer | str = DEFAULT_TOKENIZER):
        self.config = config or RenderConfig()
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        self.chain = FontChain(self.config.fonts, self.config.font_size)
        self.baseline = self.config.baseline or self._centred_baseline()
        display = display_table(self.config.newline_glyph, self.config.tab_glyph)
        self.canvas = Canvas(self.config, self.baseline)
        inks = InkCache(self.chain, self.canvas.geometry)
        self.shaper = Shaper(self.chain, display, inks, self.config.cache_size)
        self.display = display  # the whitespace display rule as a translate table
        self.layout = layout_for(self.config, self.shaper, display)  # the strategy's pieces and margins
        patch = self.config.patch_size
        self._capacity = (
            patch * (self.config.max_patches - 1) - self.layout.margin_left - self.layout.margin_right
        )
        self._right_limit = patch * (self.config.max_patches - 1) - self.layout.margin_right

    def _centred_baseline(self) -> int:
        """Centre the main font's capital height and descender in the strip's height."""
        main = self.chain.fonts[0]
        cap = main.metric_px(hb.OTMetricsTag.CAP_HEIGHT)
        descender = -main.metric_px(hb.OTMetricsTag.HORIZONTAL_DESCENDER)
        return int(np.clip(round((self.config.patch_size + cap - descender) / 2), 1, self.config.patch_size))

    def describe(self) -> dict[str, Any]:
        """What decides the pixels: config, font files (by hash), engines. Stored with strips."""
        return {
            "config": self.config.to_dict(),
            "fonts": [
                {"spec": font.spec, "file": font.path.name, "sha256": font.sha256}
                for font in self.chain.fonts
            ],
            "baseline": self.baseline,
            "engines": engine_versions(),
            "renderer_version": RENDERER_VERSION,
        }

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.describe())

    # -- documents ---------------------------------------------------------------------

    def render(self, text: str) -> RenderedDocument:
        """Render a document into as many strips as it needs (at least one)."""
        normalized = normalize_text(text)
        text = normalized.text
        encoding = self.tokenizer.encode(text)
        shaped = self._shape(text)
        cuts = _Cuts(shaped, encoding)
        strips = []
        start, first_token, capacity, before = 0, 0, self._capacity, None
        while not strips or start < len(text):
            end, end_token, overflow = cuts.next(start, capacity, before)
            placed = self._place(shaped, start, end, self.layout.margin_left)
            image, ink_right = self.canvas.draw(placed.origins, placed.line)
            right = max(placed.right, ink_right)
            needed = self._patches_for(right) if end > start else 0
            if needed > self.config.max_patches - 1 and not overflow:
                # placed wider than the shaped advances said (ink overhanging the pen, or a
                # cluster shaped anew where it is cut): end earlier than this, which terminates
                over = max(right - placed.right, right - self._right_limit, 1)
                capacity, before = capacity - over, end
                continue
            used = min(needed, self.config.max_patches - 1)
            image = self.canvas.finish(image, [used], used)
            strips.append(
                Strip(
                    image=image,
                    text=text[start:end],
                    start=start,
                    num_text_patches=used,
                    token_ids=encoding.ids[first_token:end_token],
                    token_patches=self._token_patches(
                        placed, encoding.spans[first_token:end_token] - start, used
                    ),
                    missing_glyphs=placed.missing,
                    overflow=overflow,
                )
            )
            start, first_token, capacity, before = end, end_token, self._capacity, None
        return RenderedDocument(text, normalized.changed, strips)

    def render_pair(self, text: str, text_pair: str, max_patches: int | None = None) -> PairStrip:
        """Render two texts into one strip with a black separator patch between them, in at
        most ``max_patches`` patches (the end patch included; default: the whole strip).

        If they do not fit, whole tokens are dropped from the end of the longer one, so both
        texts keep as much as they can (a fine-tuning input budget cuts the premise, not the
        hypothesis).
        """
        limit = self.config.max_patches if max_patches is None else min(max_patches, self.config.max_patches)
        if limit < 4:
            raise ValueError(f"max_patches is {max_patches}: a pair needs at least 4 (texts, separator, end)")
        patch, margin = self.config.patch_size, self.layout.margin_left
        texts = [normalize_text(text).text, normalize_text(text_pair).text]
        encodings = [self.tokenizer.encode(t) for t in texts]
        shaped = [self._shape(t) for t in texts]
        ends, token_ends, truncated = self._fit_pair(shaped, encodings, limit)
        first = self._place(shaped[0], 0, ends[0], margin)
        separator = self._patches_for(first.right) if ends[0] else 0
        second = self._place(shaped[1], 0, ends[1], (separator + 1) * patch + margin)
        both = Line(
            *(
                a + b if isinstance(a, tuple) else np.concatenate([a, b])
                for a, b in zip(first.line, second.line, strict=True)
            )
        )
        image, ink_right = self.canvas.draw(np.concatenate([first.origins, second.origins]), both)
        used = separator + 1
        if ends[1]:
            used = min(self._patches_for(max(second.right, ink_right)), limit - 1)
        image = self.canvas.finish(image, [separator, used], used)
        ids = [e.ids[:k] for e, k in zip(encodings, token_ends, strict=True)]
        return PairStrip(
            image=image,
            text=texts[0][: ends[0]],
            start=0,
            num_text_patches=used,
            token_ids=np.concatenate(ids),
            token_patches=np.concatenate(
                [
                    self._token_patches(first, encodings[0].spans[: token_ends[0]], separator),
                    self._token_patches(second, encodings[1].spans[: token_ends[1]], used),
                ]
            ),
            missing_glyphs=first.missing + second.missing,
            text_pair=texts[1][: ends[1]],
            separator_patch=separator,
            pair_tokens_start=token_ends[0],
            truncated=truncated,
        )

    def _fit_pair(self, shaped: list[_ShapedText], encodings: list[Encoding], limit: int) -> _PairFit:
        """How much of each text of a pair fits in ``limit`` patches with the separator and
        end patches, measured by shaped advances (placing clips a rare overhang to the limit).

        While they do not fit, the last whole token of whichever text is wider at that point
        is dropped, one token at a time: trimming the wider text first evens the two out, so
        both keep as much as they can (a long premise is cut, not the short hypothesis after
        it), and trimming from the end keeps each text's beginning. Cuts fall only before a
        token that starts cleanly (``Encoding.clean_breaks``), so the tokens kept are a
        prefix of each text's tokens and are the tokens of the text kept.
        """
        margin = self.layout.margin_left
        ends = [len(s.text) for s in shaped]
        token_ends = [len(e) for e in encodings]
        # where each text may be cut (token starts between characters), and how far each cut is
        cuts = [np.sort(e.clean_breaks()) for e in encodings]
        kept = [int(np.searchsorted(c, len(e))) for c, e in zip(cuts, encodings, strict=True)]
        truncated = False
        while True:
            widths = [int(s.widths[end]) for s, end in zip(shaped, ends, strict=True)]
            first_patches = self._patches_for(margin + widths[0])
            if first_patches + 1 + self._patches_for(margin + widths[1]) <= limit - 1:
                return _PairFit((ends[0], ends[1]), (token_ends[0], token_ends[1]), truncated)
            longer = int(widths[1] > widths[0])
            kept[longer] = max(kept[longer] - 1, 0)
            token_ends[longer] = int(cuts[longer][kept[longer]]) if kept[longer] else 0
            ends[longer] = int(encodings[longer].spans[token_ends[longer], 0]) if token_ends[longer] else 0
            truncated = True

    # -- shaping and placing -----------------------------------------------------------

    def _shape(self, text: str) -> _ShapedText:
        """Cut ``text`` into pieces (the strategy's units, split where the bidi level changes)
        and shape each. A text repeats its pieces (its words): each distinct one is looked up
        once, and the new ones are made together (shaping.PieceCache)."""
        levels = embedding_levels(text.translate(self.display)) if has_rtl(text) else None
        bounds = self.layout.bounds(text, levels)
        piece_levels = levels[bounds[:-1]] if levels is not None else np.zeros(len(bounds) - 1, np.uint8)
        texts: Iterable[Any] = map(text.__getitem__, map(slice, bounds[:-1], bounds[1:]))
        if levels is not None:
            texts = zip(texts, (piece_levels & 1).astype(bool).tolist(), strict=True)
        # (left to right: the texts stand for their keys, which hash faster than tuples)
        distinct: dict[Any, int] = {}
        order = [distinct.setdefault(key, len(distinct)) for key in texts]  # each piece's distinct one
        keys = list(distinct) if levels is not None else [(key, False) for key in distinct]
        pieces = self.layout.piece.many(keys)
        chars = [piece.chars for piece in pieces]
        extents = np.zeros((3, 0), np.int32)
        if order:
            extents = np.concatenate(list(map(chars.__getitem__, order)), axis=1)
        widths = np.concatenate([[0], np.cumsum(extents[2], dtype=np.int64)])
        return _ShapedText(
            text, np.asarray(bounds, np.int64), piece_levels, _PieceColumns.of(pieces, order), extents, widths
        )

    def _place(self, shaped: _ShapedText, start: int, end: int, x: int) -> _Placed:
        """Lay out ``shaped.text[start:end]`` as one line starting at ``x`` (bidi-reordered)."""
        bounds = shaped.bounds
        first = max(int(np.searchsorted(bounds, start, side="right")) - 1, 0)
        stop = max(int(np.searchsorted(bounds, end, side="left")), first)
        columns = shaped.columns.slice(first, stop)
        levels = shaped.levels[first:stop]
        extents = shaped.extents[:2, start:end].astype(np.int64)
        cut = {}  # pieces cut by the strip edge, shaped again as the text they keep
        for index in {0, stop - first - 1} if stop > first else ():
            a, b = int(bounds[first + index]), int(bounds[first + index + 1])
            if a < start or b > end:
                a, b = max(a, start), min(b, end)
                cut[index] = (a, self.layout.piece(shaped.text[a:b], bool(levels[index] & 1)))
        if cut:
            columns = columns.replaced({index: piece for index, (_, piece) in cut.items()})
        widths = columns.width
        origins = np.empty(len(widths), np.int64)
        if (levels & 1).any():
            order = np.asarray(visual_order(levels.tolist()), np.int64)
            origins[order] = x + np.cumsum(widths[order]) - widths[order]
        else:
            origins[:] = x + np.cumsum(widths) - widths
        extents += np.repeat(origins, np.diff(np.clip(bounds[first : stop + 1], start, end)))
        for index, (a, piece) in cut.items():
            extents[:, a - start : a - start + piece.chars.shape[1]] = piece.chars[:2] + origins[index]
        return _Placed(
            origins, columns.line(), extents[0], extents[1], x + int(widths.sum()), int(columns.missing.sum())
        )

    # -- strips ------------------------------------------------------------------------

    def _patches_for(self, right: int) -> int:
        """Patches used by content ending at pixel ``right`` (margin included)."""
        patch = self.config.patch_size
        return -(-(right + self.layout.margin_right) // patch)

    def _token_patches(self, placed: _Placed, spans: np.ndarray, used: int) -> np.ndarray:
        """First and last patch of each token from its characters' extents.

        All tokens' ``[begin, end)`` go to one ``reduceat`` (its results for what lies between
        two tokens are dropped): a token of one character or none takes that character's
        extent, the padding standing in for one at the very end. Extents are reduced first
        and divided into patches after (floor division keeps their order): per token, not
        per character."""
        if len(spans) == 0:
            return np.zeros((0, 2), np.int32)
        count = len(placed.char_left)
        if count == 0:
            return np.zeros((len(spans), 2), np.int32)
        bounds = np.clip(spans, 0, count)
        np.maximum(bounds[:, 1], bounds[:, 0], out=bounds[:, 1])
        bounds = bounds.ravel()
        left = placed.char_left
        right = np.maximum(placed.char_right, left + 1)  # (no width: the patch it starts in)
        patches = np.empty((len(spans), 2), np.int64)
        patches[:, 0] = np.minimum.reduceat(np.append(left, left[-1]), bounds)[::2]
        patches[:, 1] = np.maximum.reduceat(np.append(right, right[-1]), bounds)[::2] - 1
        patches //= self.config.patch_size
        return patches.clip(0, max(used - 1, 0)).astype(np.int32)


class _Cuts:
    """Where strips may end: token starts, preferably at piece (word) boundaries."""

    def __init__(self, shaped: _ShapedText, encoding: Encoding):
        self.shaped, self.encoding = shaped, encoding
        self._fallback: np.ndarray | None = None

    @cached_property
    def _breaks(self) -> tuple[np.ndarray, np.ndarray]:
        """Cut positions (sorted) and the index of the token each starts."""
        tokens = self.encoding.clean_breaks()
        at = self.encoding.spans[tokens, 0].astype(np.int64)
        order = np.lexsort((tokens, at))
        at, tokens = at[order], tokens[order]
        last = np.append(at[1:] != at[:-1], True)  # a zero-length token stays with the text before
        return at[last], tokens[last]

    @property
    def at(self) -> np.ndarray:
        return self._breaks[0]

    @cached_property
    def preferred(self) -> np.ndarray:
        return _common(self.at, self.shaped.bounds)

    def token_at(self, position: int) -> int:
        return int(self._breaks[1][np.searchsorted(self.at, position)])

    def next(self, start: int, capacity: int, before: int | None = None) -> tuple[int, int, bool]:
        """``(end, end token, overflow)`` of the longest strip from ``start`` that fits in
        ``capacity`` pixels of advance, ending before ``before`` if given (an end that was
        placed and found too wide)."""
        text, widths = self.shaped.text, self.shaped.widths
        if before is None and widths[len(text)] - widths[start] <= capacity:
            return len(text), len(self.encoding), False
        limit = int(np.searchsorted(widths, widths[start] + capacity, side="right")) - 1
        if before is not None:
            limit = min(limit, before - 1)
        end = _last_in(self.preferred, start, limit)
        if end is None:
            if self._fallback is None:
                self._fallback = _common(self.at, np.asarray(grapheme_starts(text), np.int64))
            end = _last_in(self._fallback, start, limit)
        if end is None:  # one grapheme wider than the strip (a ZWJ chain): split it by token
            end = _last_in(self.at, start, limit)
        if end is not None:
            return end, self.token_at(end), False
        later = self.at[self.at > start]  # nothing fits: take the shortest unit, clipped
        if len(later):
            return int(later[0]), self.token_at(int(later[0])), True
        return len(text), len(self.encoding), True


def _common(values: np.ndarray, sorted_: np.ndarray) -> np.ndarray:
    """The ``values`` (sorted, distinct) that are in ``sorted_``: ``np.intersect1d`` without
    its sorting, which both have had already."""
    if not len(sorted_):
        return values[:0]
    found = sorted_[np.minimum(np.searchsorted(sorted_, values), len(sorted_) - 1)]
    return values[found == values]


def _last_in(candidates: np.ndarray, low: int, high: int) -> int | None:
    """The largest candidate in ``(low, high]``, if any."""
    index = int(np.searchsorted(candidates, high, side="right")) - 1
    return int(candidates[index]) if index >= 0 and candidates[index] > low else None
