"""A pre-training progress bar against the bound that really ends the run.

Lightning's bar counts steps towards ``trainer.max_steps``. A run bounded by time
(``trainer.max_time``) with a large step cap, as the demo's 10 minutes with 100,000 steps,
then shows ``1208/100000 [08:23<11:25:43]``: a wait of hours for a run that ends in minutes.
This bar shows the share of whichever bound comes first, and the time left until it.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Timer
from tqdm import tqdm


def budget_progress(
    steps: int, max_steps: int, seconds: float, max_seconds: float | None, seconds_per_step: float | None
) -> tuple[float, float | None]:
    """(fraction done, seconds left) of a run that stops at ``max_steps`` or after
    ``max_seconds``, whichever comes first; seconds left is None until a step's time is known."""
    by_steps = steps / max_steps if max_steps > 0 else 0.0
    by_time = seconds / max_seconds if max_seconds else 0.0
    left = []
    if seconds_per_step is not None and max_steps > 0:
        left.append(max(max_steps - steps, 0) * seconds_per_step)
    if max_seconds:
        left.append(max(max_seconds - seconds, 0.0))
    return min(max(by_steps, by_time), 1.0), (min(left) if left else None)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, second = divmod(round(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}" if hours else f"{minute:02d}:{second:02d}"


class BudgetProgressBar(L.Callback):
    """Shows ``pre-training: 42%|████      | step 1208/100000, 04:12<05:48, loss 3.21``."""

    def __init__(self, timer: Timer | None):
        self.timer = timer
        self._bar: tqdm | None = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._bar = tqdm(
            total=1000, desc="pre-training", bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}"
        )
        self._first_step, self._started = trainer.global_step, time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._bar is None:
            return
        run_seconds, run_steps = time.monotonic() - self._started, trainer.global_step - self._first_step
        if self.timer is not None:
            seconds = self.timer.time_elapsed("train")
            max_seconds = seconds + (self.timer.time_remaining("train") or 0.0)
        else:
            seconds, max_seconds = run_seconds, None
        fraction, left = budget_progress(
            trainer.global_step,
            trainer.max_steps,
            seconds,
            max_seconds,
            run_seconds / run_steps if run_steps else None,
        )
        loss = trainer.callback_metrics.get("train/loss")
        shown = f", loss {float(loss):.3f}" if loss is not None else ""
        self._bar.set_postfix_str(
            f"step {trainer.global_step}/{trainer.max_steps}, {_clock(run_seconds)}<{_clock(left)}{shown}",
            refresh=False,
        )
        self._bar.n = round(fraction * 1000)
        self._bar.refresh()

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
