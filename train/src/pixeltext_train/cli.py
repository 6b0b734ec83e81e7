"""What the command-line entry points (``train/run.py``, ``eval/run.py``, ``eval/influence.py``)
do with a run that cannot go on: a user's mistake (a config value, a path, a file that is not
what it should be) is printed as its message alone and exits 1; a preemption (SIGTERM) exits
``PREEMPTED`` once its checkpoint is written. ``HYDRA_FULL_ERROR=1`` shows the traceback.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

PREEMPTED = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended: a job script requeues on it
# Errors whose message says what to fix (CheckpointError, ManifestError, ResumeError and TaskError
# are ValueErrors; MissingExtra is an ImportError naming the extra to install)
USER_ERRORS = (ValueError, OSError, ImportError, ArithmeticError, OmegaConfBaseException)


class Preempted(Exception):
    """The run stopped on SIGTERM after a whole step and wrote a checkpoint that resumes it."""


def store_defaults(group: str, options: type, set_by_command: tuple[str, ...] = ()) -> None:
    """Offer an options dataclass's defaults to Hydra as ``<group>/options``, which the group's
    files start from (``defaults: [options, _self_]``): the dataclass is the one place the
    defaults and their descriptions live. ``set_by_command``: fields the command fills from
    its own keys (``modality``, ``seed``), left out of the group."""
    node = {
        field.name: field.default if field.default is not MISSING else field.default_factory()
        for field in fields(options)
        if field.name not in set_by_command
    }
    ConfigStore.instance().store(group=group, name="options", node=node)


def check_finite(cfg: DictConfig) -> None:
    """Refuse a config with a float option that is not a finite number (``inf``, ``nan``)."""
    bad = [f"{key}={value}" for key, value in _non_finite(OmegaConf.to_container(cfg, resolve=True))]
    if bad:
        raise ValueError(f"{', '.join(bad)}: every number option must be finite")


def _non_finite(tree: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _non_finite(value, f"{prefix}{key}.")
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from _non_finite(value, f"{prefix}{index}.")
    elif isinstance(tree, float) and not math.isfinite(tree):
        yield prefix.rstrip("."), tree


@contextmanager
def reported(command: str) -> Iterator[None]:
    """Run a command's body, turning a user's mistake into one sentence on stderr (exit 1)."""
    try:
        yield
    except Preempted as stop:
        print(f"{command}: {stop}", file=sys.stderr)
        raise SystemExit(PREEMPTED) from None
    except USER_ERRORS as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"{command}: {error}\n(HYDRA_FULL_ERROR=1 shows where it was raised)", file=sys.stderr)
        raise SystemExit(1) from None
