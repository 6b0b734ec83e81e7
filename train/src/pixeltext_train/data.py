"""Streaming the render job's shards into batches of pixel, text and pair sequences.

    shards (local folder or gs://, s3://, http(s):// URL, read with WebDataset's openers)
    -> split across nodes and dataloader workers (by shard, or by sample when shards are few)
    -> samples (WebDataset's tar iterators; a corrupt sample or shard is counted, not fatal)
    -> shuffled through a buffer -> decoded without pickle (``pixeltext_render.schema``)
    -> one sequence per strip, of a kind drawn by the regimen's ratios:
         pixel: the strip's text patches          text: bos + its tokens
         pair:  its patches, bos, then the tokens of exactly the text in those patches
    -> batches right-padded to their longest sequence.

The stream is a function of (seed, epoch, rank, worker) alone, so a resumed run can skip the
batches it already consumed and continue with exactly the next one.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset import tariterators

from pixeltext_render.schema import META, StoredStrip, decode_sample, key_hash

log = logging.getLogger(__name__)
KINDS = ("pixel", "text", "pair")


@dataclass
class Regimen:
    """Relative frequencies of the three kinds of sequence made from strips."""

    pixel: float = 1.0
    text: float = 1.0
    pair: float = 1.0

    def weights(self) -> list[float]:
        weights = [self.pixel, self.text, self.pair]
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"regimen ratios must be >= 0 with a positive sum, got {weights}")
        return weights


class Batch(NamedTuple):
    tokens: torch.Tensor  # int64 [B, L]; bos/pad ids, or 0 at patch positions
    patches: torch.Tensor  # uint8 [B, L, patch_dim]; zeros at token positions
    is_patch: torch.Tensor  # bool [B, L]
    real: torch.Tensor  # bool [B, L]: not padding
    kinds: torch.Tensor  # int64 [B]: index into KINDS
    keys: tuple[str, ...] = ()  # each sequence's sample key and kind, "<key>/<kind>" (influence records)


@dataclass
class SequenceSpec:
    max_positions: int
    patch_size: int
    bos_id: int
    pad_id: int

    @property
    def patch_dim(self) -> int:
        """Values in one RGB patch."""
        return self.patch_size**2 * 3


def readable_url(url: str) -> str:
    """A URL WebDataset's openers read: local paths, http(s), gs, pipe:; s3 through the AWS CLI."""
    return f"pipe:aws s3 cp {url} -" if url.startswith("s3://") else url


def read_manifest(location: str) -> dict[str, Any]:
    with wds.gopen(readable_url(f"{location.rstrip('/')}/manifest.json"), "rb") as stream:
        return json.loads(stream.read())


def shard_urls(location: str, manifest: dict[str, Any]) -> list[str]:
    return [readable_url(f"{location.rstrip('/')}/{shard['name']}") for shard in manifest["shards"]]


def is_validation(document: str, fraction: float) -> bool:
    """A stable split by document: the same documents are held out in every run."""
    return key_hash(document) < fraction * 2**64


def strip_patches(stored: StoredStrip, patch_size: int, count: int) -> np.ndarray:
    """The first ``count`` patches of a strip, each flattened (row, column, channel) [count, D]."""
    pixels = stored.pixels[:, : count * patch_size]
    height = pixels.shape[0]
    patches = pixels.reshape(height, count, patch_size, 3).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(patches.reshape(count, -1))


def make_sequence(stored: StoredStrip, kind: str, spec: SequenceSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """(token ids [n], patches [k, D] or None): patches occupy the first k positions."""
    ids = stored.token_ids.astype(np.int64)
    patches = stored.num_text_patches
    room = spec.max_positions
    if kind == "text":
        return np.concatenate([[spec.bos_id], ids[: room - 1]]), None
    if kind == "pixel":
        return np.zeros(0, np.int64), strip_patches(stored, spec.patch_size, min(patches, room))
    # pair: the most patches k that fit with bos and the tokens lying wholly in those k patches
    reach = np.maximum.accumulate(stored.token_patches[:, 1]) if len(ids) else np.zeros(0, np.int64)
    inside = np.searchsorted(reach, np.arange(patches + 1), side="left")  # tokens within k patches
    k = int(np.flatnonzero(np.arange(patches + 1) + 1 + inside <= room)[-1])
    return np.concatenate([[spec.bos_id], ids[: inside[k]]]), strip_patches(stored, spec.patch_size, k)


def collate(
    sequences: list[tuple[str, np.ndarray, np.ndarray | None]],
    spec: SequenceSpec,
    keys: tuple[str, ...] = (),
) -> Batch:
    lengths = [len(ids) + (0 if patches is None else len(patches)) for _, ids, patches in sequences]
    size, longest = len(sequences), max(max(lengths), 1)
    tokens = np.full((size, longest), spec.pad_id, np.int64)
    pixels = np.zeros((size, longest, spec.patch_dim), np.uint8)
    is_patch = np.zeros((size, longest), bool)
    real = np.zeros((size, longest), bool)
    for row, (_, ids, patches) in enumerate(sequences):
        k = 0 if patches is None else len(patches)
        if k:
            pixels[row, :k] = patches
            tokens[row, :k] = 0
            is_patch[row, :k] = True
        tokens[row, k : k + len(ids)] = ids
        real[row, : lengths[row]] = True
    kinds = torch.tensor([KINDS.index(kind) for kind, _, _ in sequences])
    return Batch(
        torch.from_numpy(tokens),
        torch.from_numpy(pixels),
        torch.from_numpy(is_patch),
        torch.from_numpy(real),
        kinds,
        tuple(keys),
    )


class ErrorBudget:
    """Counts corrupt samples and shards; past ``limit`` the run stops (it is drowning)."""

    def __init__(self, limit: int):
        self.limit, self.count = limit, 0

    def __call__(self, error: Exception) -> bool:
        self.count += 1
        log.warning("skipping corrupt data (%d so far): %r", self.count, error)
        if self.count > self.limit:
            raise RuntimeError(
                f"{self.count} corrupt samples or shards, more than data.max_errors={self.limit}; "
                f"last: {error!r}"
            ) from error
        return True


@dataclass
class StripSequences(IterableDataset):
    """An endless (training) or one-pass (validation) stream of batches from shards."""

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
    skip_batches: int = 0  # batches the DataLoader (all its workers) already delivered
    errors: ErrorBudget = field(init=False)

    def __post_init__(self) -> None:
        super().__init__()
        if not self.urls:
            raise ValueError("no shards to read")
        self.weights = self.regimen.weights()

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # The DataLoader takes batches from its workers in turn, starting with worker 0. Batch
        # i of the whole stream belongs to role i % workers; after `skip_batches`, worker 0 must
        # play the role of the next batch, so roles rotate, and each role skips the batches it
        # made before. (Resuming therefore needs the same number of workers.)
        role = (worker + self.skip_batches) % workers
        slot, slots = self.rank * workers + role, self.world_size * workers
        skip = max(0, -(-(self.skip_batches - role) // workers))
        self.errors = ErrorBudget(self.max_errors)
        epoch = 0
        while True:
            produced = yield from self._epoch(epoch, slot, slots, skip)
            if not self.training:
                return
            if not produced:
                raise RuntimeError(
                    f"no training batch for rank {self.rank}, worker {role} in a whole pass over "
                    f"{len(self.urls)} shards: too few samples for batch_size={self.batch_size}"
                )
            skip = 0
            epoch += 1

    def _epoch(self, epoch: int, slot: int, slots: int, skip: int):
        """Yield one pass's batches; return how many batches the pass made (skipped included)."""
        order = list(self.urls)
        if self.training:
            random.Random(f"{self.seed}/{epoch}").shuffle(order)
        by_shard = len(order) >= slots
        mine = order[slot::slots] if by_shard else order
        samples = tariterators.tarfile_samples(({"url": url} for url in mine), handler=self.errors)
        if not by_shard:
            samples = (s for i, s in enumerate(samples) if i % slots == slot)
        samples = (s for s in samples if self._in_split(s))
        rng = random.Random(f"{self.seed}/{epoch}/{slot}")
        if self.training:
            samples = _shuffled(samples, self.shuffle_buffer, rng)
        batch: list = []
        keys: list[str] = []
        made = 0
        for sample in samples:
            kind = rng.choices(KINDS, self.weights)[0]
            if skip:
                batch.append(None)
            else:
                sequence = self._sequence(sample, kind)
                if sequence is None:
                    continue
                batch.append(sequence)
                keys.append(f"{sample['__key__']}/{sequence[0]}")
            if len(batch) == self.batch_size:
                if skip:
                    skip -= 1
                else:
                    yield collate(batch, self.spec, tuple(keys))
                batch, keys = [], []
                made += 1
        if batch and not skip and not self.training:
            yield collate(batch, self.spec, tuple(keys))
            made += 1
        return made

    def _in_split(self, sample: dict) -> bool:
        try:
            document = json.loads(sample[META])["document"]
        except Exception as error:  # unreadable metadata: a corrupt sample
            self.errors(error)
            return False
        return is_validation(document, self.val_fraction) != self.training

    def _sequence(self, sample: dict, kind: str):
        try:
            stored = decode_sample(sample)
            if kind != "text" and stored.num_text_patches == 0:
                kind = "text"
            return (kind, *make_sequence(stored, kind, self.spec))
        except Exception as error:
            self.errors(error)
            return None


def _shuffled(samples, size: int, rng: random.Random) -> Iterator:
    buffer: list = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        index = rng.randrange(size)
        yield buffer[index]
        buffer[index] = sample
    rng.shuffle(buffer)
    yield from buffer


class ShardDataModule(L.LightningDataModule):
    """Train and validation streams over the render job's shards."""

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
    ):
        super().__init__()
        self.location = str(shards)
        self.batch_size, self.num_workers, self.shuffle_buffer = batch_size, num_workers, shuffle_buffer
        self.regimen = Regimen(**(regimen or {}))
        self.val_fraction, self.max_errors = val_fraction, max_errors
        self.max_positions, self.seed = max_positions, seed
        self.manifest = read_manifest(self.location)
        self.urls = shard_urls(self.location, self.manifest)
        tokenizer = self.manifest["tokenizer"]
        bos = tokenizer["bos_id"] if tokenizer["bos_id"] is not None else 1
        pad = tokenizer["pad_id"] if tokenizer["pad_id"] is not None else 0
        patch = self.manifest["render"]["config"]["patch_size"]
        self.spec = SequenceSpec(max_positions, patch, bos, pad)
        self._consumed = 0  # batches delivered before this run (restored from a checkpoint)

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    def _dataset(self, training: bool) -> StripSequences:
        trainer = self.trainer
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
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            skip_batches=self._consumed if training else 0,
        )

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
        trainer = self.trainer
        consumed = trainer.global_step * trainer.accumulate_grad_batches if trainer else self._consumed
        return {"batches_consumed": int(consumed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._consumed = int(state.get("batches_consumed", 0))
