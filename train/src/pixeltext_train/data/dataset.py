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
from pixeltext_train.data.batches import (
    Batch,
    Packer,
    Part,
    RowPacker,
    RowSplitter,
    collate_rows,
    packing_mode,
)
from pixeltext_train.data.regimen import Regimen
from pixeltext_train.data.sequences import (
    Sequence,
    SequenceSpec,
    is_validation,
    length,
    make_sequence,
)
from pixeltext_train.data.stream import ErrorBudget, ResumePoint, SampleStream, StreamMark, StreamState
from pixeltext_train.storage import ShardError


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
        saved = StreamState.from_dict(start.streams[role]) if start.streams[role] else None
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
            state=saved,
            storage_options=self.storage_options,
            records=self.records,
        )
        if self.packing != "none":
            yield from self._packed(stream, role, saved.waiting if saved else [])
            return
        batch: list = []
        for sample in stream:
            keyed = self._sequence(sample, self.regimen.choose(stream.rng))
            if keyed is None:
                continue
            batch.append([Part(*keyed, stream.source)])
            if len(batch) == self.batch_size:
                yield self._collate(batch, StreamMark(role, stream.snapshot().to_dict()))
                batch = []
        if batch:  # (only a one-pass stream ends)
            yield self._collate(batch, None)

    def _packed(self, stream: SampleStream, role: int, waiting: list[list]) -> Iterator[Batch]:
        """Packed batches (``whole`` or ``split``). A batch's resume state is the stream's right
        after it, with the parts that wait to open the next batch (by address, and the offset
        of a cut sequence's rest): a resumed stream reads those again and packs on as before."""
        packer: Packer = (RowSplitter if self.packing == "split" else RowPacker)(
            self.batch_size, self.spec.max_positions
        )
        packer.start([self._waiting_part(stream, *entry) for entry in waiting])
        samples = iter(stream)
        while True:
            while packer.full:
                state = stream.snapshot()
                state.waiting = [[*p.source, p.sequence[0], p.offset] for p in packer.waiting]
                yield self._collate(packer.take(), StreamMark(role, state.to_dict()))
            sample = next(samples, None)
            if sample is None:  # (only a one-pass stream ends)
                break
            keyed = self._sequence(sample, self.regimen.choose(stream.rng))
            if keyed is not None:
                packer.add(Part(*keyed, stream.source))
        rows = packer.take()
        while rows:
            yield self._collate(rows, None)
            rows = packer.take()

    def _waiting_part(
        self, stream: SampleStream, epoch: int, position: int, index: int, kind: str, offset: int
    ) -> Part:
        """A part a checkpoint says was waiting: its sample read again, its sequence made again
        as the kind it was drawn as, less the positions already trained on."""
        keyed = self._sequence(stream.fetch(epoch, position, index), kind)
        if keyed is None or keyed[1][0] != kind or not 0 <= offset < length(keyed[1]):
            raise ShardError(f"the shards changed since the checkpoint: sample {index} of shard {position}")
        part = Part(*keyed, (epoch, position, index))
        return part.cut(offset)[1] if offset else part

    def _collate(self, rows: list[list[Part]], mark: StreamMark | None) -> Batch:
        keys = tuple(f"{part.key}/{part.sequence[0]}" for row in rows for part in row)
        sequences = [[part.sequence for part in row] for row in rows]
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
