"""Next-patch and next-token losses over a mixed batch, and which positions they cover.

A batch (see ``data.Batch``) holds right-padded sequences; position ``i`` predicts what is
at ``i + 1``. Next patch: only text patches are inputs (the end-of-text patch and padding are
never in the sequence), so a patch target exists where positions ``i`` and ``i + 1`` are both
real patches. Next token: where ``i + 1`` is a real token other than ``bos``, including the
first token of a pair's text, predicted from the image before it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PATCH_NORM_EPS = 1e-6


def normalize_patches(patches: Tensor) -> Tensor:
    """Each patch minus its mean, over its standard deviation (pixels in [0, 1])."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True, unbiased=False)
    return (patches - mean) / torch.sqrt(var + PATCH_NORM_EPS)


def normalized_patch_mse(predicted: Tensor, target_pixels: Tensor) -> Tensor:
    """Per-patch mean squared error of a prediction against the normalised target [N]."""
    target = normalize_patches(target_pixels.float() / 255.0)
    return (predicted.float() - target).pow(2).mean(dim=-1)


def patch_targets(is_patch: Tensor, real: Tensor) -> Tensor:
    """[B, L] bool: positions whose next position is a real patch to predict."""
    target = torch.zeros_like(is_patch)
    target[:, :-1] = is_patch[:, :-1] & is_patch[:, 1:] & real[:, 1:]
    return target


def token_targets(tokens: Tensor, is_patch: Tensor, real: Tensor, bos_id: int | None) -> Tensor:
    """[B, L] bool: positions whose next position is a real token to predict."""
    following = ~is_patch[:, 1:] & real[:, 1:]
    if bos_id is not None:
        following &= tokens[:, 1:] != bos_id
    target = torch.zeros_like(is_patch)
    target[:, :-1] = following & real[:, :-1]
    return target


def next_patch_errors(hidden: Tensor, head: torch.nn.Module, patches: Tensor, where: Tensor) -> Tensor:
    """Normalised MSE of each next-patch prediction at ``where`` [N], in row-major order."""
    return normalized_patch_mse(head(hidden[where]), patches[:, 1:][where[:, :-1]])


def next_token_errors(hidden: Tensor, head: torch.nn.Module, tokens: Tensor, where: Tensor) -> Tensor:
    """Cross-entropy of each next-token prediction at ``where`` [N], in row-major order."""
    logits = head(hidden[where]).float()
    return F.cross_entropy(logits, tokens[:, 1:][where[:, :-1]], reduction="none")


def _mean(errors: Tensor) -> tuple[Tensor, int]:
    """The mean error and how many there were. With none, a zero that still depends on the head
    (the sum of nothing), so every data-parallel rank reduces the same gradients."""
    count = len(errors)
    return (errors.mean() if count else errors.sum()), count


def next_patch_loss(
    hidden: Tensor, head: torch.nn.Module, patches: Tensor, where: Tensor
) -> tuple[Tensor, int]:
    """Mean normalised MSE of next-patch predictions at ``where``, and how many there were."""
    return _mean(next_patch_errors(hidden, head, patches, where))


def next_token_loss(
    hidden: Tensor, head: torch.nn.Module, tokens: Tensor, where: Tensor
) -> tuple[Tensor, int]:
    """Mean cross-entropy of next-token predictions at ``where``, and how many there were."""
    return _mean(next_token_errors(hidden, head, tokens, where))


def per_example_loss(
    hidden: Tensor, patch_head: torch.nn.Module, lm_head: torch.nn.Module, batch, bos_id: int | None
) -> Tensor:
    """[B] each sequence's own loss: its mean next-patch loss plus its mean next-token loss
    (either term absent when the sequence has nothing of that kind to predict)."""
    patch_where = patch_targets(batch.is_patch, batch.real)
    token_where = token_targets(batch.tokens, batch.is_patch, batch.real, bos_id)
    patch = _row_means(next_patch_errors(hidden, patch_head, batch.patches, patch_where), patch_where)
    token = _row_means(next_token_errors(hidden, lm_head, batch.tokens, token_where), token_where)
    return patch + token


def _row_means(values: Tensor, where: Tensor) -> Tensor:
    """Mean of ``values`` (one per True of ``where``, row-major) per row of ``where``; 0 if none."""
    rows = where.nonzero()[:, 0]
    sums = torch.zeros(where.shape[0], dtype=values.dtype, device=values.device).index_add_(0, rows, values)
    return sums / where.sum(dim=1).clamp(min=1)
