"""The render config: everything that decides what pixels a text becomes.

It is recorded, with a fingerprint, wherever a strip is stored (shard manifests,
checkpoints), so a trainer or evaluator can rebuild the identical renderer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

# Bump when a change to the code alters the pixels produced for the same config and fonts.
# 2: paired brackets (UAX #9 rule N0) and trailing whitespace (L1) in right-to-left text.
RENDERER_VERSION = 2

# The fallback chain: the first font that has a character draws it. Noto for the scripts,
# Noto CJK (Simplified Chinese face of the collection), symbols, then colour emoji.
DEFAULT_FONTS: tuple[str, ...] = (
    "NotoSans[wght].ttf",
    "NotoSansArabic[wght].ttf",
    "NotoSansHebrew[wght].ttf",
    "NotoSansDevanagari[wght].ttf",
    "NotoSansBengali[wght].ttf",
    "NotoSansGurmukhi[wght].ttf",
    "NotoSansGujarati[wght].ttf",
    "NotoSansOriya[wght].ttf",
    "NotoSansTamil[wght].ttf",
    "NotoSansTelugu[wght].ttf",
    "NotoSansKannada[wght].ttf",
    "NotoSansMalayalam[wght].ttf",
    "NotoSansSinhala[wght].ttf",
    "NotoSansThai[wght].ttf",
    "NotoSansLao[wght].ttf",
    "NotoSansKhmer[wght].ttf",
    "NotoSansMyanmar[wght].ttf",
    "NotoSansGeorgian[wght].ttf",
    "NotoSansArmenian[wght].ttf",
    "NotoSansEthiopic[wght].ttf",
    "NotoSansCJK-Regular.ttc#2",
    "NotoSansSymbols[wght].ttf",
    "OpenMoji-color-glyf_colr0.ttf",
)

RGB = tuple[int, int, int]

# Where a text's pieces go (see strategies.py): end to end (PIXEL), or each unit of a word,
# a character pair or a character on a grid (Lotz et al. 2023).
STRATEGIES: tuple[str, ...] = ("continuous", "bigrams", "mono", "words")

# How a strip's pixels are stored: RGB, or one channel of luminance (gray) or of ink (binary).
COLORS = ("rgb", "gray", "binary")


@dataclass(frozen=True)
class RenderConfig:
    """How text becomes a strip of ``patch_size``-pixel square patches.

    Defaults follow the paper (PIXEL's renderer): 16-pixel patches, 1024 per strip
    (16 x 16384 pixels), 8 pt at 120 dpi (13.33 pixels per em), text from 2 pixels in.
    """

    patch_size: int = 16
    max_patches: int = 1024
    font_size: float = 40 / 3  # pixels per em
    fonts: tuple[str, ...] = DEFAULT_FONTS  # file names (searched) or paths; "file.ttc#N" = face N
    text_color: RGB = (0, 0, 0)
    background: RGB = (255, 255, 255)
    margin_left: int = 2  # blank pixels before the text
    margin_right: int = 2  # least gap between the text and the end-of-text patch
    baseline: int | None = None  # pixel row of the baseline; None centres the main font
    newline_glyph: str = "\u00b6"  # a line break is drawn as this character (pilcrow)
    tab_glyph: str = "\u2003"  # a tab is drawn as this character (em space)
    # left out of ``to_dict`` while continuous, so configs recorded before it keep their fingerprint
    strategy: str = field(default="continuous", metadata={"recorded_unless_default": True})
    # rgb | gray (luminance, one channel) | binary (ink, one channel of 0/255); left out of
    # ``to_dict`` while rgb, so configs recorded before it keep their fingerprint
    color: str = field(default="rgb", metadata={"recorded_unless_default": True})
    cache_size: int = field(default=200_000, compare=False)  # shaped words kept per process

    def __post_init__(self) -> None:
        # YAML and JSON give lists; keep the config hashable and comparable.
        for name in ("fonts", "text_color", "background"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = []
        if self.patch_size < 4:
            problems.append(f"patch_size must be at least 4 pixels, got {self.patch_size}")
        if self.max_patches < 2:
            problems.append(f"max_patches must be at least 2 (text + end patch), got {self.max_patches}")
        if not 0 < self.font_size <= 4 * self.patch_size:
            problems.append(f"font_size must be in (0, {4 * self.patch_size}], got {self.font_size}")
        if not self.fonts:
            problems.append("fonts must name at least one font")
        for name in ("text_color", "background"):
            colour = getattr(self, name)
            if len(colour) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in colour):
                problems.append(f"{name} must be three integers in 0..255, got {colour}")
        if self.margin_left < 0 or self.margin_right < 0:
            problems.append("margins must not be negative")
        if self.margin_left + self.margin_right >= self.patch_size * (self.max_patches - 1):
            problems.append("margins leave no room for text")
        if self.baseline is not None and not 0 < self.baseline <= self.patch_size:
            problems.append(f"baseline must be in 1..{self.patch_size}, got {self.baseline}")
        for name in ("newline_glyph", "tab_glyph"):
            if len(getattr(self, name)) != 1:
                problems.append(f"{name} must be exactly one character")
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}")
        elif self.strategy == "mono" and self.patch_size % 2:
            problems.append(f"mono needs an even patch_size (cells of half a patch), got {self.patch_size}")
        if self.cache_size < 0:
            problems.append("cache_size must not be negative")
        if self.color not in COLORS:
            problems.append(f"color must be one of {COLORS}, got {self.color!r}")
        if problems:
            raise ValueError("invalid RenderConfig: " + "; ".join(problems))

    @property
    def height(self) -> int:
        return self.patch_size

    @property
    def width(self) -> int:
        return self.patch_size * self.max_patches

    @property
    def channels(self) -> int:
        """Values per pixel as stored and as the model sees them: 3 (rgb) or 1 (gray, binary)."""
        return 3 if self.color == "rgb" else 1

    def to_dict(self) -> dict[str, Any]:
        """The fields that decide pixels, as plain JSON types; a field added after configs were
        recorded (``recorded_unless_default``) only when it is not at its default."""
        values = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.compare
            and not (f.metadata.get("recorded_unless_default") and getattr(self, f.name) == f.default)
        }
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RenderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown RenderConfig fields {unknown}; known: {sorted(known)}")
        return cls(**values)


def fingerprint(payload: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able description (config, font hashes, versions)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
