"""Two processes on the CPU (gloo): data parallel and fully sharded runs, resumed exactly, and
sharded training computing what data-parallel training computes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from pixeltext_train.checkpoints import load_plain

from numerics import close

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "metrics.csv") as handle:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")}


@pytest.fixture(scope="module")
def launch(tiny_overrides, tmp_path_factory):
    """Run train/run.py on two CPU processes with a trainer config (once per name); the run folder."""
    out = tmp_path_factory.mktemp("distributed")

    def run(name: str, trainer: str, *overrides: str) -> Path:
        if (out / name / "checkpoints" / "last.ckpt").is_file():
            return out / name
        command = [
            sys.executable,
            "train/run.py",
            *tiny_overrides,
            "experiment=pixel_text",
            f"trainer={trainer}",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32-true",
            "trainer.limit_val_batches=1",
            "data.batch_size=2",
            "optimizer.schedule_steps=6",
            f"hydra.run.dir={out / name}",
            *overrides,
        ]
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return out / name

    return run


@pytest.mark.parametrize("trainer", ["ddp", "fsdp"])
def test_a_two_process_run_resumes_exactly(launch, trainer):
    whole = losses(launch(f"{trainer}-whole", trainer, "trainer.max_steps=6"))
    first = launch(f"{trainer}-first", trainer, "trainer.max_steps=3")
    last = first / "checkpoints" / "last.ckpt"
    assert last.is_file()  # (sharded training, one gathered checkpoint file)
    ranks = load_plain(last)["ShardDataModule"]["ranks"]
    assert len(ranks) == 2 and all(r["consumed"] == 3 and all(r["streams"]) for r in ranks)
    second = losses(launch(f"{trainer}-second", trainer, "trainer.max_steps=6", f"ckpt_path={last}"))
    assert sorted(second) == list(range(6))
    for step in (3, 4, 5):  # rank 0's loss; rank 1's batches shape the weights it is computed with
        assert close(second[step], whole[step]), (trainer, step, second[step], whole[step])


def test_sharded_training_computes_what_data_parallel_training_computes(launch):
    ddp = losses(launch("ddp-whole", "ddp", "trainer.max_steps=6"))
    fsdp = losses(launch("fsdp-whole", "fsdp", "trainer.max_steps=6"))
    assert sorted(fsdp) == sorted(ddp) == list(range(6))
    assert all(close(fsdp[step], ddp[step]) for step in range(6)), (fsdp, ddp)
    saved = load_plain(launch("fsdp-whole", "fsdp", "trainer.max_steps=6") / "checkpoints" / "last.ckpt")
    groups = saved["optimizer_states"][0]["param_groups"]
    decayed = [group for group in groups if group["weight_decay"] > 0]
    linear = 7 * 2 + 4  # per block q, k, v, o, gate, up, down; the three heads; the patch projection
    assert len(decayed) == 1 and len(decayed[0]["params"]) == linear  # decided before sharding
