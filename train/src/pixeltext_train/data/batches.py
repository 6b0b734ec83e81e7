"""Sequences -> batches: which sequences share a row (``RowPacker``: ``data.packing=whole``, each
in the first row it fits; ``RowSplitter``: ``split``, rows filled in turn, a sequence cut where a
row ends and the last row's rest carried into the next batch), and the tensors the model takes
(``collate_rows``), with each position's sequence and place in it so that packed sequences never
see each other; or one sequence per row, right-padded to the longest (``collate``: fine-tuning,
probes, evaluation)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

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


class Part(NamedTuple):
    """A sequence in a packer, or its part from position ``offset`` on, and where its sample is
    in the stream (``source``: epoch, shard position, sample index), so that the parts waiting
    for the next batch can be read again when a run resumes."""

    key: str
    sequence: Sequence
    source: tuple[int, int, int]
    offset: int = 0

    @property
    def size(self) -> int:
        return length(self.sequence)

    def cut(self, at: int) -> tuple[Part, Part]:
        """The part's first ``at`` positions and the rest (see ``cut``)."""
        head, rest = cut(self.sequence, at)
        return self._replace(sequence=head), self._replace(sequence=rest, offset=self.offset + at)


class Packer(ABC):
    """Places parts into a batch of ``rows`` rows of ``width`` positions, in the order they come.
    When the batch is ``full``, the parts that open the next one are ``waiting``; ``take`` hands
    the batch's rows out and places them first (``start``, which a resumed stream calls with
    the waiting parts its checkpoint names, so that it packs what the first run did)."""

    def __init__(self, rows: int, width: int):
        self.width, self.row_count = width, rows
        self.waiting: list[Part] = []
        self.full = False
        self._clear()

    def _clear(self) -> None:
        self.rows: list[list[Part]] = [[] for _ in range(self.row_count)]
        self.free = [self.width] * self.row_count

    @abstractmethod
    def add(self, part: Part) -> None:
        """Place ``part``, or leave it (or its rest) waiting for the next batch."""

    def _place(self, part: Part, row: int) -> None:
        self.rows[row].append(part)
        self.free[row] -= part.size

    def start(self, parts: list[Part]) -> None:
        """Place ``parts`` in order until the batch is full; the rest wait, in order, after
        whatever became waiting on the way."""
        for index, part in enumerate(parts):
            self.add(part)
            if self.full:
                self.waiting += parts[index + 1 :]
                return

    def take(self) -> list[list[Part]]:
        """The rows that hold something; the waiting parts start the next batch."""
        rows = [row for row in self.rows if row]
        waiting, self.waiting, self.full = self.waiting, [], False
        self._clear()
        self.start(waiting)
        return rows


class RowPacker(Packer):
    """``data.packing=whole``: each part goes to the first row where it fits; the batch is full
    when one fits nowhere, and that part opens the next batch."""

    def add(self, part: Part) -> None:
        row = next((row for row, room in enumerate(self.free) if part.size <= room), None)
        if row is None:
            self.full = True
            self.waiting.append(part)
        else:
            self._place(part, row)


def cut(sequence: Sequence, at: int) -> tuple[Sequence, Sequence]:
    """A text or pixel sequence's first ``at`` positions and the rest, each a sequence of its own
    (the rest gets no bos: it continues a text, as large-scale pre-training's cut documents do)."""
    kind, ids, patches = sequence
    if kind == "pair":
        raise ValueError("a pair is never cut: its tokens read all of its patches")
    if patches is None:
        return (kind, ids[:at], None), (kind, ids[at:], None)
    return (kind, ids, patches[:at]), (kind, ids, patches[at:])


class RowSplitter(Packer):
    """``data.packing=split``: rows are filled in turn by text and pixel sequences, each cut where
    a row ends (``cut``) and continued in the next row, and past the last row in the next batch;
    the batch is full when its last row is. A pair, never cut, goes whole to the first row with
    room for it; when none has, it waits for the next batch while the rows fill on, unless as
    many pairs wait as the next batch has rows beyond one, when it closes the batch (so every
    waiting pair has a row of its own there, and a regimen of pairs alone never waits forever)."""

    def _clear(self) -> None:
        super()._clear()
        self.row = 0  # the row text and pixel sequences are filling

    def add(self, part: Part) -> None:
        if part.sequence[0] == "pair":
            row = next((r for r in range(self.row, self.row_count) if part.size <= self.free[r]), None)
            if row is None:
                self.full = sum(p.sequence[0] == "pair" for p in self.waiting) >= self.row_count - 1
                self.waiting.append(part)
                return
            self._place(part, row)
        else:
            while part.size > self.free[self.row]:  # (the row being filled always has room)
                head, part = part.cut(self.free[self.row])
                self._place(head, self.row)
                self._past_full_rows()
                if self.full:
                    self.waiting.append(part)
                    return
            self._place(part, self.row)
        self._past_full_rows()

    def _past_full_rows(self) -> None:
        """Move the row being filled past full ones (a pair may fill a row too); at the end the
        batch is full."""
        while self.row < self.row_count and not self.free[self.row]:
            self.row += 1
        self.full = self.row == self.row_count
