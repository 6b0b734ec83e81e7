"""One reader's batches: its sample stream (``stream``) -> decoded and checked against the schema
-> one sequence per strip, of a kind the regimen draws (``regimen``, ``sequences``) -> batches
(``batches``), each carrying the reader's stream state right after it, so that the data module
can resume exactly after the last batch trained on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from pixeltext_render.format.folder import ShardRecord
from pixeltext_render.format.sample import InvalidSample, decode_sample
from pixeltext_train.data.batches import Batch, RowPacker, RowSplitter, collate_rows, packing_mode
from pixeltext_train.data.regimen import Regimen
from pixeltext_train.data.sequences import Sequence, SequenceSpec, is_validation, length, make_sequence
from pixeltext_train.data.stream import ErrorBudget, ResumePoint, SampleStream, StreamMark, StreamState


@dataclass
class StripSequences(IterableDataset):
    """An endless (training) or one-pass (validation) stream of batches from shards.

    A training stream starts at ``start`` as it stands when iteration begins (the data module
    moves it as steps are taken, so a new iteration, or a resumed run, continues after the
    last batch trained on). The DataLoader takes batches from its workers in turn, starting
    with worker 0, so worker w continues reader (w + consumed) mod workers, whose batch is next.
    """

    urls: list[str]
    spec: SequenceSpec
    regimen: Regimen
    batch_size: int
    seed: int = 0
    shuffle_buffer: int = 1000
    training: bool = True
    val_fraction: float = 0.05
    max_errors: int = 100
    rank: int = 0
    world_size: int = 1
    vocab_size: int | None = None
    start: ResumePoint | None = None
    storage_options: dict[str, Any] | None = None
    packing: bool | str = False  # data.packing: none, whole or split (packing_mode)
    records: dict[str, ShardRecord] | None = None  # each shard's size and sha256, checked as read

    def __post_init__(self) -> None:
        super().__init__()
        if not self.urls:
            raise ValueError("no shards to read")
        self.packing = packing_mode(self.packing)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        start = self.start if self.training and self.start else ResumePoint(0, [None] * workers)
        if len(start.streams) != workers:
            raise ValueError(
                f"the stream was read by {len(start.streams)} dataloader workers per rank; resume with "
                f"data.num_workers={len(start.streams) if len(start.streams) > 1 else '0 or 1'}"
            )
        role = (worker + start.consumed) % workers
        saved = start.streams[role]
        self.errors = ErrorBudget(self.max_errors)  # (this iteration's, in this process)
        stream = SampleStream(
            self.urls,
            reader=self.rank * workers + role,
            readers=self.world_size * workers,
            keep=lambda meta: is_validation(meta["document"], self.val_fraction) != self.training,
            budget=self.errors,
            seed=self.seed,
            buffer_size=self.shuffle_buffer,
            training=self.training,
            state=StreamState.from_dict(saved) if saved else None,
            storage_options=self.storage_options,
            records=self.records,
        )
        if self.packing != "none":
            yield from self._packed(stream, role)
            return
        batch: list = []
        for sample in stream:
            sequence = self._sequence(sample, self.regimen.choose(stream.rng))
            if sequence is None:
                continue
            batch.append([sequence])
            if len(batch) == self.batch_size:
                yield self._collate(batch, StreamMark(role, stream.snapshot().to_dict()))
                batch = []
        if batch:  # (only a one-pass stream ends)
            yield self._collate(batch, None)

    def _packed(self, stream: SampleStream, role: int) -> Iterator[Batch]:
        """Packed batches: a batch is full when the next sequence fits in none of its rows (whole)
        or not in its last one (split); that sequence opens the next batch, and the batch's resume
        state is the stream's just before that sequence was drawn, so a resumed stream draws it again."""
        packer_type = RowSplitter if self.packing == "split" else RowPacker
        packer = packer_type(self.batch_size, self.spec.max_positions)
        for sample in stream:
            sequence = self._sequence(sample, self.regimen.choose(stream.rng))
            if sequence is None or packer.add(sequence, length(sequence[1])):
                continue
            yield self._collate(packer.take(), StreamMark(role, stream.snapshot(before_last=True).to_dict()))
            packer.add(sequence, length(sequence[1]))
        rows = packer.take()
        if rows:  # (only a one-pass stream ends)
            yield self._collate(rows, None)

    def _collate(self, rows: list[list], mark: StreamMark | None) -> Batch:
        keys = tuple(f"{key}/{sequence[0]}" for row in rows for key, sequence in row)
        sequences = [[sequence for _, sequence in row] for row in rows]
        packed = self.packing != "none"
        return collate_rows(sequences, self.spec, keys, mark if self.training else None, packed)

    def _sequence(self, sample: dict, kind: str) -> tuple[str, Sequence] | None:
        """``(key, (kind, ids, patches))``, or None for a sample that breaks the schema (counted)."""
        try:
            stored = decode_sample(sample, self.spec.patch_size, self.vocab_size, self.spec.channels)
        except InvalidSample as error:
            self.errors(f"sample {sample['__key__']} of {sample['__url__']}", error)
            return None
        if kind != "text" and stored.num_text_patches == 0:
            kind = "text"
        return sample["__key__"], (kind, *make_sequence(stored, kind, self.spec))
