"""Streaming the render job's shards into batches of pixel, text and pair sequences.

    shards (a local folder or any fsspec URL: https, s3, gs; read in-process, see ``storage``)
    -> one stream per reader (rank x dataloader worker): its shards, or its samples of each
       shard when shards are fewer than readers; the other split passed over (``stream``)
    -> shuffled through a buffer, epoch after epoch
    -> decoded and checked against the schema (``pixeltext_render.schema``); a corrupt sample
       or unreadable shard is counted and skipped, not fatal
    -> one sequence per strip, of a kind drawn by the regimen's ratios:
         pixel: the strip's text patches          text: bos + its tokens
         pair:  its patches, bos, then the tokens of exactly the text in those patches
    -> batches, each carrying its reader's state: packed (``packing``), ``batch_size`` rows of
       ``max_positions`` that several sequences share, each in the first row it fits, padding
       only at the rows' tails; or one sequence per row, right-padded to the longest.

Resuming is exact: the data module keeps, for every reader, the state that came with the last
batch an optimizer step used (``StreamTracker``), and a checkpoint holds them all (every rank's);
a resumed run's readers continue from those states, so it trains on exactly the batches an
uninterrupted run would have, across epochs and whatever data was skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pixeltext_render.config import RenderConfig
from pixeltext_render.schema import InvalidSample, StoredStrip, decode_sample, key_hash
from pixeltext_train.model import Packing
from pixeltext_train.storage import ShardRecord, read_manifest, shard_records, shard_urls
from pixeltext_train.stream import ErrorBudget, SampleStream, StreamState

log = logging.getLogger(__name__)
MODALITIES = ("pixel", "text", "pair")  # what a sequence is made of: pre-training and fine-tuning alike
STATE_VERSION = 2  # the data module's checkpoint state: every reader's stream state


@dataclass
class Regimen:
    """Relative frequencies of the three kinds of sequence made from strips."""

    pixel: float = 1.0
    text: float = 1.0
    pair: float = 1.0

    def __post_init__(self) -> None:
        weights = [self.pixel, self.text, self.pair]
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"data.regimen ratios must be >= 0 with a positive sum, got {weights}")

    def choose(self, rng: np.random.Generator) -> str:
        """A kind of sequence, drawn with the regimen's frequencies."""
        bounds = np.cumsum([self.pixel, self.text, self.pair])
        return MODALITIES[min(int(np.searchsorted(bounds, rng.random() * bounds[-1], side="right")), 2)]


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


class Batch(NamedTuple):
    tokens: torch.Tensor  # int64 [B, L]; bos/pad ids, or 0 at patch positions
    patches: torch.Tensor  # uint8 [B, L, patch_dim]; zeros at token positions
    is_patch: torch.Tensor  # bool [B, L]
    real: torch.Tensor  # bool [B, L]: not padding
    kinds: torch.Tensor  # int64 [S]: each sequence's kind, an index into MODALITIES
    keys: tuple[str, ...] = ()  # each sequence's sample key and kind, "<key>/<kind>" (influence records)
    stream: StreamMark | None = None  # training batches: where their reader's stream stands
    packing: Packing | None = None  # rows holding several sequences; None: one sequence per row


@dataclass
class SequenceSpec:
    max_positions: int
    patch_size: int
    bos_id: int
    pad_id: int
    end_patch: bool = False  # a strip's black end patch is an input (and a target), as the paper's
    eos_id: int | None = None  # with end_patch, a pair whose text is all there ends with eos

    @property
    def patch_dim(self) -> int:
        """Values in one RGB patch."""
        return self.patch_size**2 * 3


def is_validation(document: str, fraction: float) -> bool:
    """A stable split by document: the same documents are held out in every run."""
    return key_hash(document) < fraction * 2**64


def strip_patches(stored: StoredStrip, patch_size: int, count: int) -> np.ndarray:
    """The first ``count`` patches of a strip, each flattened (row, column, channel) [count, D]."""
    pixels = stored.pixels[:, : count * patch_size]
    height = pixels.shape[0]
    patches = pixels.reshape(height, count, patch_size, 3).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(patches.reshape(count, height * patch_size * 3))  # (count may be 0)


def make_sequence(stored: StoredStrip, kind: str, spec: SequenceSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """(token ids [n], patches [k, D] or None): patches occupy the first k positions. With
    ``spec.end_patch``, a strip whose text patches all fit keeps its black end patch after them,
    and a pair that holds the whole strip ends its tokens with ``eos`` (the text ends there in
    both modalities: reading a strip then knows where to stop)."""
    ids = stored.token_ids.astype(np.int64)
    patches = stored.num_text_patches
    room = spec.max_positions
    if kind == "text":
        return np.concatenate([[spec.bos_id], ids[: room - 1]]), None
    end = int(spec.end_patch)
    if kind == "pixel":
        k = patches + end if patches + end <= room else min(patches, room)
        return np.zeros(0, np.int64), strip_patches(stored, spec.patch_size, k)
    # pair: the most patches k that fit with bos and the tokens lying wholly in those k patches
    # (all of them, the end patch and eos, for the whole strip)
    closing = end * (1 + (spec.eos_id is not None))
    reach = np.maximum.accumulate(stored.token_patches[:, 1]) if len(ids) else np.zeros(0, np.int64)
    inside = np.searchsorted(reach, np.arange(patches + 1), side="left")  # tokens within k patches
    fits = np.arange(patches + 1) + 1 + inside + closing * (np.arange(patches + 1) == patches) <= room
    k = int(np.flatnonzero(fits)[-1])
    whole = end and k == patches
    tokens = [[spec.bos_id], ids[: inside[k]], [spec.eos_id] if whole and spec.eos_id is not None else []]
    return np.concatenate(tokens).astype(np.int64), strip_patches(stored, spec.patch_size, k + whole)


Sequence = tuple[str, np.ndarray, np.ndarray | None]  # kind, token ids, patches (first) or None


def length(sequence: Sequence) -> int:
    _, ids, patches = sequence
    return len(ids) + (0 if patches is None else len(patches))


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
        self.rows: list[list] = [[] for _ in range(rows)]
        self.free = [width] * rows

    def add(self, item, size: int) -> bool:
        """Place ``item`` (``size`` positions); False if no row has room for it."""
        for row, room in enumerate(self.free):
            if size <= room:
                self.rows[row].append(item)
                self.free[row] -= size
                return True
        return False

    def take(self) -> list[list]:
        """The rows that hold something, and an empty packer for the next batch."""
        rows = [row for row in self.rows if row]
        self.rows, self.free = [[] for _ in self.rows], [self.width] * len(self.rows)
        return rows


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
    packing: bool = False
    records: dict[str, ShardRecord] | None = None  # each shard's size and sha256, checked as read

    def __post_init__(self) -> None:
        super().__init__()
        if not self.urls:
            raise ValueError("no shards to read")

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
        if self.packing:
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
        """Packed batches: a batch is full when the next sequence fits in none of its rows; that
        sequence opens the next batch, and the batch's resume state is the stream's just before
        that sequence was drawn, so a resumed stream draws it again."""
        packer = RowPacker(self.batch_size, self.spec.max_positions)
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
        return collate_rows(sequences, self.spec, keys, mark if self.training else None, self.packing)

    def _sequence(self, sample: dict, kind: str):
        """``(key, (kind, ids, patches))``, or None for a sample that breaks the schema (counted)."""
        try:
            stored = decode_sample(sample, self.spec.patch_size, self.vocab_size)
        except InvalidSample as error:
            self.errors(f"sample {sample['__key__']} of {sample['__url__']}", error)
            return None
        if kind != "text" and stored.num_text_patches == 0:
            kind = "text"
        return sample["__key__"], (kind, *make_sequence(stored, kind, self.spec))


class StreamTracker(L.Callback):
    """Moves the data module's resume point to each batch once an optimizer step has used it,
    and logs ``train/skipped_samples``. It runs before ``ModelCheckpoint`` (Lightning orders
    checkpoint callbacks last), so a checkpoint holds the stream position of exactly the steps
    its weights have taken, gradient accumulation included."""

    def __init__(self) -> None:
        self._pending: list[StreamMark] = []
        self._step = 0

    @property
    def mid_step(self) -> bool:
        """Whether batches have been trained on that no optimizer step has used yet."""
        return bool(self._pending)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._pending, self._step = [], trainer.global_step

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, index: int) -> None:
        if batch.stream is not None:
            self._pending.append(batch.stream)

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, index: int
    ) -> None:
        data = trainer.datamodule
        if trainer.global_step == self._step or not isinstance(data, ShardDataModule):
            return  # mid-accumulation
        self._step = trainer.global_step
        data.advance(self._pending)
        self._pending = []
        module.log(
            "train/skipped_samples", float(data.skipped), on_step=True, reduce_fx="sum", sync_dist=True
        )


class ShardDataModule(L.LightningDataModule):
    """Train and validation streams over the render job's shards, and the readers' states
    that make a resumed run continue exactly (``state_dict``, in every checkpoint)."""

    def __init__(
        self,
        shards: str,
        batch_size: int = 8,
        num_workers: int = 2,
        shuffle_buffer: int = 1000,
        regimen: dict[str, float] | None = None,
        val_fraction: float = 0.05,
        max_errors: int = 100,
        max_positions: int = 1024,
        seed: int = 0,
        storage_options: dict[str, Any] | None = None,
        packing: bool = True,
        end_patch: bool = False,
    ):
        super().__init__()
        problems = [
            f"data.{name} must be {rule}, got {value}"
            for name, value, ok, rule in (
                ("batch_size", batch_size, batch_size >= 1, "at least 1"),
                ("num_workers", num_workers, num_workers >= 0, "0 or more"),
                ("shuffle_buffer", shuffle_buffer, shuffle_buffer >= 1, "at least 1"),
                (
                    "val_fraction",
                    val_fraction,
                    0 <= val_fraction < 1,
                    "in [0, 1) (1 leaves nothing to train on)",
                ),
                ("max_errors", max_errors, max_errors >= 0, "0 or more"),
            )
            if not ok
        ]
        if problems:
            raise ValueError("; ".join(problems))
        self.location = str(shards)
        self.batch_size, self.num_workers, self.shuffle_buffer = batch_size, num_workers, shuffle_buffer
        self.regimen = Regimen(**(regimen or {}))
        self.val_fraction, self.max_errors = val_fraction, max_errors
        self.max_positions, self.seed = max_positions, seed
        self.storage_options = storage_options or {}
        self.packing = packing
        self.manifest = read_manifest(self.location, self.storage_options)
        self.urls = shard_urls(self.location, self.manifest)
        self.records = shard_records(self.location, self.manifest, self.storage_options)
        tokenizer = self.manifest["tokenizer"]
        bos = tokenizer["bos_id"] if tokenizer["bos_id"] is not None else 1
        pad = tokenizer["pad_id"] if tokenizer["pad_id"] is not None else 0
        patch = RenderConfig.from_dict(self.manifest["render"]["config"]).patch_size
        self.spec = SequenceSpec(max_positions, patch, bos, pad, end_patch, tokenizer.get("eos_id"))
        self.resume_point = ResumePoint(0, [None] * self.readers_per_rank)  # moved by StreamTracker
        self._resumed: dict[str, Any] | None = None  # the state a checkpoint restored

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    @property
    def readers_per_rank(self) -> int:
        return max(self.num_workers, 1)

    @property
    def skipped(self) -> int:
        """Corrupt samples and unreadable shards this rank's training readers have skipped."""
        return sum(state["skipped"] for state in self.resume_point.streams if state)

    def identity(self) -> dict[str, str]:
        """What the shards hold, wherever they are (a resumed run must read the same data, not
        necessarily from the same place): render and tokenizer fingerprints, and a digest of the
        shard list (names, sizes, hashes)."""
        manifest = self.manifest
        return {
            "render_fingerprint": manifest["render"]["fingerprint"],
            "tokenizer_fingerprint": manifest["tokenizer"]["fingerprint"],
            "content": manifest["index"]["sha256"][:16],
        }

    def advance(self, marks: list[StreamMark]) -> None:
        """An optimizer step has used these batches: their readers' states are the resume point."""
        for mark in marks:
            self.resume_point.advance(mark)

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer else (0, 1)

    def _dataset(self, training: bool) -> StripSequences:
        rank, world = self._rank()
        if training and self._resumed:
            self._restore(self._resumed, rank, world)
            self._resumed = None
        return StripSequences(
            self.urls,
            self.spec,
            self.regimen,
            self.batch_size,
            self.seed,
            self.shuffle_buffer,
            training,
            self.val_fraction,
            self.max_errors,
            rank=rank,
            world_size=world,
            vocab_size=self.vocab_size,
            start=self.resume_point if training else None,
            storage_options=self.storage_options,
            packing=self.packing,
            records=self.records,
        )

    def _restore(self, state: dict[str, Any], rank: int, world: int) -> None:
        ranks, readers = state["ranks"], state["readers_per_rank"]
        if len(ranks) != world or readers != self.readers_per_rank:
            raise ValueError(
                f"the checkpoint's data stream was read by {len(ranks)} rank(s) with {readers} reader(s) "
                f"each; this run has {world} with {self.readers_per_rank}. Resume with the same "
                "trainer.devices, trainer.num_nodes and data.num_workers (0 and 1 both mean one reader)"
            )
        self.resume_point = ResumePoint(ranks[rank]["consumed"], list(ranks[rank]["streams"]))

    def _loader(self, dataset: StripSequences) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._dataset(training=True))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset(training=False))

    def state_dict(self) -> dict[str, Any]:
        """Every rank's readers' states (gathered: the checkpoint is written by rank zero alone)."""
        local = {"consumed": self.resume_point.consumed, "streams": list(self.resume_point.streams)}
        ranks = [local]
        world = self._rank()[1]
        if world > 1:
            ranks = [None] * world
            torch.distributed.all_gather_object(ranks, local)
        return {
            "version": STATE_VERSION,
            "shards": self.identity(),
            "readers_per_rank": self.readers_per_rank,
            "ranks": ranks,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                "the checkpoint's data state comes from an older pixeltext that did not record where each "
                "reader stood; it cannot be resumed exactly (start a new run from its weights instead)"
            )
        changed = [key for key, value in self.identity().items() if state["shards"].get(key) != value]
        if changed:
            raise ValueError(
                f"the checkpoint was trained on other shards than {self.location}: "
                f"{', '.join(changed)} differ"
            )
        for rank in state["ranks"]:  # checked here, before any worker starts
            for stream in rank["streams"]:
                if stream is not None:
                    StreamState.from_dict(stream)
        self._resumed = state
