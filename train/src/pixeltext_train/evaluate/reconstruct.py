"""What the pixel model predicts: a prompt's strip, and under it each next-patch prediction.

The patch head predicts a normalised patch (zero mean, unit variance); to show it, each
prediction is given the mean and variance of the true patch it predicts, as MAE-style
visualisations do: its shape is the model's, its brightness and contrast the target's. A model
trained with ``patch_loss=bce`` predicts ink bits, shown as they are (``generate.ink_pixels``).
The picture has the strips' channels: RGB, or grey for gray and binary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixeltext_train.data.batches import collate
from pixeltext_train.data.sequences import make_sequence
from pixeltext_train.evaluate.backbone import Backbone, sequence_spec
from pixeltext_train.generate import ink_pixels
from pixeltext_train.losses import PATCH_NORM_EPS

GAP = 4  # grey pixels between the two rows, before scaling


def predicted_patches(backbone: Backbone, text: str, max_patches: int) -> tuple[np.ndarray, np.ndarray]:
    """(true patches [n, D] in 0..1, predictions de-normalised [n, D]; row 0 has none, NaN)."""
    model = backbone.model.eval()
    strip = backbone.renderer.render(text).strips[0]
    limit = min(max_patches, model.config.max_positions)
    spec = sequence_spec(backbone, limit)
    sequence = make_sequence(strip, "pixel", spec)
    batch = collate([("pixel", *sequence)], spec)
    with torch.no_grad():
        predicted = model.patch_head(model(batch.tokens, batch.patches, batch.is_patch))[0].float().numpy()
    truth = sequence[1].astype(np.float64) / 255.0
    shown = np.full_like(truth, np.nan)
    if model.config.patch_loss == "bce":
        shown[1:] = ink_pixels(torch.from_numpy(predicted[:-1])).numpy() / 255.0  # position i predicts i + 1
        return truth, shown
    mean, std = truth.mean(axis=1, keepdims=True), np.sqrt(truth.var(axis=1, keepdims=True) + PATCH_NORM_EPS)
    shown[1:] = predicted[:-1] * std[1:] + mean[1:]  # position i predicts patch i + 1
    return truth, np.clip(shown, 0.0, 1.0)


def reconstruction_image(backbone: Backbone, text: str, max_patches: int = 64, scale: int = 4) -> Image.Image:
    """Top: the rendered strip; bottom: the model's prediction of each patch from those before."""
    truth, predicted = predicted_patches(backbone, text, max_patches)
    size, channels = backbone.renderer.config.patch_size, backbone.renderer.config.channels

    def row(patches: np.ndarray) -> np.ndarray:
        image = np.nan_to_num(patches, nan=0.5).reshape(len(patches), size, size, channels)
        return (image.transpose(1, 0, 2, 3).reshape(size, -1, channels) * 255).round().astype(np.uint8)

    gap = np.full((GAP, len(truth) * size, channels), 200, np.uint8)
    pixels = np.concatenate([row(truth), gap, row(predicted)])
    picture = Image.fromarray(pixels if channels == 3 else pixels[..., 0])
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def write_reconstruction(
    backbone: Backbone, text: str, out: Path, max_patches: int = 64, scale: int = 4
) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    reconstruction_image(backbone, text, max_patches, scale).save(out)
    return out
