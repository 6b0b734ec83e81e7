"""A picture of rendered strips that a person can read: wrapped, cropped, scaled up."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pixeltext_render.renderer import Strip

_GAP = 4  # pixels between wrapped rows (before scaling)
_STRIP_GAP = 12  # pixels between strips
_GAP_COLOR = (200, 200, 200)


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    """Pixels [H, W], [H, W, 1] (gray, binary) or [H, W, 3] as RGB [H, W, 3], to show beside
    colour (one channel as grey, a read-only view)."""
    pixels = pixels if pixels.ndim == 3 else pixels[..., None]
    return np.broadcast_to(pixels, (*pixels.shape[:2], 3))


def preview_image(
    strips: list[Strip], patch_size: int, patches_per_row: int = 64, scale: int = 3
) -> Image.Image:
    """Each strip cut after its end patch and wrapped every ``patches_per_row`` patches (strips
    of any colour mode, shown in RGB)."""
    row_width = patch_size * patches_per_row
    blocks = []
    for strip in strips:
        shown = as_rgb(strip.pixels[:, : (strip.num_text_patches + 1) * patch_size])
        rows = [shown[:, x : x + row_width] for x in range(0, shown.shape[1], row_width)]
        for i, row in enumerate(rows):
            padded = np.full((patch_size, row_width, 3), 255, np.uint8)
            padded[:, : row.shape[1]] = row
            blocks.append(padded)
            gap = _GAP if i < len(rows) - 1 else _STRIP_GAP
            blocks.append(np.full((gap, row_width, 3), _GAP_COLOR, np.uint8))
    picture = np.concatenate(blocks[:-1]) if blocks else np.full((patch_size, row_width, 3), 255, np.uint8)
    image = Image.fromarray(picture)
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
