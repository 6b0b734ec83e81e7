"""Loading checkpoints and the project's other saved files without running code from them.

Every ``torch.load`` in pixeltext goes through :func:`load_plain`: PyTorch's weights-only
unpickler, which rebuilds tensors and plain data (dicts, lists, strings, numbers) and refuses
anything else, so a file from elsewhere cannot execute what it pickles. pixeltext writes its
own files (checkpoints, simulators, TracIn factors) as that plain data.

Training checkpoints are written by :class:`AtomicCheckpointIO`: to a temporary file in the
checkpoint's own folder, then renamed onto its name, so a kill or a full disk leaves either
the old file or the new one, never part of one (a temporary file on another file system, as
fsspec's transactions use, would make the final step a copy).
"""

from __future__ import annotations

import os
import pickle
import re
import uuid
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

PRETRAINING_KEYS = ("state_dict", "hyper_parameters")
MODEL_HPARAMS = ("model", "render", "tokenizer")


class CheckpointError(ValueError):
    """A file that is not what pixeltext expected; the message says what it is instead."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic inside the checkpoint's folder (local paths)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
        try:
            with open(temporary, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


def load_plain(path: str | Path, what: str = "a pixeltext checkpoint") -> dict[str, Any]:
    """The dict saved in ``path``, loaded with ``weights_only=True`` on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty, not {what}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not {what}: not a PyTorch file (torch.save writes zip archives)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # tensors read lazily
    except pickle.UnpicklingError as error:
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(error))
        if unsafe:
            raise CheckpointError(
                f"{path} is not {what}: it holds a Python object ({unsafe.group(1)}) beyond tensors and "
                "plain data, and loading it would run code. pixeltext does not load such files."
            ) from None
        raise CheckpointError(f"{path} is not {what} (not plain PyTorch data: {_detail(error)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not {what} (unreadable: {_detail(error)})") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} is not {what}: it holds a {type(saved).__name__}, not a dict")
    return saved


def load_pretraining(path: str | Path, needs: tuple[str, ...] = MODEL_HPARAMS) -> dict[str, Any]:
    """A pre-training checkpoint (``train/run.py``'s ``.ckpt``): weights, and the ``needs`` of
    its hyperparameters (by default the model config, and the render config and tokenizer of
    its shards)."""
    saved = load_plain(path)
    missing = [key for key in PRETRAINING_KEYS if not isinstance(saved.get(key), dict)]
    hyper = saved.get("hyper_parameters") or {}
    missing += [f"hyper_parameters.{key}" for key in needs if not isinstance(hyper.get(key), dict)]
    if missing:
        raise CheckpointError(
            f"{path} is not a pixeltext pre-training checkpoint: it lacks {', '.join(missing)}"
        )
    return saved


def _detail(error: Exception) -> str:
    """The informative part of a loading error (PyTorch wraps it in advice to load unsafely)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    useful = [line for line in lines if not line.startswith(boilerplate)]
    return (useful or lines or [type(error).__name__])[0]
