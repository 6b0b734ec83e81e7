"""The strip canvas: cached glyph ink scattered into one array, then coloured through a table,
then stored in the config's colour mode (``convert_color``)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from itertools import pairwise
from typing import NamedTuple

import numpy as np

from pixeltext_render.config import RenderConfig
from pixeltext_render.fonts import ColorInk, FontChain, MonoInk
from pixeltext_render.glyphs import GlyphBatch, Glyphs

BINARY_THRESHOLD = 127  # binary: a pixel whose luminance is above this is paper (255), else ink (0)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """The luma of uint8 RGB pixels [..., 3] -> [...]: ITU-R 601-2, 0.299 R + 0.587 G + 0.114 B
    in Pillow's fixed point (``convert("L")``, what the official grey fine-tuning inputs are
    made with), rounded; its weights sum to 1 exactly, so a grey pixel keeps its value."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def convert_color(image: np.ndarray, color: str) -> np.ndarray:
    """A drawn strip (RGB [H, W, 3], or [H, W] when every pixel is grey) in colour mode ``color``:
    rgb as it is; gray its luminance; binary that luminance thresholded at ``BINARY_THRESHOLD``
    (PIXAR's ``> 255 / 2`` and PIXEL-GPT's ``> 127``, the same on integers): one channel [H, W, 1]."""
    if color == "rgb":
        return image
    grey = image if image.ndim == 2 else luminance(image)
    if color == "binary":
        grey = np.multiply(grey > BINARY_THRESHOLD, 255, dtype=np.uint8)
    return grey[..., None]


def coverage_colors(text_color, background) -> np.ndarray:
    """Table [256, 3]: the colour of a pixel with coverage 0..255 of text over background."""
    alpha = np.arange(256, dtype=np.int64)[:, None]
    fg = np.asarray(text_color, np.int64)[None, :]
    bg = np.asarray(background, np.int64)[None, :]
    return ((bg * (255 - alpha) + fg * alpha + 127) // 255).astype(np.uint8)


def composite_premultiplied(pixels: np.ndarray, x: int, y: int, rgba: np.ndarray) -> None:
    """Draw a premultiplied RGBA image over ``pixels`` with its top-left at (x, y), clipped."""
    height, width = pixels.shape[:2]
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + rgba.shape[0], height), min(x + rgba.shape[1], width)
    if top >= bottom or left >= right:
        return
    src = rgba[top - y : bottom - y, left - x : right - x].astype(np.uint16)
    dst = pixels[top:bottom, left:right].astype(np.uint16)
    keep = 255 - src[..., 3:4]
    pixels[top:bottom, left:right] = np.minimum((dst * keep + 127) // 255 + src[..., :3], 255)


class Geometry(NamedTuple):
    """Where ink lands: strip size, baseline row, and the padded canvas pieces are inked for.

    Ink is kept as packed integers ``index * 256 + coverage``, ``index`` being a flat index
    into a canvas ``stride`` pixels wide whose column ``pad`` is the strip's column 0. A
    piece's ink is thus drawn anywhere by adding ``x * 256``, for the whole strip at once.
    """

    height: int
    width: int
    baseline: int
    pad: int
    stride: int

    @classmethod
    def of(cls, config: RenderConfig, baseline: int) -> Geometry:
        pad = 64 * config.patch_size
        return cls(config.height, config.width, baseline, pad, config.width + 2 * pad)

    @property
    def ink_dtype(self) -> type[np.signedinteger]:
        return np.int32 if self.height * self.stride * 256 < 2**31 else np.int64


class Ink(NamedTuple):
    """The ink of positioned glyphs, relative to their start (see :class:`Geometry`)."""

    packed: np.ndarray  # canvas index * 256 + coverage
    left: int  # leftmost and one past the rightmost inked column
    right: int
    colors: tuple[tuple[int, ColorInk], ...]  # colour glyphs: (x of the pen, glyph)


class BatchInk(NamedTuple):
    """The ink of a batch of texts' glyphs (as ``Ink``), one entry per text."""

    # arrays of their own, not views of the batch's (which a cached piece would keep whole)
    packed: list[np.ndarray]
    count: list[int]
    left: list[int]
    right: list[int]
    colors: list[tuple[tuple[int, ColorInk], ...]]


class Line(NamedTuple):
    """The ink of a line's pieces as columns (one entry per piece), ready to draw."""

    packed: tuple[np.ndarray, ...]
    counts: np.ndarray
    ink_left: np.ndarray
    ink_right: np.ndarray
    colors: tuple[tuple[tuple[int, ColorInk], ...], ...]


class _GlyphInk(NamedTuple):
    packed: np.ndarray  # the glyph drawn with its pen at x = 0 on the baseline
    left: int
    right: int
    color: ColorInk | None  # colour glyphs are drawn apart, over the coverage
    inside: bool  # every row of it is inside the strip (drawn with no vertical offset)


_NO_INK = 1 << 40  # the left (minus the right) of a glyph without ink in a batch: never the extreme


def _spans(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The indices ``starts[i]:ends[i]`` for every i, one after another."""
    lengths = ends - starts
    return np.arange(lengths.sum()) + np.repeat(starts - np.cumsum(lengths) + lengths, lengths)


def _joined(arrays: Iterable[np.ndarray], dtype: type[np.signedinteger]) -> np.ndarray:
    """``np.concatenate`` of many small contiguous ``dtype`` arrays, into a writable array:
    joining their bytes costs about half as much per array. (An array of another type would
    change the length, which the per-piece shifts added next then refuse.)"""
    return np.frombuffer(bytearray().join(arrays), dtype)


class InkCache:
    """Each glyph's ink, packed for one geometry, computed once per glyph.

    For batches, glyphs are also numbered across the chain (each font's after the previous
    font's) and what a batch needs of them is kept in arrays by that number, so a batch's
    glyphs are looked up with a few array calls. Safe to share between threads.
    """

    def __init__(self, chain: FontChain, geometry: Geometry):
        self.chain = chain
        self.geometry = geometry
        self._inks: dict[tuple[int, int], _GlyphInk] = {}
        sizes = [font.hb_font.face.glyph_count for font in chain.fonts]
        self._first = np.concatenate([[0], np.cumsum(sizes[:-1], dtype=np.int64)])  # number of glyph 0
        self._known = np.zeros(sum(sizes), bool)
        self._table = np.zeros((sum(sizes), 3), np.int64)  # pixel count, ink left, ink right
        self._inside = np.ones(sum(sizes), bool)
        self._is_color = np.zeros(sum(sizes), bool)
        self._packed: list[np.ndarray | None] = [None] * sum(sizes)  # as _GlyphInk.packed
        self._colors: dict[int, ColorInk] = {}
        self._range = (0, 0)  # of every packed value in the tables
        self._limits = np.iinfo(geometry.ink_dtype)
        self._lock = threading.RLock()

    def get(self, font: int, glyph: int) -> _GlyphInk:
        key = (font, glyph)
        ink = self._inks.get(key)
        if ink is None:
            with self._lock:  # a FreeType face rasterises for one thread at a time
                ink = self._inks.get(key) or self._pack(self.chain.fonts[font].ink(glyph))
                self._inks[key] = ink
        return ink

    def _pack(self, ink: MonoInk | ColorInk) -> _GlyphInk:
        g = self.geometry
        if isinstance(ink, ColorInk):
            return _GlyphInk(np.zeros(0, g.ink_dtype), 0, 0, ink, True)
        rows = ink.ys.astype(np.int64) + g.baseline
        packed = ((rows * g.stride + ink.xs + g.pad) * 256 + ink.values).astype(g.ink_dtype)
        if not len(packed):
            return _GlyphInk(packed, 0, 0, None, True)
        inside = bool(rows.min() >= 0 and rows.max() < g.height)
        return _GlyphInk(packed, int(ink.xs.min()), int(ink.xs.max()) + 1, None, inside)

    def ink(self, glyphs: Glyphs) -> Ink:
        """The ink of positioned glyphs; rows that fall outside the strip are dropped.

        One pass in Python over the glyphs and a few array calls per piece: this runs once
        for every distinct piece, so it is most of what a cold cache costs."""
        g = self.geometry
        inks, get = self._inks, self.get
        arrays, shifts, counts, colors = [], [], [], []
        left, right, outside = 0, 0, False
        for font, glyph, x, y in zip(glyphs.fonts, glyphs.ids, glyphs.x, glyphs.y, strict=True):
            ink = inks.get((font, glyph)) or get(font, glyph)
            if ink.color is not None:
                colors.append((x, ColorInk(ink.color.top + y, ink.color.left, ink.color.rgba)))
            count = len(ink.packed)
            if count:
                arrays.append(ink.packed)
                shifts.append((x - y * g.stride) * 256)
                counts.append(count)
                left, right = min(left, x + ink.left), max(right, x + ink.right)
                outside = outside or y != 0 or not ink.inside
        if not arrays:
            return Ink(np.zeros(0, g.ink_dtype), 0, 0, tuple(colors))
        # (in 64 bits: a glyph shifted far off the strip, e.g. the 200th mark stacked on a letter,
        # would wrap around 32; what lands outside the strip's rows is dropped before packing back)
        packed = np.concatenate(arrays, dtype=np.int64)
        packed += np.repeat(np.array(shifts, np.int64), counts)
        if outside:
            limit = g.height * g.stride * 256
            packed = packed[(packed >= 0) & (packed < limit)]
        return Ink(packed.astype(g.ink_dtype), left, right, tuple(colors))

    def _number(self, numbers: list[int]) -> None:
        """Enter glyphs into the tables, one thread at a time; what a glyph holds is set before
        it counts as known, so another thread never reads it half-entered."""
        fonts = (np.searchsorted(self._first, numbers, side="right") - 1).tolist()
        with self._lock:
            for number, font in zip(numbers, fonts, strict=True):
                if not self._known[number]:
                    self._enter(number, self.get(font, number - int(self._first[font])))

    def _enter(self, number: int, ink: _GlyphInk) -> None:
        self._packed[number] = ink.packed
        if ink.color is not None:
            self._colors[number] = ink.color
        if len(ink.packed):
            low, high = self._range
            self._range = min(low, int(ink.packed.min())), max(high, int(ink.packed.max()))
            self._table[number] = len(ink.packed), ink.left, ink.right
            self._inside[number] = ink.inside
        else:
            self._table[number] = 0, _NO_INK, -_NO_INK
        self._is_color[number] = ink.color is not None
        self._known[number] = True

    def batch_ink(self, glyphs: GlyphBatch) -> BatchInk:
        """``ink`` of each text of a batch, in a few array calls for the whole batch."""
        g = self.geometry
        number = self._first[glyphs.fonts] + glyphs.ids
        new = number[~self._known[number]]
        if len(new):
            self._number(np.unique(new).tolist())
        count, left, right = self._table[number].T
        texts, text_of = len(glyphs.starts) - 1, glyphs.text_of
        shift = (glyphs.x - glyphs.y * g.stride) * 256
        # summed in the strip's ink type where no sum can wrap around it (nearly always), else in
        # 64 bits, as ``ink`` does
        (low, high), limits = self._range, self._limits
        wide = len(shift) and (int(shift.min()) + low < limits.min or int(shift.max()) + high > limits.max)
        dtype = np.int64 if wide else g.ink_dtype
        arrays = map(self._packed.__getitem__, number.tolist())
        packed = np.concatenate(list(arrays), dtype=dtype) if wide else _joined(arrays, dtype)
        packed += np.repeat(shift.astype(dtype), count)
        bounds = np.concatenate([[0], np.cumsum(count)])[glyphs.starts]  # each text's first pixel
        outside = (count > 0) & ((glyphs.y != 0) | ~self._inside[number])
        if outside.any():  # drop what lands outside the strip's rows, in the texts where some may
            clipped = np.flatnonzero(np.bincount(text_of[outside], minlength=texts))
            pixels = _spans(bounds[clipped], bounds[clipped + 1])
            values = packed[pixels]
            drop = pixels[(values < 0) | (values >= g.height * g.stride * 256)]
            packed = np.delete(packed, drop)
            bounds = bounds - np.searchsorted(drop, bounds)
        packed = packed.astype(g.ink_dtype, copy=False)
        lefts, rights = np.zeros(texts, np.int64), np.zeros(texts, np.int64)
        np.minimum.at(lefts, text_of, glyphs.x + left)  # glyphs without ink: _NO_INK, never the least
        np.maximum.at(rights, text_of, glyphs.x + right)
        colors: list[tuple[tuple[int, ColorInk], ...]] = [()] * texts
        for i in np.flatnonzero(self._is_color[number]).tolist():
            ink, text = self._colors[int(number[i])], int(text_of[i])
            colors[text] += ((int(glyphs.x[i]), ColorInk(ink.top + int(glyphs.y[i]), ink.left, ink.rgba)),)
        bounds = bounds.tolist()
        return BatchInk(
            [packed[a:b].copy() for a, b in pairwise(bounds)],
            np.diff(bounds).tolist(),
            lefts.tolist(),
            rights.tolist(),
            colors,
        )


class Canvas:
    """Draws lines of pieces into strips of the config's geometry.

    A strip without colour glyphs, drawn in grey on grey (the default: black on white), is
    drawn as one channel [H, W]; otherwise as RGB [H, W, 3]. Both are exact. ``finish`` then
    returns it in the config's colour mode: as drawn (rgb), or one channel [H, W, 1].
    """

    def __init__(self, config: RenderConfig, baseline: int):
        self.geometry = Geometry.of(config, baseline)
        self.patch_size, self.color = config.patch_size, config.color
        colors = coverage_colors(config.text_color, config.background)
        self._colors = colors
        self._grey = colors[:, 0].copy() if (colors == colors[:, :1]).all() else None
        self._inverse = self._grey is not None and bool((self._grey == 255 - np.arange(256)).all())
        self._blank = np.empty((config.height, config.width, 3), np.uint8)  # copied, never drawn on
        self._blank[:] = np.asarray(config.background, np.uint8)

    def draw(self, origins: np.ndarray, line: Line) -> tuple[np.ndarray, int]:
        """A line's pieces drawn at x ``origins``: the image and the right edge of the ink."""
        g = self.geometry
        counts = line.counts
        inked = counts > 0
        ink_right = int((origins + line.ink_right)[inked].max()) if inked.any() else 0
        used = min(max(ink_right, 0), g.width)  # colour only the columns that have ink
        coverage = np.zeros((g.height, 0), np.uint8)
        if used:
            packed = _joined(line.packed, g.ink_dtype)
            packed += np.repeat((origins * 256).astype(g.ink_dtype), counts)
            flat, values = packed >> 8, packed.astype(np.uint8)  # (the cast keeps the low byte)
            if (origins + line.ink_left)[inked].min() < -g.pad or ink_right > g.width + g.pad:
                column = flat % g.stride - g.pad  # off the padded canvas: clip
                keep = (column >= 0) & (column < g.width)
                flat, values = flat[keep], values[keep]
            canvas = np.zeros(g.height * g.stride, np.uint8)
            np.maximum.at(canvas, flat, values)
            coverage = canvas.reshape(g.height, g.stride)[:, g.pad : g.pad + used]
        colored = np.flatnonzero(np.fromiter(map(len, line.colors), np.int64, len(line.colors)))
        if self._grey is not None and not len(colored):
            image = np.empty((g.height, g.width), np.uint8)
            image[:, used:] = self._grey[0]
            if self._inverse:
                np.subtract(255, coverage, out=image[:, :used])
            else:
                np.take(self._grey, coverage, out=image[:, :used])
            return image, ink_right
        image = np.empty((g.height, g.width, 3), np.uint8)
        image[:, used:] = self._blank[:, used:]
        image[:, :used] = np.take(self._colors, coverage, axis=0)
        for index in colored:
            for x, glyph in line.colors[index]:
                x += int(origins[index]) + glyph.left
                composite_premultiplied(image, x, g.baseline - glyph.top, glyph.rgba)
                ink_right = max(ink_right, x + glyph.rgba.shape[1])
        return image, ink_right

    def finish(self, image: np.ndarray, black: list[int], used: int) -> np.ndarray:
        """Blank everything after the end patch ``used``, paint the ``black`` patches, and return
        the strip in the config's colour mode (the last step of drawing)."""
        patch = self.patch_size
        tail = self._blank[:, (used + 1) * patch :]
        image[:, (used + 1) * patch :] = tail if image.ndim == 3 else tail[..., 0]
        for index in black:
            image[:, index * patch : (index + 1) * patch] = 0
        return convert_color(image, self.color)
