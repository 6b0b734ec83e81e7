"""Shared fixtures: real renderers, tiny real shards made by the render job, Hydra configs."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from pixeltext_render import Renderer
from pixeltext_render.job.corpora import (
    default_corpus,
    django_catalogue,
    django_languages,
    django_messages,
    wikipedia_articles,
)
from pixeltext_render.job.pipeline import RenderJob, run

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
def multilingual_shards(tmp_path_factory) -> Path:
    """22 short documents in 22 languages (five Django messages each), byte tokens: one shard,
    about 22 strips, so a few steps of batch 4 cross epochs and readers outnumber shards."""
    folder = tmp_path_factory.mktemp("multilingual-corpus")
    documents = [
        {"id": language, "text": " ".join(django_messages(language)[:5])}
        for language in django_languages()[:22]
    ]
    (folder / "short.jsonl").write_text(
        "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in documents), encoding="utf-8"
    )
    out = tmp_path_factory.mktemp("multilingual-shards")
    run(RenderJob((str(folder / "short.jsonl"),), str(out), tokenizer="bytes"), workers=1, progress=False)
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
        "optimizer.warmup_steps=1",
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


def rewrite_tar(path: Path, edit: Callable[[str, str, bytes], bytes]) -> None:
    """Rewrite a shard, each member's bytes replaced by ``edit(key, extension, data)``, and its
    folder's index and manifest to match (as a job that wrote those samples would have)."""
    with tarfile.open(path) as archive:
        members = [(m, archive.extractfile(m).read()) for m in archive.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for info, data in members:
            key, extension = info.name.split(".", 1)
            data = edit(key, extension, data)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    index_path, manifest_path = path.parent / "shards.jsonl", path.parent / "manifest.json"
    records = [json.loads(line) for line in index_path.read_text().splitlines()]
    for record in records:
        if record["name"] == path.name:
            record["bytes"], record["sha256"] = (
                path.stat().st_size,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    index = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records).encode()
    index_path.write_bytes(index)
    manifest = json.loads(manifest_path.read_text())
    manifest["index"]["sha256"] = hashlib.sha256(index).hexdigest()
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


CORRUPTIONS = {  # sample index in the largest shard -> (member, how it breaks the schema)
    0: ("png", lambda data: b"not a png at all"),
    1: ("align.npy", lambda data: _npy(np.zeros((1, 2), np.int32))),  # one row, several tokens
    2: ("tokens.npy", lambda data: _npy(np.load(io.BytesIO(data)) + 100_000)),  # beyond the vocabulary
    3: ("png", lambda data: _png(np.zeros((8, 32), np.uint8))),  # a well-formed PNG of the wrong height
    4: ("json", lambda data: b"[" * 100_000),  # nested past what a parser can follow
    5: ("json", lambda data: data.replace(b'"document": "', b'"document": "\\ud800')),  # a lone surrogate
}


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def corrupt_shards(tiny_shards, tmp_path_factory) -> Path:
    """The tiny shards with samples of the largest shard broken (``CORRUPTIONS``) and shard 1
    cut off inside its first sample: ``len(CORRUPTIONS) + 1`` skips in a pass over every shard."""
    out = tmp_path_factory.mktemp("corrupt-shards") / "shards"
    shutil.copytree(tiny_shards, out)
    shards = [json.loads(line) for line in (out / "shards.jsonl").read_text().splitlines()]
    largest = out / max(shards[2:], key=lambda shard: shard["samples"])["name"]
    with tarfile.open(largest) as archive:
        keys = sorted({m.name.split(".", 1)[0] for m in archive.getmembers()})
    assert len(keys) > max(CORRUPTIONS), f"{largest.name} holds {len(keys)} samples: too few to break"
    broken = {keys[index]: change for index, change in CORRUPTIONS.items()}

    def edit(key: str, extension: str, data: bytes) -> bytes:
        member, change = broken.get(key, (None, None))
        return change(data) if member == extension else data

    rewrite_tar(largest, edit)
    truncated = out / "shard-000001.tar"
    truncated.write_bytes(truncated.read_bytes()[:1500])
    return out


def every_sample(shards: Path, regimen=(1, 0, 0), max_positions: int = 64, **options):
    """A stream of every sample of every shard once, in file order, one per batch (the
    validation split of a 100% split)."""
    from pixeltext_train.data.datamodule import ShardDataModule
    from pixeltext_train.data.dataset import StripSequences
    from pixeltext_train.data.regimen import Regimen

    data = ShardDataModule(
        str(shards), batch_size=1, num_workers=0, max_positions=max_positions, packing=False
    )
    return StripSequences(
        data.urls,
        data.spec,
        Regimen(*regimen),
        1,
        training=False,
        val_fraction=1.0,
        vocab_size=data.vocab_size,
        records=data.records,
        **options,
    )


def custom_task_command(data: Path, checkpoint: str, modality: str, steps: int, out: Path) -> list[str]:
    """``eval/run.py`` fine-tuning ``steps`` steps on ``data`` (JSON Lines with ``t`` and ``y``,
    used for training and validation), results in ``out``."""
    return [
        "eval/run.py",
        "task=custom",
        f"train={data}",
        f"validation={data}",
        "text=t",
        "label=y",
        f"checkpoint={checkpoint}",
        f"modality={modality}",
        f"finetune.max_steps={steps}",
        "finetune.warmup_steps=1",
        f"finetune.eval_every={steps // 2}",
        "finetune.batch_size=8",
        f"hydra.run.dir={out}",
    ]
