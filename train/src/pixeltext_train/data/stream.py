"""The samples one reader trains on, epoch after epoch, and where it stands: enough to
continue exactly after a restart.

A reader is one dataloader worker of one rank (``reader`` of ``readers``). Each epoch it
reads its part of the shards, in an order drawn from (seed, epoch): every ``readers``-th
shard, or, when there are fewer shards than readers, every ``readers``-th sample of each
shard. Samples of the other split are passed over; the rest go through a shuffle buffer.
A sample is known by its **address**, (position in the epoch's shard list, index in the
shard), so the buffer can be rebuilt from the files.

:class:`StreamState` is the whole state between two samples: epoch, read position, the
buffer's addresses in order, the random generator and the skip count, and the packer's parts
waiting for the next batch (by address, re-read on restore: ``data.dataset``). It is plain data, so
it travels with each batch to the main process and into checkpoints. Restoring it re-reads
the buffered samples and the current shard up to the read position, never the stream before
them, so resuming costs a few shards whatever the step, and the restored stream reads and
counts exactly what the first run would have, corrupt data included. A sample that breaks the
schema, or a shard that cannot be read further, is counted by the reader that owns it (once
per pass, whatever the number of readers).

Above the readers: a :class:`StreamMark` carries a reader's state with the batch it made to the
main process, and a rank's :class:`ResumePoint` holds, for each of its readers, the state after
the last batch trained on; the data module checkpoints every rank's (``datamodule``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pixeltext_render.format.folder import ShardRecord
from pixeltext_render.format.sample import InvalidSample, read_meta
from pixeltext_train.data.sequences import MODALITIES
from pixeltext_train.storage import ShardError, tar_samples

log = logging.getLogger(__name__)
Address = tuple[int, int]  # (position in the epoch's shard list, index of the sample in its shard)


class ErrorBudget:
    """Counts corrupt samples and unreadable shards; past ``limit`` the run stops (it is drowning)."""

    def __init__(self, limit: int, count: int = 0):
        self.limit, self.count = limit, count

    def __call__(self, what: str, error: Exception) -> None:
        self.count += 1
        log.warning("skipping %s (%d skipped so far): %s", what, self.count, error)
        if self.count > self.limit:
            raise RuntimeError(
                f"{self.count} corrupt samples or unreadable shards, more than data.max_errors={self.limit}; "
                f"last: {what}: {error}"
            ) from error


@dataclass
class StreamState:
    """Where a reader's stream stands after the sample it last delivered."""

    epoch: int = 0
    shard: int = 0  # position in the epoch's shard list of the shard being read
    sample: int = 0  # samples of that shard read so far
    buffer: list[Address] = field(default_factory=list)  # the shuffle buffer, in order
    rng: dict[str, Any] | None = None  # the generator's state; None: the epoch's fresh generator
    skipped: int = 0  # corrupt samples and unreadable shards counted so far
    delivered: int = 0  # samples delivered in this epoch
    # the packer's parts waiting for the next batch: [epoch, shard position, sample index, kind, offset]
    waiting: list[list[Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))  # (shallow: a snapshot's lists are its own)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamState:
        """A state from a checkpoint, checked: counts and positions are non-negative integers."""
        try:
            state = cls(**data)
            state.buffer = [(int(shard), int(sample)) for shard, sample in state.buffer]
            state.waiting = [_waiting_part(*entry) for entry in state.waiting]
            counts = [state.epoch, state.shard, state.sample, state.skipped, state.delivered]
            numbers = counts + [n for address in state.buffer for n in address]
            numbers += [n for entry in state.waiting for n in entry if not isinstance(n, str)]
            if not all(isinstance(n, int) and n >= 0 for n in numbers) or not isinstance(
                state.rng, dict | None
            ):
                raise ValueError("a count or position that is not a non-negative integer")
        except (TypeError, ValueError) as error:
            raise ValueError(f"malformed data stream state in the checkpoint: {error}") from None
        return state


def _waiting_part(epoch: Any, position: Any, index: Any, kind: Any, offset: Any) -> list[Any]:
    if kind not in MODALITIES:
        raise ValueError(f"a waiting part's kind that is not one of {', '.join(MODALITIES)}: {kind!r}")
    return [int(epoch), int(position), int(index), kind, int(offset)]


class StreamMark:
    """Which reader made a batch (its place among the rank's dataloader workers), and its
    stream's state right after the batch (``StreamState.to_dict()``). A plain object, not a
    collection, so that device transfers and memory pinning pass it by instead of walking its
    thousand buffer addresses on every step."""

    __slots__ = ("role", "state")

    def __init__(self, role: int, state: dict[str, Any]):
        self.role, self.state = role, state


@dataclass
class ResumePoint:
    """Where a rank's training stream continues: how many of its batches have been trained on,
    and each reader's stream state after the last of them (None: the reader has not started)."""

    consumed: int = 0
    streams: list[dict[str, Any] | None] = field(default_factory=list)

    def advance(self, mark: StreamMark) -> None:
        self.streams[mark.role] = mark.state
        self.consumed += 1


def epoch_generator(seed: int, epoch: int, reader: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([seed, epoch, reader]))


class SampleStream:
    """One reader's samples: endless and shuffled for training, one pass in file order otherwise.

    ``keep(meta)`` says whether a sample belongs to this stream's split; ``state`` continues a
    stream where a previous one stood (its ``snapshot``); ``records`` (by URL) are the shards'
    sizes and sha256s to check them against as they are read.
    """

    def __init__(
        self,
        urls: list[str],
        reader: int,
        readers: int,
        keep: Callable[[dict], bool],
        budget: ErrorBudget,
        seed: int = 0,
        buffer_size: int = 1000,
        training: bool = True,
        state: StreamState | None = None,
        storage_options: dict[str, Any] | None = None,
        records: dict[str, ShardRecord] | None = None,
    ):
        if not urls:
            raise ValueError("no shards to read")
        self.urls, self.reader, self.readers = urls, reader, readers
        self.keep, self.budget, self.seed = keep, budget, seed
        self.buffer_size = buffer_size if training else 0
        self.training, self.storage_options = training, storage_options
        self.records = records or {}
        self.state = state or StreamState()
        self.budget.count = self.state.skipped
        self.rng = epoch_generator(seed, self.state.epoch, reader)
        if self.state.rng is not None:
            self.rng.bit_generator.state = self.state.rng
        self._buffer: list[tuple[Address, dict]] = []
        self.source: tuple[int, int, int] = (0, 0, 0)  # the last delivered sample's epoch and address

    def shards(self, epoch: int) -> list[str]:
        """The epoch's shards for this reader, in reading order."""
        order = list(self.urls)
        if self.training:
            order = [order[i] for i in np.random.default_rng([self.seed, epoch]).permutation(len(order))]
        return order[self.reader :: self.readers] if len(order) >= self.readers else order

    def snapshot(self) -> StreamState:
        """The state after the last delivered sample."""
        state = self.state
        return StreamState(
            epoch=state.epoch,
            shard=state.shard,
            sample=state.sample,
            buffer=[address for address, _ in self._buffer],
            rng=self.rng.bit_generator.state,
            skipped=self.budget.count,
            delivered=state.delivered,
        )

    def fetch(self, epoch: int, position: int, index: int) -> dict:
        """The sample at ``(position, index)`` of an epoch's shards, read again (a restored
        packer's waiting parts are samples delivered before the checkpoint)."""
        return self._reread(self.shards(epoch), [(position, index)])[0][1]

    def __iter__(self) -> Iterator[dict]:
        state = self.state
        while True:
            shards = self.shards(state.epoch)
            self._buffer = self._reread(shards, state.buffer)
            state.buffer = []
            reading = self._read(shards)
            while True:
                while len(self._buffer) < max(self.buffer_size, 1):
                    item = next(reading, None)
                    if item is None:
                        break
                    self._buffer.append(item)
                if not self._buffer:
                    break
                pick = int(self.rng.integers(len(self._buffer))) if self.buffer_size else 0
                address, sample = self._buffer[pick]
                self._buffer[pick] = self._buffer[-1]
                self._buffer.pop()
                self.source = (state.epoch, *address)
                state.delivered += 1
                yield sample
            if not self.training:
                return
            if not state.delivered:
                raise RuntimeError(
                    f"reader {self.reader} of {self.readers} found no training sample in a whole pass over "
                    f"its {len(shards)} of {len(self.urls)} shards; use fewer data.num_workers or devices, "
                    "a smaller data.val_fraction, or a larger corpus"
                )
            state.epoch, state.shard, state.sample, state.delivered = state.epoch + 1, 0, 0, 0
            self.rng = epoch_generator(self.seed, state.epoch, self.reader)

    def _mine(self, position: int, index: int) -> bool:
        """Whether this reader owns a sample (always, when it has whole shards to itself)."""
        return len(self.urls) >= self.readers or (position + index) % self.readers == self.reader

    def _read(self, shards: list[str]) -> Iterator[tuple[Address, dict]]:
        """This reader's samples of its split from the state's read position on, in file order.
        The position moves past every sample read, kept or not, so that what was counted before
        a snapshot is never read (and counted) again after it is restored."""
        state = self.state
        while state.shard < len(shards):
            position, url = state.shard, shards[state.shard]
            try:
                samples = tar_samples(url, state.sample, self.storage_options, self.records.get(url))
                for index, sample in enumerate(samples, state.sample):
                    state.sample = index + 1
                    if self._mine(position, index) and self._accepted(url, sample):
                        yield (position, index), sample
            except ShardError as error:
                if self._mine(position, state.sample):  # once: by the reader of the damaged sample
                    self.budget(f"shard {url} from sample {state.sample}", error)
            state.shard, state.sample = position + 1, 0

    def _accepted(self, url: str, sample: dict) -> bool:
        try:
            return self.keep(read_meta(sample))
        except InvalidSample as error:
            self.budget(f"sample {sample['__key__']} of {url}", error)
            return False

    def _reread(self, shards: list[str], addresses: list[Address]) -> list[tuple[Address, dict]]:
        """The samples at ``addresses`` (a restored buffer), read again from their shards."""
        if any(not 0 <= position < len(shards) for position, _ in addresses):
            raise ShardError(f"the stream state names a shard beyond this reader's {len(shards)}")
        found: dict[Address, dict] = {}
        for position in sorted({p for p, _ in addresses}):
            wanted = {i for p, i in addresses if p == position}
            start = min(wanted)
            for index, sample in enumerate(tar_samples(shards[position], start, self.storage_options), start):
                if index in wanted:
                    found[(position, index)] = sample
                if index >= max(wanted):
                    break
        missing = [a for a in addresses if a not in found]
        if missing:
            raise ShardError(f"the shards changed since the checkpoint: no sample at {missing[:3]}")
        return [(address, found[address]) for address in addresses]
