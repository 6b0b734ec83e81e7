"""The training and validation streams Lightning asks for, over the shards a manifest lists,
and the state that makes a resumed run continue exactly: for every rank's readers, the stream
state that came with the last batch an optimizer step used (moved by ``StreamTracker``), in
every checkpoint under the class's name (``resume.STREAM_STATE``: keep the name ``ShardDataModule``,
or older checkpoints no longer resume)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from pixeltext_render.config import RenderConfig
from pixeltext_train.data.batches import packing_mode
from pixeltext_train.data.dataset import StripSequences
from pixeltext_train.data.regimen import Regimen
from pixeltext_train.data.sequences import SequenceSpec
from pixeltext_train.data.stream import ResumePoint, StreamMark, StreamState
from pixeltext_train.storage import read_manifest, shard_records, shard_urls

STATE_VERSION = 2  # the data module's checkpoint state: every reader's stream state


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
        packing: bool | str = True,
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
        self.packing = packing_mode(packing)  # none, whole or split
        self.manifest = read_manifest(self.location, self.storage_options)
        self.urls = shard_urls(self.location, self.manifest)
        self.records = shard_records(self.location, self.manifest, self.storage_options)
        tokenizer = self.manifest["tokenizer"]
        bos = tokenizer["bos_id"] if tokenizer["bos_id"] is not None else 1
        pad = tokenizer["pad_id"] if tokenizer["pad_id"] is not None else 0
        # the strips' geometry and colour mode (the model's channels follow it: train.build)
        self.render_config = RenderConfig.from_dict(self.manifest["render"]["config"])
        patch, channels = self.render_config.patch_size, self.render_config.channels
        self.spec = SequenceSpec(max_positions, patch, bos, pad, end_patch, tokenizer.get("eos_id"), channels)
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
