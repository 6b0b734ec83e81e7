"""Next-patch and next-token losses over a mixed batch, and which positions they cover.

A batch (see ``data.batches.Batch``) holds rows of one or more sequences, padded at the end; position
``i`` predicts what is at ``i + 1`` when both belong to the same sequence. Next patch: text
patches are inputs, and the black end-of-text patch too with ``data.end_patch`` (padding never
is), so a patch target exists where positions ``i`` and ``i + 1`` are both real patches. Next token: where
``i + 1`` is a real token other than ``bos``, including the first token of a pair's text,
predicted from the image before it. With the model's ``patch_stats`` head, each next patch's
pixel mean and standard deviation are also regressed (mean squared error), beside the
normalised loss, which by design cannot tell them.

The next-patch loss is the model's ``patch_loss``: ``mse``, the normalised MSE above (the
paper's), or ``bce`` for binary strips, PIXAR's binary cross-entropy of the head's logits
against each pixel's ink bit, averaged over the patch's pixels (PIXAR averages over an image's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PATCH_NORM_EPS = 1e-6


def patch_statistics(patches: Tensor) -> tuple[Tensor, Tensor]:
    """Each patch's mean and standard deviation [..., 1] (pixels in [0, 1]): what normalising
    removes and de-normalising puts back."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True, unbiased=False)
    return mean, torch.sqrt(var + PATCH_NORM_EPS)


def normalize_patches(patches: Tensor) -> Tensor:
    """Each patch minus its mean, over its standard deviation (pixels in [0, 1])."""
    mean, std = patch_statistics(patches)
    return (patches - mean) / std


def normalized_patch_mse(predicted: Tensor, target_pixels: Tensor) -> Tensor:
    """Per-patch mean squared error of a prediction against the normalised target [N]."""
    if not len(target_pixels):
        return predicted.float().sum(dim=-1)  # (none: an empty result that keeps the graph)
    target = normalize_patches(target_pixels.float() / 255.0)
    return (predicted.float() - target).pow(2).mean(dim=-1)


def ink_bits(pixels: Tensor) -> Tensor:
    """Each pixel's ink bit as a float: 1 where its ink (1 - pixel / 255, the model's input) is
    above 0.5, i.e. pixel < 128; binary strips hold 0 (ink) and 255 (paper) only."""
    return (pixels < 128).float()


def ink_bce(logits: Tensor, target_pixels: Tensor) -> Tensor:
    """Per-patch mean binary cross-entropy of ink logits against the target's ink bits [N]."""
    errors = F.binary_cross_entropy_with_logits(logits.float(), ink_bits(target_pixels), reduction="none")
    return errors.mean(dim=-1)


PATCH_ERRORS = {"mse": normalized_patch_mse, "bce": ink_bce}  # by the model's ``patch_loss``


def sequence_ids(batch) -> Tensor:
    """[B, L] the sequence each position belongs to (-1: padding): a packed batch's segments, or
    else the row."""
    if batch.packing is not None:
        return batch.packing.segments
    rows = torch.arange(batch.real.shape[0], device=batch.real.device)[:, None].expand_as(batch.real)
    return torch.where(batch.real, rows, -1)


def _same_sequence(real: Tensor, segments: Tensor | None) -> Tensor:
    """[B, L-1] bool: positions i and i + 1 are real and of one sequence."""
    both = real[:, :-1] & real[:, 1:]
    return both if segments is None else both & (segments[:, :-1] == segments[:, 1:])


def patch_targets(is_patch: Tensor, real: Tensor, segments: Tensor | None = None) -> Tensor:
    """[B, L] bool: positions whose next position is a real patch of their sequence to predict."""
    target = torch.zeros_like(is_patch)
    target[:, :-1] = is_patch[:, :-1] & is_patch[:, 1:] & _same_sequence(real, segments)
    return target


def token_targets(
    tokens: Tensor, is_patch: Tensor, real: Tensor, bos_id: int | None, segments: Tensor | None = None
) -> Tensor:
    """[B, L] bool: positions whose next position is a real token of their sequence to predict."""
    following = ~is_patch[:, 1:] & _same_sequence(real, segments)
    if bos_id is not None:
        following &= tokens[:, 1:] != bos_id
    target = torch.zeros_like(is_patch)
    target[:, :-1] = following
    return target


def targets(batch, bos_id: int | None) -> tuple[Tensor, Tensor]:
    """Where a batch has next patches and next tokens to predict."""
    segments = batch.packing.segments if batch.packing is not None else None
    return (
        patch_targets(batch.is_patch, batch.real, segments),
        token_targets(batch.tokens, batch.is_patch, batch.real, bos_id, segments),
    )


def next_patch_errors(
    hidden: Tensor, head: torch.nn.Module, patches: Tensor, where: Tensor, loss: str = "mse"
) -> Tensor:
    """The ``loss`` (``PATCH_ERRORS``) of each next-patch prediction at ``where`` [N], in row-major order."""
    return PATCH_ERRORS[loss](head(hidden[where]), patches[:, 1:][where[:, :-1]])


def next_patch_stats_errors(hidden: Tensor, head: torch.nn.Module, patches: Tensor, where: Tensor) -> Tensor:
    """Squared error of each next patch's predicted mean and standard deviation, averaged [N]."""
    truth = torch.cat(patch_statistics(patches[:, 1:][where[:, :-1]].float() / 255.0), dim=-1)
    return (head(hidden[where]).float() - truth).pow(2).mean(dim=-1)


def next_token_errors(hidden: Tensor, head: torch.nn.Module, tokens: Tensor, where: Tensor) -> Tensor:
    """Cross-entropy of each next-token prediction at ``where`` [N], in row-major order."""
    logits = head(hidden[where]).float()
    return F.cross_entropy(logits, tokens[:, 1:][where[:, :-1]], reduction="none")


def mean_and_count(errors: Tensor) -> tuple[Tensor, int]:
    """The mean error and how many there were. With none, a zero that still depends on the head
    (the sum of nothing), so every data-parallel rank reduces the same gradients."""
    count = len(errors)
    return (errors.mean() if count else errors.sum()), count


def next_patch_loss(
    hidden: Tensor, head: torch.nn.Module, patches: Tensor, where: Tensor, loss: str = "mse"
) -> tuple[Tensor, int]:
    """Mean ``loss`` of next-patch predictions at ``where``, and how many there were."""
    return mean_and_count(next_patch_errors(hidden, head, patches, where, loss))


def next_token_loss(
    hidden: Tensor, head: torch.nn.Module, tokens: Tensor, where: Tensor
) -> tuple[Tensor, int]:
    """Mean cross-entropy of next-token predictions at ``where``, and how many there were."""
    return mean_and_count(next_token_errors(hidden, head, tokens, where))


def per_example_loss(hidden: Tensor, model: torch.nn.Module, batch, bos_id: int | None) -> Tensor:
    """[S] each sequence's own loss (in the order of ``batch.keys``): its mean next-patch loss
    (and patch-statistics loss, with that head) plus its mean next-token loss (a term is
    absent when the sequence has nothing of that kind)."""
    patch_where, token_where = targets(batch, bos_id)
    ids, count = sequence_ids(batch), len(batch.kinds)
    patch_ids = ids[patch_where]
    patch_errors = next_patch_errors(
        hidden, model.patch_head, batch.patches, patch_where, model.config.patch_loss
    )
    loss = _means(patch_errors, patch_ids, count)
    if model.config.patch_stats:
        stats = next_patch_stats_errors(hidden, model.patch_stats_head, batch.patches, patch_where)
        loss = loss + _means(stats, patch_ids, count)
    return loss + _means(
        next_token_errors(hidden, model.lm_head, batch.tokens, token_where), ids[token_where], count
    )


def _means(values: Tensor, ids: Tensor, count: int) -> Tensor:
    """Mean of ``values`` per id in 0..count-1 (0 for an id with none)."""
    sums = torch.zeros(count, dtype=values.dtype, device=values.device).index_add_(0, ids, values)
    counts = torch.zeros(count, dtype=values.dtype, device=values.device).index_add_(
        0, ids, torch.ones_like(values)
    )
    return sums / counts.clamp(min=1)
