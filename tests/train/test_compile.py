"""Compiled blocks (``trainer.compile``) compute what eager ones do, and their checkpoints resume."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pixeltext_train.train import train

from numerics import close

pytestmark = pytest.mark.slow


def losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "metrics.csv") as handle:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")}


def test_a_compiled_run_matches_eager_and_its_checkpoint_resumes_exactly(make_config, tmp_path):
    # short rows and no validation keep the compilation (one block, forward and backward) to ~20 s
    common = ["experiment=pixel_text", "model.max_positions=128", "optimizer.schedule_steps=6"]
    common += ["trainer.limit_val_batches=0"]
    eager = tmp_path / "eager"
    train(make_config(*common, "trainer.max_steps=6", "trainer.compile=false"), eager)
    compiled = tmp_path / "compiled"
    trainer = train(make_config(*common, "trainer.max_steps=4", "trainer.compile=true"), compiled)
    assert all(
        hasattr(block, "_compiled_call_impl") and block._compiled_call_impl
        for block in trainer.lightning_module.model.layers
    )
    whole, first = losses(eager), losses(compiled)
    assert all(close(first[step], whole[step]) for step in range(4)), (first, whole)
    last = compiled / "checkpoints" / "last.ckpt"  # written by compiled blocks, resumed by eager ones
    train(
        make_config(*common, "trainer.max_steps=6", "trainer.compile=false", f"ckpt_path={last}"),
        tmp_path / "r",
    )
    resumed = losses(tmp_path / "r")
    assert sorted(resumed) == list(range(6)) and all(close(resumed[s], whole[s]) for s in (4, 5))
