"""Sequences -> batches: which sequences share a row (``RowPacker``: ``data.packing=whole``, each
in the first row it fits; ``RowSplitter``: ``split``, rows filled in turn, a sequence cut where a
row ends), and the tensors the model takes (``collate_rows``), with each position's sequence
and place in it so that packed sequences never see each other; or one sequence per row,
right-padded to the longest (``collate``: fine-tuning, probes, evaluation)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from pixeltext_train.data.sequences import MODALITIES, Sequence, SequenceSpec, length
from pixeltext_train.data.stream import StreamMark
from pixeltext_train.model import Packing

PACKINGS = ("none", "whole", "split")  # data.packing's values; true and false are whole and none


def packing_mode(value: bool | str) -> str:
    """``data.packing`` as one of ``PACKINGS`` (true and false, the older values, are whole and
    none, so that older configs and checkpoints' run identities keep meaning what they meant)."""
    if isinstance(value, bool):
        return "whole" if value else "none"
    if value not in PACKINGS:
        raise ValueError(f"data.packing must be one of {', '.join(PACKINGS)} (or true/false), got {value!r}")
    return value


class Batch(NamedTuple):
    tokens: torch.Tensor  # int64 [B, L]; bos/pad ids, or 0 at patch positions
    patches: torch.Tensor  # uint8 [B, L, patch_dim]; zeros at token positions
    is_patch: torch.Tensor  # bool [B, L]
    real: torch.Tensor  # bool [B, L]: not padding
    kinds: torch.Tensor  # int64 [S]: each sequence's kind, an index into MODALITIES
    keys: tuple[str, ...] = ()  # each sequence's sample key and kind, "<key>/<kind>" (influence records)
    stream: StreamMark | None = None  # training batches: where their reader's stream stands
    packing: Packing | None = None  # rows holding several sequences; None: one sequence per row


def collate_rows(
    rows: list[list[Sequence]],
    spec: SequenceSpec,
    keys: tuple[str, ...] = (),
    stream: StreamMark | None = None,
    packed: bool = True,
) -> Batch:
    """A batch of rows, each holding its sequences one after the other. Packed rows are
    ``spec.max_positions`` wide and carry each position's sequence and place in it (sequences
    are numbered in row order); unpacked rows hold one sequence each, as wide as the longest."""
    width = spec.max_positions if packed else max(max(length(row[0]) for row in rows), 1)
    size = len(rows)
    tokens = np.full((size, width), spec.pad_id, np.int64)
    pixels = np.zeros((size, width, spec.patch_dim), np.uint8)
    is_patch = np.zeros((size, width), bool)
    positions = np.zeros((size, width), np.int64)
    segments = np.full((size, width), -1, np.int64)
    kinds = []
    for r, row in enumerate(rows):
        at = 0
        for kind, ids, patches in row:
            k = 0 if patches is None else len(patches)
            if k:
                pixels[r, at : at + k] = patches
                tokens[r, at : at + k] = 0
                is_patch[r, at : at + k] = True
            tokens[r, at + k : at + k + len(ids)] = ids
            end = at + k + len(ids)
            positions[r, at:end] = np.arange(end - at)
            segments[r, at:end] = len(kinds)
            kinds.append(MODALITIES.index(kind))
            at = end
    packing = Packing(torch.from_numpy(positions), torch.from_numpy(segments)) if packed else None
    return Batch(
        torch.from_numpy(tokens),
        torch.from_numpy(pixels),
        torch.from_numpy(is_patch),
        torch.from_numpy(segments >= 0),
        torch.tensor(kinds),
        tuple(keys),
        stream,
        packing,
    )


def collate(
    sequences: list[Sequence],
    spec: SequenceSpec,
    keys: tuple[str, ...] = (),
    stream: StreamMark | None = None,
) -> Batch:
    """One sequence per row, right-padded to the longest (fine-tuning, probes)."""
    return collate_rows([[sequence] for sequence in sequences], spec, keys, stream, packed=False)


class RowPacker:
    """Places sequences, in the order they come, each in the first of ``rows`` rows of
    ``width`` positions where it fits; full when one fits nowhere (it opens the next batch)."""

    def __init__(self, rows: int, width: int):
        self.width = width
        self.rows: list[list[Any]] = [[] for _ in range(rows)]
        self.free = [width] * rows

    def add(self, item: Any, size: int) -> bool:
        """Place ``item`` (``size`` positions); False if no row has room for it."""
        for row, room in enumerate(self.free):
            if size <= room:
                self.rows[row].append(item)
                self.free[row] -= size
                return True
        return False

    def take(self) -> list[list[Any]]:
        """The rows that hold something, and an empty packer for the next batch."""
        rows = [row for row in self.rows if row]
        self.rows, self.free = [[] for _ in self.rows], [self.width] * len(self.rows)
        return rows


def cut(sequence: Sequence, at: int) -> tuple[Sequence, Sequence]:
    """A text or pixel sequence's first ``at`` positions and the rest, each a sequence of its own
    (the rest gets no bos: it continues a text, as large-scale pre-training's cut documents do)."""
    kind, ids, patches = sequence
    if kind == "pair":
        raise ValueError("a pair is never cut: its tokens read all of its patches")
    if patches is None:
        return (kind, ids[:at], None), (kind, ids[at:], None)
    return (kind, ids, patches[:at]), (kind, ids, patches[at:])


class RowSplitter(RowPacker):
    """Fills rows in turn (``data.packing=split``), items being ``(key, sequence)``: a text or
    pixel sequence that overflows a row's tail is cut (``cut``), its first part ending that row
    and its rest starting the next; a pair that overflows starts the next row whole, the tail
    left empty. The last row is never cut: the batch is full, and the sequence opens the next
    batch whole, so no part of a sequence crosses batches and a batch's resume point (just before
    that sequence) is all exact resume needs."""

    def __init__(self, rows: int, width: int):
        super().__init__(rows, width)
        self.row = 0  # the row being filled

    def add(self, item: tuple[str, Sequence], size: int) -> bool:
        """Place ``item`` (``size`` positions) in the row being filled, cut or moved to the next
        row; False in the last row when it does not fit whole."""
        room = self.free[self.row]
        if size > room:
            if self.row == len(self.rows) - 1:
                return False
            key, sequence = item
            if room and sequence[0] != "pair":
                head, item = ((key, part) for part in cut(sequence, room))
                self._place(head, room)
                size -= room
            self.row += 1
        self._place(item, size)
        return True

    def _place(self, item: tuple[str, Sequence], size: int) -> None:
        self.rows[self.row].append(item)
        self.free[self.row] -= size

    def take(self) -> list[list[Any]]:
        self.row = 0
        return super().take()
