"""Shared fixtures: real renderers, tiny real shards made by the render job, Hydra configs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pixeltext_render import Renderer
from pixeltext_render.corpora import default_corpus, django_catalogue, wikipedia_articles
from pixeltext_render.pipeline import RenderJob, run

# A real sentence, translated by people, that every language of the sample catalogues has.
SENTENCE = "Upload a valid image. The file you uploaded was either not an image or a corrupted image."


@pytest.fixture(scope="session")
def renderer() -> Renderer:
    """The default renderer: paper geometry, Noto fallback chain, SentencePiece tokens."""
    return Renderer()


@pytest.fixture(scope="session")
def byte_renderer() -> Renderer:
    return Renderer(tokenizer="bytes")


@pytest.fixture(scope="session")
def articles() -> list[dict[str, str]]:
    """A few real English Wikipedia articles (cleaned)."""
    return list(itertools.islice(wikipedia_articles(), 3))


@pytest.fixture(scope="session")
def sentences() -> dict[str, str]:
    """The same real sentence in many languages and scripts (Django's translators' work)."""
    languages = ["ar", "bn", "el", "he", "hi", "ja", "ko", "ru", "th", "zh_Hans", "ka", "hy", "km", "ml"]
    return {lang: django_catalogue(lang)[SENTENCE] for lang in languages} | {"en": SENTENCE}


REPO = Path(__file__).resolve().parents[1]


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
def tiny_overrides(tiny_shards) -> list[str]:
    """The Hydra overrides of a tiny CPU run on the tiny shards."""
    return [
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


@pytest.fixture(scope="session")
def make_config(tiny_overrides):
    """Compose conf/ as ``train/run.py`` would, for a tiny CPU run on the tiny shards."""

    def make(*overrides: str):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose("config", overrides=[*tiny_overrides, *overrides])

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(make_config, tmp_path_factory) -> Path:
    """A ``model=tiny`` checkpoint pre-trained for a few steps on the tiny shards."""
    from pixeltext_train.train import train

    run_dir = tmp_path_factory.mktemp("tiny-run")
    train(make_config("experiment=pixel_text", "trainer.max_steps=5"), run_dir)
    return run_dir / "checkpoints" / "last.ckpt"
