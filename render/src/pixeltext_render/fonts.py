"""Fonts: finding the files, the fallback chain, and each glyph's ink, rasterised once.

HarfBuzz shapes with a font, FreeType rasterises its glyphs. A glyph's ink is kept as the
list of its non-blank pixels relative to the pen position on the baseline, so that drawing
a strip is a vectorised scatter of cached pixels rather than a rasteriser call per glyph.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import freetype
import numpy as np
import regex
import uharfbuzz as hb
from zlib_ng import zlib_ng

from pixeltext_render.assets import assets_dir, file_sha256

_FT_FACE_FLAG_COLOR = 1 << 14
_SYSTEM_FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.local/share/fonts",
    "~/.fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
    "C:/Windows/Fonts",
)


class FontError(RuntimeError):
    """A font cannot be found or used; the message says what to do."""


def font_search_dirs() -> list[Path]:
    """Folders searched for a font given by file name, in order."""
    dirs = [assets_dir() / "fonts"]
    dirs += [Path(p) for p in os.environ.get("PIXELTEXT_FONT_PATH", "").split(os.pathsep) if p]
    dirs += [Path(p).expanduser() for p in _SYSTEM_FONT_DIRS]
    return dirs


def resolve_font(spec: str) -> tuple[Path, int]:
    """``"NotoSans.ttf"``, ``"/abs/path.otf"`` or ``"Collection.ttc#2"`` -> (path, face index)."""
    name, _, index = spec.partition("#")
    face_index = int(index) if index else 0
    direct = Path(name).expanduser()
    if direct.is_file():
        return direct.resolve(), face_index
    searched = font_search_dirs()
    for folder in searched:
        if (folder / name).is_file():
            return (folder / name).resolve(), face_index
    for folder in searched:  # system folders keep fonts in sub-folders
        for found in sorted(folder.rglob(name)) if folder.is_dir() else ():
            return found.resolve(), face_index
    raise FontError(
        f"font {name!r} not found in {', '.join(str(d) for d in searched)}. Run `make install` "
        "(or `pixeltext-render assets fetch`) for the default fonts, add a folder to "
        "PIXELTEXT_FONT_PATH, or give a path."
    )


@dataclass(frozen=True)
class MonoInk:
    """Coverage of a glyph: rows and columns relative to the pen on the baseline."""

    ys: np.ndarray  # int32
    xs: np.ndarray  # int32
    values: np.ndarray  # uint8 coverage 1..255


@dataclass(frozen=True)
class ColorInk:
    """A colour glyph (emoji) as premultiplied RGBA with its top-left offset from the pen."""

    top: int  # rows above the baseline (positive = up)
    left: int
    rgba: np.ndarray  # uint8 [h, w, 4], premultiplied


class Font:
    """One font face at one size: HarfBuzz for shaping, FreeType for rasterising."""

    def __init__(self, spec: str, size: float):
        self.spec = spec
        self.path, self.face_index = resolve_font(spec)
        try:
            self._ft = freetype.Face(str(self.path), self.face_index)
            self._ft.set_char_size(round(size * 64))
        except freetype.FT_Exception as error:
            raise FontError(
                f"FreeType cannot use {self.path} (face {self.face_index}) at {size:.2f} px: "
                f"{error}. Bitmap-only colour fonts (CBDT, such as NotoColorEmoji.ttf) are not "
                "supported; use an outline or COLRv0 colour font (the default is OpenMoji)."
            ) from error
        self.is_color = bool(self._ft.face_flags & _FT_FACE_FLAG_COLOR)
        self._load_flags = freetype.FT_LOAD_DEFAULT | freetype.FT_LOAD_RENDER
        if self.is_color:
            self._load_flags |= freetype.FT_LOAD_COLOR
        hb_face = hb.Face(hb.Blob.from_file_path(str(self.path)), self.face_index)
        self.hb_font = hb.Font(hb_face)
        # Shape in 26.6 fixed point at exactly FreeType's scale, so advances match the ink.
        scale = round(hb_face.upem * self._ft.size.x_scale / 65536)
        self.hb_font.scale = (scale, scale)
        self.coverage: frozenset[int] = frozenset(hb_face.unicodes)
        self._ink: dict[int, MonoInk | ColorInk] = {}

    @cached_property
    def sha256(self) -> str:
        return file_sha256(self.path)

    def metric_px(self, tag: hb.OTMetricsTag) -> float:
        """A font-wide vertical metric (cap height, descender...) in pixels."""
        return self.hb_font.get_metric_position_with_fallback(tag) / 64  # 26.6 -> pixels

    def ink(self, glyph: int) -> MonoInk | ColorInk:
        """The glyph's rasterised ink, computed once per glyph."""
        cached = self._ink.get(glyph)
        if cached is None:
            top, left, image = self.bitmap(glyph)
            if image.ndim == 3:
                cached = ColorInk(top, left, image)
            else:
                rows, cols = np.nonzero(image)
                cached = MonoInk(
                    (rows - top).astype(np.int32), (cols + left).astype(np.int32), image[rows, cols]
                )
            self._ink[glyph] = cached
        return cached

    def bitmap(self, glyph: int) -> tuple[int, int, np.ndarray]:
        """FreeType's rendering of a glyph: (rows above the baseline, left bearing, image).

        The image is coverage [h, w] (uint8), or premultiplied RGBA [h, w, 4] for colour glyphs.
        """
        self._ft.load_glyph(glyph, self._load_flags)
        slot = self._ft.glyph
        bitmap = slot.bitmap
        if bitmap.rows == 0 or bitmap.width == 0:
            return 0, 0, np.zeros((0, 0), np.uint8)
        raw = np.array(bitmap.buffer, dtype=np.uint8).reshape(bitmap.rows, bitmap.pitch)
        if bitmap.pixel_mode == freetype.FT_PIXEL_MODE_BGRA:
            bgra = raw[:, : bitmap.width * 4].reshape(bitmap.rows, bitmap.width, 4)
            image = np.ascontiguousarray(bgra[..., [2, 1, 0, 3]])
        elif bitmap.pixel_mode == freetype.FT_PIXEL_MODE_MONO:
            image = np.unpackbits(raw, axis=1)[:, : bitmap.width] * np.uint8(255)
        elif bitmap.pixel_mode == freetype.FT_PIXEL_MODE_GRAY:
            image = raw[:, : bitmap.width].copy()
        else:
            raise FontError(f"{self.path}: unsupported FreeType pixel mode {bitmap.pixel_mode}")
        return slot.bitmap_top, slot.bitmap_left, image


def _prefers_emoji(text: str, i: int) -> bool:
    """Emoji-presentation context: pictographs, or any character followed by VS16."""
    return ord(text[i]) >= 0x1F000 or (i + 1 < len(text) and text[i + 1] == "\ufe0f")


def _joins_previous(char: str) -> bool:
    """Marks, joiners and selectors belong to the cluster before them."""
    return unicodedata.category(char) in ("Mn", "Mc", "Me", "Cf")


def _is_common(char: str) -> bool:
    """Spaces, punctuation, digits and symbols: drawn by the neighbouring script's font."""
    return unicodedata.category(char)[0] in "ZPNS"


class FontChain:
    """The fallback chain: which font draws each character of a word."""

    def __init__(self, specs: tuple[str, ...], size: float):
        self.fonts = [Font(spec, size) for spec in specs]
        self._color = [i for i, font in enumerate(self.fonts) if font.is_color]
        self._first: dict[tuple[int, bool], int] = {}
        # Characters the main font draws on its own: most words need no further lookup.
        self._main_only = frozenset(
            chr(c) for c in self.fonts[0].coverage if c < 0x1F000 and unicodedata.category(chr(c)) != "Cf"
        )

    def covering_font(self, codepoint: int, emoji: bool = False) -> int:
        """Index of the first font that has the character, or -1 if none has it."""
        key = (codepoint, emoji)
        found = self._first.get(key)
        if found is None:
            order = self._color + list(range(len(self.fonts))) if emoji else range(len(self.fonts))
            found = next((i for i in order if codepoint in self.fonts[i].coverage), -1)
            self._first[key] = found
        return found

    def itemize_all(self, words: list[str]) -> list[tuple[list[tuple[int, int, int]], int]]:
        """``itemize`` each word, the common case (all in the main font) without a call."""
        main = self._main_only.issuperset
        return [([(0, len(word), 0)], 0) if word and main(word) else self.itemize(word) for word in words]

    def itemize(self, word: str) -> tuple[list[tuple[int, int, int]], int]:
        """Split a word into runs ``(start, end, font index)``; also count missing characters.

        A character no font has is drawn with the first font's "missing glyph" box and
        counted, except default-ignorable ones (joiners, selectors), which draw nothing.
        The choice depends only on the word itself, so a word's layout can be cached.
        """
        if self._main_only.issuperset(word):
            return [(0, len(word), 0)] if word else [], 0
        choice = [0] * len(word)
        missing = 0
        for i, char in enumerate(word):
            code = ord(char)
            previous = choice[i - 1] if i else -1
            inherits = previous >= 0 and (_joins_previous(char) or _is_common(char))
            if inherits and (code in self.fonts[previous].coverage or unicodedata.category(char) == "Cf"):
                choice[i] = previous
                continue
            found = self.covering_font(code, _prefers_emoji(word, i))
            if found < 0:
                if unicodedata.category(char) in ("Cf", "Zs"):
                    found = max(previous, 0)  # HarfBuzz hides or synthesises these
                else:
                    missing += 1
                    found = 0
            choice[i] = found
        runs: list[tuple[int, int, int]] = []
        start = 0
        for i in range(1, len(word) + 1):
            if i == len(word) or choice[i] != choice[start]:
                runs.append((start, i, choice[start]))
                start = i
        return runs, missing


def engine_versions() -> dict[str, str]:
    """Versions of what decides the pixels and the bytes of a strip: the rasteriser and shaper,
    the Unicode data behind bidi classes (``unicodedata``, the Python's) and segmentation (the
    ``regex`` module's own), and the deflate library that compresses stored strips."""
    return {
        "freetype": ".".join(map(str, freetype.version())),
        "harfbuzz": hb.version_string(),
        "unicodedata": unicodedata.unidata_version,
        "regex": regex.__version__,
        "zlib-ng": zlib_ng.ZLIBNG_RUNTIME_VERSION,
    }
