"""Frozen representations of examples for the simulator: the pixeltext model itself.

An example's feature is the mean of the pre-trained decoder's final hidden states over its
real positions (pixels, text or pair, as chosen), scaled to unit length, followed by its label
(one-hot for classes, the value for regression). The decoder is the pre-trained one, not the
fine-tuned copy, so features do not move with the runs they explain. The label belongs in the
feature because a training example is an input *and* its target: the same review labelled
fresh or rotten pushes a test example's loss in opposite directions.
"""

from __future__ import annotations

import numpy as np
import torch

from pixeltext_train.data.batches import collate
from pixeltext_train.evaluate.backbone import Backbone, InputBudget, encode_example, sequence_spec
from pixeltext_train.evaluate.tasks import Example


@torch.no_grad()
def example_features(
    backbone: Backbone,
    examples: dict[str, Example],
    modality: str,
    max_positions: int,
    classes: int = 0,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """key -> [hidden + label] the unit-length mean-pooled final hidden state, then the label:
    ``classes`` one-hot values (0: one value, the regression target)."""
    spec = sequence_spec(backbone, max_positions)
    budget = InputBudget.within(max_positions, backbone.end_patch).fitted(backbone.model.config.max_positions)
    model = backbone.model.eval()
    keys, features = list(examples), []
    for start in range(0, len(keys), batch_size):
        chunk = [
            encode_example(backbone, examples[k], modality, budget) for k in keys[start : start + batch_size]
        ]
        batch = collate(chunk, spec)
        hidden = model(batch.tokens, batch.patches, batch.is_patch).float()
        real = batch.real[..., None].float()
        pooled = (hidden * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)
        features.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    labels = np.array([examples[k].label for k in keys], np.float32)
    label_part = np.eye(classes, dtype=np.float32)[labels.astype(int)] if classes else labels[:, None]
    return dict(zip(keys, np.concatenate([np.concatenate(features), label_part], axis=1), strict=True))
