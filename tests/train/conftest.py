"""Tiny real shards, made once by the render job, for the training tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pixeltext_render.corpora import default_corpus
from pixeltext_render.pipeline import RenderJob, run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    """24 Wikipedia articles cut to 3,000 characters, byte tokens, about 6 strips per shard."""
    folder = tmp_path_factory.mktemp("train-corpus")
    with open(default_corpus(), encoding="utf-8") as lines:
        articles = [json.loads(line) for _, line in zip(range(24), lines, strict=False)]
    (folder / "articles.jsonl").write_text(
        "".join(json.dumps({"id": a["id"], "text": a["text"][:3000]}) + "\n" for a in articles),
        encoding="utf-8",
    )
    out = tmp_path_factory.mktemp("tiny-shards")
    run(
        RenderJob((str(folder / "articles.jsonl"),), str(out), tokenizer="bytes", shard_samples=6),
        workers=1,
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def make_config(tiny_shards):
    """Compose conf/ as ``train/run.py`` would, for a tiny CPU run on the tiny shards."""

    def make(*overrides: str):
        base = [
            "model=tiny",
            "trainer=cpu",
            f"data.shards={tiny_shards}",
            "data.batch_size=4",
            "data.num_workers=0",
            "data.val_fraction=0.2",
            "trainer.val_check_interval=1000",
            "trainer.limit_val_batches=2",
            "trainer.log_every_n_steps=1",
            "trainer.enable_progress_bar=false",
        ]
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose("config", overrides=[*base, *overrides])

    return make
