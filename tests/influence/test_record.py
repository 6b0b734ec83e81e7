"""The recorder: exactly the batches the run trained on, and a file that survives a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from itertools import islice, pairwise
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from pixeltext_train.data.datamodule import ShardDataModule
from pixeltext_train.evaluate.backbone import load_backbone, sequence_spec
from pixeltext_train.evaluate.finetune import ClassifierModule, FinetuneOptions, finetune, loader, prepare
from pixeltext_train.influence.record import InfluenceRecorder, read_recording
from pixeltext_train.module import warmup_cosine

from numerics import KERNEL

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "eval"))
from test_finetune import separable_task  # noqa: E402


def test_a_fine_tune_records_the_samplers_batches_and_the_probe_losses(tiny_checkpoint, tmp_path):
    task = separable_task()
    backbone = load_backbone(tiny_checkpoint)
    options = FinetuneOptions(
        modality="text", max_positions=32, batch_size=16, warmup_steps=5, max_steps=20, eval_every=20, seed=7
    )
    splits = prepare(task, backbone, options)
    spec = sequence_spec(backbone, options.max_positions)
    probe = list(loader(splits["validation"], options, spec, shuffle=False))
    recorder = InfluenceRecorder(probe=probe, every=3)
    finetune(task, backbone, options, tmp_path, splits=splits, progress=False, callbacks=[recorder])
    recording = read_recording(tmp_path / "influence.jsonl")

    # the sampler, replayed: same seed, same generator, epoch after epoch
    replay = loader(splits["train"], options, spec, shuffle=True)
    batches = [list(batch.keys) for epoch in range(2) for batch, _ in replay][:20]
    assert recording.steps == [0, 3, 6, 9, 12, 15, 18, 20]  # every 3 steps, and the end
    ends = recording.steps[1:]
    assert recording.batches == [[k for b in batches[s:e] for k in b] for s, e in pairwise(recording.steps)]
    assert recording.probe == [f"validation/{i}" for i in range(50)]
    assert recording.losses.shape == (8, 50) and np.isfinite(recording.losses).all()
    assert not np.allclose(recording.losses[0], recording.losses[-1])  # training moved them
    # the rate each transition's last step used: LambdaLR's factor for step s is at index s - 1
    expected = [options.lr * warmup_cosine(s - 1, options.warmup_steps, options.max_steps, 0.0) for s in ends]
    np.testing.assert_allclose(recording.lrs, expected, rtol=1e-9)  # the same float64 formula

    # the step-0 losses are the untrained classifier's, recomputed independently, by a run that
    # appends to a record a kill tore (its torn line is cut before the new run writes)
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "influence.jsonl").write_text('{"event": "start", "probe": ["validation/0", "valid')
    fresh = finetune(
        task,
        backbone,
        FinetuneOptions(**{**options.__dict__, "max_steps": 1, "warmup_steps": 1}),
        tmp_path / "again",
        splits=splits,
        progress=False,
        callbacks=[InfluenceRecorder(probe=probe)],
    )
    assert fresh["steps"] == 1
    again = read_recording(tmp_path / "again" / "influence.jsonl")
    np.testing.assert_allclose(again.losses[0], recording.losses[0], **KERNEL)  # (rounded to 7 digits)
    assert ClassifierModule.example_keys(probe[0]) == tuple(f"validation/{i}" for i in range(16))


def _wait_for_lines(path: Path, count: int, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count('"keys"') >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.stderr.read()[-2000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {count} steps recorded in {timeout} s")


@pytest.mark.slow
def test_pretraining_records_the_stream_and_survives_a_kill(tiny_overrides, make_config, tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "train/run.py",
        *tiny_overrides,
        "experiment=pixel_text",
        "callbacks=influence",
        "callbacks.influence.probe_size=6",
        "trainer.max_steps=100000",
        f"hydra.run.dir={run_dir}",
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_lines(run_dir / "influence.jsonl", 13, process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    path = run_dir / "influence.jsonl"
    torn = path.read_text() + '{"step": 999, "keys": ["half-writ'  # as if killed mid-write
    path.write_text(torn)
    recording = read_recording(path)
    assert recording.transitions >= 12 and len(recording.probe) >= 6

    # the training stream, replayed from the same config: the recorded batches, in order
    cfg = make_config("experiment=pixel_text")
    data = ShardDataModule(
        **OmegaConf.to_container(cfg.data, resolve=True), max_positions=cfg.model.max_positions, seed=cfg.seed
    )
    stream = [list(batch.keys) for batch in islice(iter(data._dataset(training=True)), recording.transitions)]
    assert recording.batches == stream
    assert all(key.rsplit("/", 1)[1] in ("pixel", "text", "pair") for batch in stream for key in batch)
