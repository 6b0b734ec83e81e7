"""The strip canvas: cached glyph ink scattered into one array, then coloured through a table,
then stored in the config's colour mode (``convert_color``)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pixeltext_render.config import RenderConfig
from pixeltext_render.fonts import ColorInk, FontChain, MonoInk
from pixeltext_render.glyphs import Glyphs

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


class InkCache:
    """Each glyph's ink, packed for one geometry, computed once per glyph."""

    def __init__(self, chain: FontChain, geometry: Geometry):
        self.chain = chain
        self.geometry = geometry
        self._inks: dict[tuple[int, int], _GlyphInk] = {}

    def get(self, font: int, glyph: int) -> _GlyphInk:
        key = (font, glyph)
        ink = self._inks.get(key)
        if ink is None:
            ink = self._inks[key] = self._pack(self.chain.fonts[font].ink(glyph))
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
            packed = np.concatenate(line.packed)
            packed += np.repeat((origins * 256).astype(g.ink_dtype), counts)
            flat, values = packed >> 8, (packed & 255).astype(np.uint8)
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
