"""One stored strip -> one sequence: pixel (its patches), text (bos and its tokens) or pair
(its patches, bos, then the tokens of exactly the text in those patches), cut to the model's
positions.

Pre-training, intrinsic evaluation, reconstruction and fine-tuning all lay out their inputs
with these, so that a checkpoint sees the sequences it was trained on; which documents are
held out for validation is decided here too, for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixeltext_render.format.sample import StoredStrip, key_hash
from pixeltext_render.renderer import Strip

MODALITIES = ("pixel", "text", "pair")  # what a sequence is made of: pre-training and fine-tuning alike
Sequence = tuple[str, np.ndarray, np.ndarray | None]  # kind, token ids, patches (first) or None


@dataclass
class SequenceSpec:
    max_positions: int
    patch_size: int
    bos_id: int
    pad_id: int
    end_patch: bool = False  # a strip's black end patch is an input (and a target), as the paper's
    eos_id: int | None = None  # with end_patch, a pair whose text is all there ends with eos
    channels: int = 3  # the strips' (``RenderConfig.channels``): 3 rgb, 1 gray or binary

    @property
    def patch_dim(self) -> int:
        """Values in one patch."""
        return self.patch_size**2 * self.channels


def length(sequence: Sequence) -> int:
    """Positions the sequence takes: its patches and its tokens."""
    _, ids, patches = sequence
    return len(ids) + (0 if patches is None else len(patches))


def is_validation(document: str, fraction: float) -> bool:
    """A stable split by document: the same documents are held out in every run."""
    return key_hash(document) < fraction * 2**64


def strip_patches(stored: StoredStrip | Strip, patch_size: int, count: int) -> np.ndarray:
    """The first ``count`` patches of a strip, each flattened (row, column, channel) [count, D],
    in the strip's own channels (D = patch_size² x 3 for rgb, x 1 for gray and binary)."""
    pixels = stored.pixels[:, : count * patch_size]
    height, channels = pixels.shape[0], pixels.shape[2]
    patches = pixels.reshape(height, count, patch_size, channels).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(patches.reshape(count, height * patch_size * channels))  # (count may be 0)


def shown_patches(text_patches: int, room: int, end_patch: bool, *, crop_for_end: bool) -> tuple[int, bool]:
    """``(text patches shown, whether the black end patch follows them)`` for a strip of
    ``text_patches`` in ``room`` positions; without ``end_patch``, as many text patches as fit.

    Pre-training (``crop_for_end=False``): the end patch is a target meaning "the text ends
    here", so it is shown only where the text truly ends: after all the text patches, when they
    fit with it; otherwise as many text patches as fit, and no end patch (which would teach the
    model that a cut text ends). A pair's end patch, and eos, likewise come only with its whole
    strip, which it shows only with them (``make_sequence`` fits its patches and tokens together).

    Fine-tuning (``crop_for_end=True``): a classifier pooled on the end patch must always see it,
    so a strip with text keeps one, and its text patches are cropped to ``room - 1``.
    """
    if not end_patch:
        return min(text_patches, room), False
    if crop_for_end:
        return min(text_patches, room - 1), text_patches > 0
    if text_patches + 1 <= room:
        return text_patches, True
    return min(text_patches, room), False


def make_sequence(stored: StoredStrip, kind: str, spec: SequenceSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """(token ids [n], patches [k, D] or None): patches occupy the first k positions. With
    ``spec.end_patch``, a strip whose text patches all fit keeps its black end patch after them,
    and a pair that holds the whole strip ends its tokens with ``eos`` (the text ends there in
    both modalities: reading a strip then knows where to stop; see ``shown_patches``)."""
    ids = stored.token_ids.astype(np.int64)
    patches = stored.num_text_patches
    room = spec.max_positions
    if kind == "text":
        return np.concatenate([[spec.bos_id], ids[: room - 1]]), None
    if kind == "pixel":
        shown, with_end = shown_patches(patches, room, spec.end_patch, crop_for_end=False)
        return np.zeros(0, np.int64), strip_patches(stored, spec.patch_size, shown + with_end)
    # pair: the most patches k that fit with bos and the tokens lying wholly in those k patches
    # (all of them, the end patch and eos, for the whole strip)
    end = int(spec.end_patch)
    closing = end * (1 + (spec.eos_id is not None))
    reach = np.maximum.accumulate(stored.token_patches[:, 1]) if len(ids) else np.zeros(0, np.int64)
    inside = np.searchsorted(reach, np.arange(patches + 1), side="left")  # tokens within k patches
    fits = np.arange(patches + 1) + 1 + inside + closing * (np.arange(patches + 1) == patches) <= room
    k = int(np.flatnonzero(fits)[-1])
    whole = end and k == patches
    tokens = [[spec.bos_id], ids[: inside[k]], [spec.eos_id] if whole and spec.eos_id is not None else []]
    return np.concatenate(tokens).astype(np.int64), strip_patches(stored, spec.patch_size, k + whole)
