"""Files from elsewhere: a manifest, a shard, a checkpoint or a config crafted to break the
trainer or to run a command get a clear error or a counted skip, and run nothing."""

from __future__ import annotations

import csv
import functools
import gzip
import http.server
import io
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
import torch
from conftest import CORRUPTIONS, REPO, every_sample

from pixeltext_render.format.folder import ManifestError
from pixeltext_train.checkpoints import CheckpointError, load_plain
from pixeltext_train.data.datamodule import ShardDataModule
from pixeltext_train.evaluate.backbone import load_backbone
from pixeltext_train.export import ExportError, export_checkpoint
from pixeltext_train.module import TrainingDiverged
from pixeltext_train.storage import MissingExtra, read_manifest
from pixeltext_train.train import train


def test_every_broken_sample_and_shard_is_counted_once_and_named(corrupt_shards, tiny_shards, caplog):
    caplog.set_level(logging.WARNING, logger="pixeltext_train.data.stream")
    stream = every_sample(corrupt_shards)
    keys = [key for batch in stream for key in batch.keys]
    clean = [key for batch in every_sample(tiny_shards) for key in batch.keys]
    index = [json.loads(line) for line in (tiny_shards / "shards.jsonl").read_text().splitlines()]
    lost = index[1]["samples"]  # shard 1 is cut inside its first sample
    assert len(keys) == len(clean) - len(CORRUPTIONS) - lost and set(keys) < set(clean)
    assert stream.errors.count == len(CORRUPTIONS) + 1  # the samples and one truncated shard
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == len(CORRUPTIONS) + 1
    assert sum("shard-000001.tar" in m for m in messages) == 1  # the truncated tar, once
    for reason in (
        "undecodable",
        "one row per token",
        "outside the vocabulary",
        "16x",
        "RecursionError",
        "Unicode",
    ):
        assert any(reason in m and ".tar" in m and "sample " in m for m in messages), reason
    with pytest.raises(RuntimeError, match="max_errors=0"):
        list(every_sample(corrupt_shards, max_errors=0))


def test_a_shard_that_is_not_what_its_index_records_is_counted_and_named(tiny_shards, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="pixeltext_train.data.stream")
    shutil.copytree(tiny_shards, tmp_path / "shards")
    clean = [key for batch in every_sample(tiny_shards) for key in batch.keys]
    changed = tmp_path / "shards" / "shard-000002.tar"
    data = bytearray(changed.read_bytes())
    data[-1] ^= 1  # the same size, a tar that still reads: only the sha256 can tell
    changed.write_bytes(bytes(data))
    stream = every_sample(tmp_path / "shards")
    assert [key for batch in stream for key in batch.keys] == clean  # read once, not again
    assert stream.errors.count == 1
    [message] = [r.getMessage() for r in caplog.records]
    assert "shard-000002.tar" in message and "sha256" in message
    caplog.clear()
    cut = tmp_path / "shards" / "shard-000003.tar"
    cut.write_bytes(cut.read_bytes()[:-512])  # a whole block gone: still a tar that ends cleanly
    stream = every_sample(tmp_path / "shards")
    lost = _keys_of(tiny_shards / "shard-000003.tar")
    assert [key for batch in stream for key in batch.keys] == [
        k for k in clean if k.split("/")[0] not in lost
    ]
    assert stream.errors.count == 2  # the size is refused before any of its samples is read
    assert any("shard-000003.tar" in m and "bytes" in m for m in (r.getMessage() for r in caplog.records))


def test_an_index_that_is_not_the_one_the_manifest_records_is_refused(tiny_shards, tmp_path):
    shutil.copytree(tiny_shards, tmp_path / "shards")
    index = tmp_path / "shards" / "shards.jsonl"
    index.write_text(index.read_text().replace('"bytes": ', '"bytes": 1', 1))
    with pytest.raises(ManifestError, match=r"shards\.jsonl is not the index its manifest records"):
        ShardDataModule(str(tmp_path / "shards"), batch_size=1, num_workers=0, max_positions=64)


def _keys_of(shard: Path) -> set[str]:
    with tarfile.open(shard) as archive:
        return {member.name.split(".", 1)[0] for member in archive.getmembers()}


def test_a_compressed_or_oversized_tar_is_an_unreadable_shard(tiny_shards, tmp_path):
    shutil.copytree(tiny_shards, tmp_path / "shards")
    squeezed = tmp_path / "shards" / "shard-000002.tar"
    squeezed.write_bytes(gzip.compress(squeezed.read_bytes()))  # small on disk, large in memory
    with tarfile.open(tmp_path / "shards" / "shard-000003.tar", "w") as archive:
        for number in range(100):  # one sample made of a hundred members
            member = tarfile.TarInfo(f"key.part{number}")
            member.size = 1000
            archive.addfile(member, io.BytesIO(bytes(1000)))
    stream = every_sample(tmp_path / "shards")
    list(stream)
    assert stream.errors.count == 2


def test_training_counts_skipped_samples_in_metrics(make_config, corrupt_shards, tmp_path):
    train(
        make_config(
            "experiment=pixel",
            f"data.shards={corrupt_shards}",
            "data.val_fraction=0.0",
            "trainer.max_steps=20",
            "optimizer.schedule_steps=20",
        ),
        tmp_path,
    )
    with open(tmp_path / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    skipped = [float(r["train/skipped_samples"]) for r in rows if r.get("train/skipped_samples")]
    assert skipped and skipped == sorted(skipped) and skipped[-1] >= 1


def crafted_manifest(tiny_shards: Path, folder: Path, field: str, value: object) -> Path:
    shutil.copytree(tiny_shards, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["index"][field] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("file", "x.jsonl; touch {marker} #"),
        ("file", "../elsewhere/shards.jsonl"),
        ("shards", "3; touch {marker}"),
        ("shards", -1),
        ("shards", True),
    ],
)
def test_a_manifest_can_name_no_file_and_a_crafted_index_is_refused(
    make_config, tiny_shards, tmp_path, field, value
):
    """Shards are named by number from the count; the index entry can only be the count."""
    marker = tmp_path / "ran"
    value = value.format(marker=marker) if isinstance(value, str) else value
    shards = crafted_manifest(tiny_shards, tmp_path / "shards", field, value)
    with pytest.raises(ManifestError, match=rf"index\.{field}") as error:
        train(
            make_config("experiment=pixel", f"data.shards={shards}", "trainer.max_steps=2"), tmp_path / "run"
        )
    assert str(shards / "manifest.json") in str(error.value)
    assert not marker.exists()


def _without_vocabulary(manifest: dict) -> None:
    del manifest["tokenizer"]["vocab_size"]


def _bos_beyond_vocabulary(manifest: dict) -> None:
    manifest["tokenizer"]["bos_id"] = manifest["tokenizer"]["vocab_size"]


def _patch_size_as_text(manifest: dict) -> None:
    manifest["render"]["config"]["patch_size"] = "16"


def _font_size_edited(manifest: dict) -> None:
    manifest["render"]["config"]["font_size"] = 20.0  # a valid config, not the one the shards hold


@pytest.mark.parametrize(
    ("edit", "complaint"),
    [
        ("{not json", "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),
        ('{"format": "pixeltext-shards/2"}', "render.config"),
        (_without_vocabulary, "tokenizer.vocab_size"),
        (_bos_beyond_vocabulary, "tokenizer.bos_id is .* outside the vocabulary"),
        (_patch_size_as_text, "render.config is not a render config"),
        (_font_size_edited, "render.fingerprint is not that of the render description"),
    ],
)
def test_a_broken_manifest_names_the_file_and_the_field(tiny_shards, tmp_path, edit, complaint):
    shutil.copytree(tiny_shards, tmp_path / "shards")
    path = tmp_path / "shards" / "manifest.json"
    if callable(edit):
        manifest = json.loads(path.read_text())
        edit(manifest)
        edit = json.dumps(manifest)
    path.write_text(edit)
    with pytest.raises(ManifestError, match=complaint) as error:
        read_manifest(str(tmp_path / "shards"))
    assert str(path) in str(error.value)


@pytest.fixture()
def served(tiny_shards):
    """The tiny shards over HTTP from this machine: a remote shard folder without a network."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tiny_shards))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_remote_shards_are_read_in_process_as_local_ones_are(served, tiny_shards):
    options = {"batch_size": 4, "num_workers": 1, "shuffle_buffer": 8, "max_positions": 64, "seed": 1}
    remote, local = ShardDataModule(served, **options), ShardDataModule(str(tiny_shards), **options)
    assert remote.urls[0].startswith("http://127.0.0.1")
    for data in (remote, local):
        data.keys = [batch.keys for batch in itertools.islice(data.train_dataloader(), 8)]
    assert remote.keys == local.keys


def test_s3_and_gs_without_their_extra_say_which_extra(monkeypatch):
    for module, url, extra in (("s3fs", "s3://bucket/shards", "s3"), ("gcsfs", "gs://bucket/shards", "gcs")):
        monkeypatch.setitem(sys.modules, module, None)  # as on a machine without it
        with pytest.raises(MissingExtra, match=rf"pixeltext-train\[{extra}\]"):
            read_manifest(url)


class RunsCode:
    """What a hostile checkpoint pickles: unpickling it would call ``os.system``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_everywhere(make_config, tiny_checkpoint, tmp_path):
    marker = tmp_path / "ran"
    saved = torch.load(tiny_checkpoint, weights_only=True)
    saved["hyper_parameters"]["extra"] = RunsCode(marker)
    hostile = tmp_path / "hostile.ckpt"
    torch.save(saved, hostile)
    attempts = [
        lambda: load_backbone(hostile),
        lambda: export_checkpoint(hostile, tmp_path / "hf"),
        lambda: train(
            make_config("experiment=pixel_text", f"ckpt_path={hostile}", "trainer.max_steps=6"),
            tmp_path / "run",
        ),
    ]
    for attempt in attempts:
        with pytest.raises(CheckpointError, match=r"posix\.system|os\.system"):
            attempt()
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "complaint"),
    [(b"", "empty"), (os.urandom(4096), "not a PyTorch file"), (None, "lacks hyper_parameters.render")],
)
def test_a_file_that_is_not_a_pixeltext_checkpoint_says_so(tmp_path, content, complaint):
    path = tmp_path / "not.ckpt"
    if content is None:
        torch.save({"state_dict": {}, "hyper_parameters": {"model": {}}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=complaint):
        load_backbone(path)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.max_positions=1", "model.max_positions"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.val_fraction=1.0", "data.val_fraction"),
        ("trainer.max_steps=0", "trainer.max_steps"),
        ("optimizer.warmup_steps=-1", "optimizer.warmup_steps"),
        ("data.regimen.pixel=-1", "data.regimen"),
        ("optimizer.lr=inf", "optimizer.lr"),
        ("optimizer.weight_decay=nan", "optimizer.weight_decay"),
        ("optimizer.warmup_ratio=-inf", "optimizer.warmup_ratio"),
    ],
)
def test_a_config_that_cannot_work_is_refused_before_training(make_config, tmp_path, override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        train(make_config("experiment=pixel_text", "trainer.max_steps=4", override), tmp_path)
    assert not (tmp_path / "metrics.csv").exists()


def test_a_run_whose_loss_stops_being_finite_stops_there_and_saves_nothing_poisoned(make_config, tmp_path):
    config = make_config(
        "experiment=pixel_text", "trainer.max_steps=20", "optimizer.lr=1e30", "checkpoint_every=1"
    )
    with pytest.raises(TrainingDiverged, match=r"not finite at step \d+") as stopped:
        train(config, tmp_path)
    step = int(re.search(r"step (\d+)", str(stopped.value)).group(1))
    assert 0 < step < 20
    saved = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    assert load_plain(tmp_path / "checkpoints" / "last.ckpt")["global_step"] <= step  # from before it
    for path in saved:  # each checkpoint written holds finite weights
        weights = load_plain(path)["state_dict"].values()
        assert all(bool(torch.isfinite(w).all()) for w in weights if w.is_floating_point()), path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_steps=0"], "trainer.max_steps must be at least 1, got 0"),
        (
            ["data.shards={shards}/manifest.json"],
            "is a file: point data.shards at the folder holding manifest.json",
        ),
        (["optimizer.lr=inf"], "optimizer.lr=inf: every number option must be finite"),
    ],
)
def test_a_config_mistake_on_the_command_line_is_one_sentence(
    tiny_overrides, tiny_shards, tmp_path, overrides, message
):
    arguments = [*tiny_overrides, "experiment=pixel_text", *(o.format(shards=tiny_shards) for o in overrides)]
    done = subprocess.run(
        [sys.executable, "train/run.py", *arguments, f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]


def test_an_export_never_mixes_with_an_earlier_one_and_is_readable_by_others(tiny_checkpoint, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "hf"
    out.mkdir()
    (out / "special_tokens_map.json").write_text(json.dumps({"bos_token": "[CLS]"}))  # another model's
    (out / "added_tokens.json").write_text(json.dumps({"[CLS]": 32000, "[SEP]": 32001}))
    (out / "README.md").write_text("notes")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ExportError, match=r"not empty.*--replace"):
        export_checkpoint(tiny_checkpoint, out)
    assert sorted(p.name for p in out.iterdir()) == before
    umask = os.umask(0o022)
    try:
        export_checkpoint(tiny_checkpoint, out, replace=True)
    finally:
        os.umask(umask)
    assert not (out / "special_tokens_map.json").exists() and not (out / "added_tokens.json").exists()
    assert (out / "README.md").read_text() == "notes"  # not an export's file: kept
    written = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.name != "README.md"}
    assert modes == dict.fromkeys(written, 0o644)
    tokenizer = AutoTokenizer.from_pretrained(out)
    saved = torch.load(tiny_checkpoint, weights_only=True)["hyper_parameters"]
    assert "[CLS]" not in tokenizer.get_vocab() and tokenizer.bos_token != "[CLS]"
    assert len(tokenizer) == saved["model"]["vocab_size"]
