"""Continuing a run: which checkpoint, whether this run may continue it, and what it logged.

A run may continue a checkpoint only if its composed config is the checkpoint's run config
(stored in the checkpoint) up to the keys in ``MAY_CHANGE`` (how long to train, how often to
log and save, where the shards are read from), and its shards hold the same data (manifest
content, render and tokenizer fingerprints). Anything else would make the resumed steps differ
from an uninterrupted run's, so it is refused with the list of differences.
"""

from __future__ import annotations

import csv
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from pixeltext_train.checkpoints import CheckpointError, load_pretraining
from pixeltext_train.data.batches import packing_mode

log = logging.getLogger(__name__)
LAST = "last.ckpt"
METRICS = "metrics.csv"
TENSORBOARD = "tensorboard"
STREAM_STATE = "ShardDataModule"  # where Lightning keeps the data module's state in a checkpoint
MAY_CHANGE = (
    "resume",
    "ckpt_path",
    "init_from",  # where the first run's weights came from; a resumed run has its own
    "checkpoint_every",
    "tensorboard",
    "callbacks",
    "data.shards",  # the location; what the shards hold must match (shards.*)
    "data.storage_options",
    "data.max_errors",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.val_check_interval",
    "trainer.limit_val_batches",
    "trainer.log_every_n_steps",
    "trainer.enable_progress_bar",
    "trainer.compile",  # the same computation, compiled or not
    "model.attention",  # the same attention, by another kernel
    "model.activation_checkpointing",  # the same activations, kept or recomputed
)


class ResumeError(ValueError):
    """This run cannot continue that checkpoint; the message lists what differs."""


@dataclass(frozen=True)
class Resume:
    checkpoint: Path
    step: int  # optimizer steps the checkpoint has taken
    run_dir: Path | None  # the run folder that wrote it, when it is laid out as train/run.py does


def run_identity(cfg: DictConfig, shards: dict[str, str]) -> dict[str, Any]:
    """The settings a continuing run must share, flattened to dotted keys, with what the shards
    hold (``ShardDataModule.identity``) under ``shards.``."""
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    identity = {key: value for key, value in flat.items() if not _may_change(key)}
    if "data.num_workers" in identity:  # 0 (in the main process) and 1 are both one reader per rank
        identity["data.num_workers"] = max(identity["data.num_workers"], 1)
    return _canonical(identity) | {f"shards.{key}": value for key, value in shards.items()}


def _canonical(identity: dict[str, Any]) -> dict[str, Any]:
    """``data.packing`` by its meaning: a checkpoint whose run said ``true`` continues under ``whole``."""
    if "data.packing" in identity:
        identity = identity | {"data.packing": packing_mode(identity["data.packing"])}
    return identity


def _may_change(key: str) -> bool:
    return any(key == name or key.startswith(f"{name}.") for name in MAY_CHANGE)


def differences(saved: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """How a checkpoint's run differs from this one, one line per setting."""
    before = saved["hyper_parameters"].get("run")
    if not isinstance(before, dict) or not isinstance(saved.get(STREAM_STATE), dict):
        return [
            "the checkpoint records no run config or data stream state (written by an older pixeltext, "
            "or not by train/run.py): start a new run from its weights instead, with init_from=PATH"
        ]
    lines, before = [], _canonical(before)
    for key in sorted(set(before) | set(identity)):
        if before.get(key) != identity.get(key):
            was, now = before.get(key, "(unset)"), identity.get(key, "(unset)")
            lines.append(f"{key}: {was} in the checkpoint's run, {now} now")
    return lines


def find_checkpoint(cfg: DictConfig, run_dir: Path, identity: dict[str, Any]) -> Resume | None:
    """``ckpt_path`` if given (it must be compatible); with ``resume=true``, the newest
    checkpoint (``last.ckpt`` or ``step=*.ckpt``) among this run folder and its siblings
    (earlier runs of the name) that loads and is compatible; each newer one skipped is logged
    with the reason (damaged, or from another config)."""
    if cfg.ckpt_path:
        path = Path(cfg.ckpt_path)
        saved = load_pretraining(path)
        problems = differences(saved, identity)
        if problems:
            raise ResumeError(
                f"cannot resume from {path}: this run differs from the one that wrote it:\n  "
                + "\n  ".join(problems)
                + "\n(set those keys as that run had them; its config is in its .hydra/config.yaml)"
            )
        return _resume(path, saved)
    if not cfg.resume:
        return None
    refused = []
    for path in _newest_first(run_dir.parent.glob("*/checkpoints/*.ckpt")):
        try:
            saved = load_pretraining(path)
        except CheckpointError as error:
            refused.append(f"{path}:\n    {error}")
            continue
        problems = differences(saved, identity)
        if not problems:
            for skipped in refused:
                log.warning("resume=true: skipping %s", skipped)
            return _resume(path, saved)
        refused.append(f"{path}:\n    " + "\n    ".join(problems))
    if not refused:
        raise FileNotFoundError(f"resume=true, but no */checkpoints/*.ckpt under {run_dir.parent}")
    raise ResumeError(
        f"resume=true, but no checkpoint under {run_dir.parent} loads and suits this config:\n  "
        + "\n  ".join(refused)
    )


def _newest_first(paths: Iterable[Path]) -> list[Path]:
    """Checkpoints newest first; of those written together, ``last.ckpt`` first."""
    return sorted(paths, key=lambda path: (path.stat().st_mtime, path.name == LAST), reverse=True)


def _resume(path: Path, saved: dict[str, Any]) -> Resume:
    folder = path.parent.parent
    return Resume(
        path, int(saved.get("global_step", 0)), folder if path.parent.name == "checkpoints" else None
    )


def metrics_history(resume: Resume | None) -> list[dict[str, str]]:
    """The rows its run logged before the checkpoint's step (a resumed run redoes the rest)."""
    if resume is None or resume.run_dir is None or not (resume.run_dir / METRICS).is_file():
        return []
    with open(resume.run_dir / METRICS, newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if int(float(row["step"])) < resume.step]


@rank_zero_only  # (every rank runs train(); one copies)
def carry_tensorboard(resume: Resume | None, run_dir: Path) -> None:
    """Copy the earlier run's TensorBoard events into this run's (the writer purges the redone steps)."""
    if resume is None or resume.run_dir is None or resume.run_dir.resolve() == Path(run_dir).resolve():
        return
    source = resume.run_dir / TENSORBOARD
    if source.is_dir():
        shutil.copytree(source, Path(run_dir) / TENSORBOARD, dirs_exist_ok=True)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and empty dicts are values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
