"""Training end to end on tiny real shards: regimens, sequences, overfitting, data split."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from omegaconf import OmegaConf

from pixeltext_render.format.sample import decode_sample
from pixeltext_train.data.batches import collate
from pixeltext_train.data.datamodule import ShardDataModule
from pixeltext_train.data.dataset import StripSequences
from pixeltext_train.data.regimen import Regimen
from pixeltext_train.data.sequences import SequenceSpec, make_sequence
from pixeltext_train.losses import targets
from pixeltext_train.module import PixelTextLM
from pixeltext_train.train import train

REPO = Path(__file__).resolve().parents[2]


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


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
    padding = [float(r["train/padding_fraction"]) for r in rows if r.get("train/padding_fraction")]
    speed = [float(r["train/real_positions_per_s"]) for r in rows if r.get("train/real_positions_per_s")]
    assert len(padding) == len(speed) == 3 and all(0 <= p < 1 for p in padding) and min(speed) > 0


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


def test_the_end_patch_is_an_input_and_a_target_when_asked(tiny_shards):
    """``data.end_patch``: a strip whose text patches fit keeps its black end patch after them,
    and the next-patch loss then predicts it from the last text patch."""
    reader = wds.WebDataset(str(tiny_shards / "shard-000000.tar"), shardshuffle=False)
    for sample in (decode_sample(raw) for _, raw in zip(range(6), reader, strict=False)):
        n = sample.num_text_patches
        for room in (n + 1, n + 40, max(n - 3, 2)):
            spec = SequenceSpec(room, 16, 256, 258, end_patch=True)
            _, pixel = make_sequence(sample, "pixel", spec)
            assert len(pixel) == (n + 1 if n + 1 <= room else min(n, room))
            assert (pixel[-1] == 0).all() == (n + 1 <= room)  # black: the end patch
            ids, pair = make_sequence(sample, "pair", spec)
            assert len(ids) + len(pair) <= room
            assert (pair[-1] == 0).all() == (len(pair) == n + 1)
            assert len(pair) == n + 1 or len(ids) - 1 < len(sample.token_ids) or len(pair) < n
        plain = make_sequence(sample, "pixel", SequenceSpec(n + 40, 16, 256, 258))[1]
        assert len(plain) == n and not (plain[-1] == 0).all()
    batch = collate([("pixel", np.zeros(0, np.int64), pixel)], spec)
    patch_where, _ = targets(batch, 256)
    assert bool(patch_where[0, len(pixel) - 2])  # the last text patch predicts the end patch


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


@pytest.mark.parametrize(
    ("experiment", "regimen"),
    [
        ("paper_pixel", (1, 0, 0)),
        ("paper_text", (0, 1, 0)),
        ("paper_pixel_text_unpaired", (1, 1, 0)),
        ("paper_pixel_text", (1, 1, 1)),
    ],
)
def test_the_paper_recipes_compose_into_runs_the_trainer_accepts(tiny_shards, experiment, regimen):
    from hydra import compose, initialize_config_dir

    from pixeltext_train.train import build

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}", f"data.shards={tiny_shards}"])
    assert cfg.name == experiment and tuple(cfg.data.regimen.values()) == regimen
    assert cfg.trainer.precision == "bf16-mixed" and cfg.model.max_positions == 1024
    with torch.device("meta"):  # (the paper's 350 M parameters, not allocated)
        data, module = build(cfg)
    c = module.config  # the released checkpoints' shape
    assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.intermediate_size) == (
        24,
        1024,
        16,
        8,
        2816,
    )
    assert data.spec.max_positions == 1024 and data.packing
