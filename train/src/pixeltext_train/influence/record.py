"""Record a run's training dynamics: which samples each step trained on, and how every probe
example's loss moved.

The record is a JSON Lines file in the run directory, one line per event, each written,
flushed and fsync'd before training goes on, so a killed run leaves every finished step on
disk (a torn last line is ignored when reading):

- ``{"event": "start", "probe": [keys], "every": k, "step": s}`` when training (re)starts;
- ``{"step": t, "keys": [...], "lr": ...}`` after each optimizer step t (the samples it used);
- ``{"step": t, "losses": [...]}`` the probe's losses after step t, every k steps and at step 0.

A run resumed from a checkpoint into a new folder starts its file with the record of the run
that wrote the checkpoint (its redone steps are then replaced), so the file holds every step.

The module being trained provides ``example_losses(item) -> Tensor[B]`` and
``example_keys(item)`` for what its dataloaders yield (both pixeltext modules do).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

RECORD = "influence.jsonl"


class InfluenceRecorder(L.Callback):
    """Append each step's sample keys and the probe's per-example losses to ``influence.jsonl``.

    ``probe``: the dataloader items of the fixed probe set; by default the first
    ``probe_size`` examples of the datamodule's validation stream.
    """

    def __init__(
        self, probe_size: int = 32, every: int = 1, filename: str = RECORD, probe: Iterable[Any] | None = None
    ):
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.probe_size, self.every, self.filename = probe_size, every, filename
        self._probe = list(probe) if probe is not None else None
        self._pending: list[str] = []  # keys of micro-batches since the last optimizer step
        self._step = 0
        self._lr: float | None = None  # the rate of the optimizer step being taken
        self._handle = None
        self.path: Path | None = None
        self.seconds = 0.0  # time spent recording (the overhead)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._probe is None:
            self._probe = _first_examples(trainer, self.probe_size)
        if not trainer.is_global_zero:
            return
        keys = [key for item in self._probe for key in module.example_keys(item)]
        self.path = Path(trainer.default_root_dir) / self.filename
        earlier = Path(trainer.ckpt_path).parent.parent / self.filename if trainer.ckpt_path else None
        if earlier and earlier.is_file() and not self.path.exists():  # resumed into a new folder
            shutil.copyfile(earlier, self.path)
        _drop_torn_line(self.path)  # a resumed run appends after the last complete record
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (open for the whole run)
        self._step, self._pending = trainer.global_step, []
        self._write({"event": "start", "probe": keys, "every": self.every, "step": self._step})
        if self._step == 0:
            self._write({"step": 0, "losses": self._losses(module)})

    def on_before_optimizer_step(self, trainer: L.Trainer, module: L.LightningModule, optimizer) -> None:
        self._lr = optimizer.param_groups[0]["lr"]  # read here: the scheduler steps before batch end

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, index: int
    ) -> None:
        if not trainer.is_global_zero or self._handle is None:
            return  # (data-parallel runs record rank zero's batches only)
        started = time.perf_counter()
        self._pending += module.example_keys(batch)
        if trainer.global_step != self._step:  # an optimizer step was taken (not mid-accumulation)
            self._step = step = trainer.global_step
            self._write({"step": step, "keys": self._pending, "lr": self._lr})
            self._pending = []
            if step % self.every == 0:
                self._write({"step": step, "losses": self._losses(module)})
        self.seconds += time.perf_counter() - started

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._handle is not None:
            if self._step % self.every:  # the last steps' keys need losses after them
                self._write({"step": self._step, "losses": self._losses(module)})
            self._handle.close()
            self._handle = None

    def _losses(self, module: L.LightningModule) -> list[float]:
        was_training = module.training
        module.eval()
        with torch.no_grad():
            losses = [
                module.example_losses(module.transfer_batch_to_device(item, module.device, 0))
                for item in self._probe
            ]
        module.train(was_training)
        return [round(float(x), 7) for x in torch.cat(losses).cpu()]

    def _write(self, record: dict) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())


def _drop_torn_line(path: Path) -> None:
    """Cut a file back to its last newline (a write that a kill interrupted)."""
    if not path.exists():
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def _first_examples(trainer: L.Trainer, count: int) -> list:
    datamodule = trainer.datamodule
    if datamodule is None:
        raise ValueError("InfluenceRecorder needs probe= (dataloader items) when the run has no datamodule")
    items, seen = [], 0
    for item in islice(datamodule.val_dataloader(), 1000):
        items.append(item)
        seen += len(trainer.lightning_module.example_keys(item))
        if seen >= count:
            break
    if not items:
        raise ValueError("the validation stream is empty: no probe examples to record")
    return items


@dataclass
class Recording:
    """A run's dynamics: probe losses at ``steps`` and the samples trained on between them.

    ``batches[j]`` holds the keys of every sample used after ``steps[j]`` up to and including
    ``steps[j + 1]``: the training examples that moved the losses from row j to row j + 1.
    """

    probe: list[str]
    steps: list[int]
    losses: np.ndarray  # [len(steps), probe]
    batches: list[list[str]]
    lrs: list[float] = field(default_factory=list)  # the learning rate of each transition's last step

    @property
    def transitions(self) -> int:
        return len(self.batches)


def read_recording(path: str | Path) -> Recording:
    """Parse ``influence.jsonl``: a torn last line (a killed run) is ignored, and steps redone
    after a resume replace the earlier ones."""
    probe, keys, losses, lrs = None, {}, {}, {}
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) - 1:
                break  # the write a kill interrupted
            raise ValueError(f"{path}:{number + 1}: not a JSON record") from None
        if record.get("event") == "start":
            if probe is not None and record["probe"] != probe:
                raise ValueError(f"{path}: the probe changed when the run restarted")
            probe = record["probe"]
            for table in (keys, losses, lrs):  # a resume redoes the steps after its checkpoint
                for step in [s for s in table if s > record["step"]]:
                    del table[step]
        elif "keys" in record:
            keys[record["step"]], lrs[record["step"]] = record["keys"], record["lr"]
        elif "losses" in record:
            losses[record["step"]] = record["losses"]
    if probe is None or 0 not in losses:
        raise ValueError(f"{path}: no start record or no step-0 losses; was the recorder attached?")
    steps = sorted(losses)
    batches = [[k for s in range(a + 1, b + 1) for k in keys.get(s, [])] for a, b in pairwise(steps)]
    return Recording(
        probe,
        steps,
        np.array([losses[s] for s in steps], np.float64),
        batches,
        [lrs.get(b) for b in steps[1:]],
    )
