"""Training end to end on tiny real shards: regimens, overfitting, resume, DDP, bad data."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from omegaconf import OmegaConf

from pixeltext_render.schema import decode_sample
from pixeltext_train.data import (
    Regimen,
    SequenceSpec,
    ShardDataModule,
    StripSequences,
    make_sequence,
    shard_urls,
)
from pixeltext_train.module import PixelTextLM
from pixeltext_train.train import train

REPO = Path(__file__).resolve().parents[2]


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def losses_at(run_dir: Path, column: str = "train/loss") -> dict[int, float]:
    return {int(row["step"]): float(row[column]) for row in metrics(run_dir) if row.get(column)}


@pytest.mark.parametrize(
    ("experiment", "patch", "token"),
    [
        ("pixel_text", True, True),
        ("pixel", True, False),
        ("text", False, True),
        ("pixel_text_unpaired", True, True),
    ],
)
def test_each_experiment_trains_a_few_steps(make_config, tmp_path, experiment, patch, token):
    cfg = make_config(f"experiment={experiment}", "trainer.max_steps=3")
    assert cfg.name == experiment
    train(cfg, tmp_path)
    rows = metrics(tmp_path)
    assert any(r.get("train/loss") for r in rows) and any(r.get("val/loss") for r in rows)
    assert any(r.get("train/patch_loss") for r in rows) == patch
    assert any(r.get("train/token_loss") for r in rows) == token
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_pair_sequences_keep_the_tokens_of_exactly_the_patches_kept(tiny_shards):
    sample = decode_sample(
        next(iter(wds.WebDataset(str(tiny_shards / "shard-000000.tar"), shardshuffle=False)))
    )
    spec = SequenceSpec(max_positions=100, patch_size=16, bos_id=256, pad_id=258)
    ids, patches = make_sequence(sample, "pair", spec)
    k = len(patches)
    assert ids[0] == 256 and k + len(ids) <= 100
    kept = len(ids) - 1
    assert (sample.token_patches[:kept, 1] < k).all()  # every kept token lies in the kept patches
    assert kept == len(sample.token_ids) or sample.token_patches[kept, 1] >= k  # and no more fit
    text, none = make_sequence(sample, "text", spec)
    assert none is None and text[0] == 256 and np.array_equal(text[1:], sample.token_ids[:99])


def test_a_tiny_model_overfits_a_handful_of_strips(tiny_shards):
    data = ShardDataModule(str(tiny_shards), batch_size=4, num_workers=0, max_positions=128)
    batch = next(iter(data._dataset(training=True)))
    torch.manual_seed(0)
    tiny = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "tiny.yaml"))
    module = PixelTextLM(
        model={**tiny, "vocab_size": data.vocab_size, "max_positions": 128}, bos_id=data.spec.bos_id
    )
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = module.losses(batch)["loss"]
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 4, (first, loss.item())  # falls by more than 4x


def test_stop_and_resume_gives_the_same_loss_as_an_uninterrupted_run(make_config, tmp_path):
    common = [
        "experiment=pixel_text",
        "trainer.max_steps=6",
        "optimizer.schedule_steps=6",
        "data.num_workers=2",
    ]
    train(make_config(*common), tmp_path / "whole")
    train(make_config(*common, "trainer.max_steps=3"), tmp_path / "first")
    resumed = tmp_path / "second"
    train(make_config(*common, f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"), resumed)
    whole, second = losses_at(tmp_path / "whole"), losses_at(resumed)
    assert sorted(second) == [3, 4, 5]
    for step in (3, 4, 5):
        assert second[step] == pytest.approx(whole[step], rel=1e-5), step


def test_resume_true_continues_the_newest_run_of_the_experiment(make_config, tmp_path):
    runs = tmp_path / "outputs" / "pixel"
    train(make_config("experiment=pixel", "trainer.max_steps=2"), runs / "run-1")
    train(make_config("experiment=pixel", "trainer.max_steps=4", "resume=true"), runs / "run-2")
    assert sorted(losses_at(runs / "run-2")) == [2, 3]


@pytest.mark.slow
def test_two_process_ddp_on_cpu_completes(tiny_shards, tmp_path):
    command = [
        sys.executable,
        "train/run.py",
        "experiment=pixel_text",
        "model=tiny",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_steps=3",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        f"data.shards={tiny_shards}",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.val_fraction=0.2",
        f"hydra.run.dir={tmp_path}",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert max(losses_at(tmp_path)) == 2
    assert (tmp_path / ".hydra" / "config.yaml").is_file()  # the composed config


def test_ranks_and_workers_read_different_samples(tiny_shards):
    data = ShardDataModule(str(tiny_shards), batch_size=1, num_workers=0, max_positions=64)
    streams = [
        StripSequences(
            data.urls,
            data.spec,
            Regimen(1, 0, 0),
            1,
            training=False,
            val_fraction=1.0,
            rank=rank,
            world_size=2,
        )
        for rank in (0, 1)
    ]
    firsts = [[b.patches[0].numpy().tobytes() for b in stream] for stream in streams]
    assert firsts[0] and firsts[1] and not set(firsts[0]) & set(firsts[1])


def test_corrupt_samples_and_shards_are_counted_not_fatal(tiny_shards, tmp_path):
    dirty = tmp_path / "dirty"
    shutil.copytree(tiny_shards, dirty)
    shard = dirty / "shard-000000.tar"
    with tarfile.open(shard) as archive:
        members = [(m, archive.extractfile(m).read()) for m in archive.getmembers()]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as archive:
        for info, data in members:
            if info.name.endswith(".png") and info.name == next(
                m.name for m, _ in members if m.name.endswith(".png")
            ):
                data = b"not a png at all"
                info.size = len(data)
            archive.addfile(info, __import__("io").BytesIO(data))
    broken = dirty / "shard-000001.tar"
    broken.write_bytes(broken.read_bytes()[:1500])  # truncated mid-member
    data = ShardDataModule(str(dirty), batch_size=1, num_workers=0, max_positions=64)
    stream = StripSequences(data.urls, data.spec, Regimen(1, 0, 0), 1, training=False, val_fraction=1.0)
    assert len(list(stream)) > 10 and stream.errors.count >= 2
    strict = StripSequences(
        data.urls, data.spec, Regimen(1, 0, 0), 1, training=False, val_fraction=1.0, max_errors=0
    )
    with pytest.raises(RuntimeError, match="corrupt samples or shards"):
        list(strict)


def test_s3_shards_and_manifest_are_read_through_the_aws_cli():
    manifest = {"shards": [{"name": "shard-000000.tar"}]}
    assert shard_urls("s3://bucket/shards/", manifest) == [
        "pipe:aws s3 cp s3://bucket/shards/shard-000000.tar -"
    ]
    assert shard_urls("/data/shards", manifest) == ["/data/shards/shard-000000.tar"]
