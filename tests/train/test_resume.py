"""Exact resume: a stopped run continued from its checkpoint trains on exactly the batches, and
takes exactly the steps, of an uninterrupted run, and its logs hold every step once."""

from __future__ import annotations

import csv
import itertools
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pixeltext_train.checkpoints import load_plain
from pixeltext_train.cli import PREEMPTED
from pixeltext_train.data.datamodule import ShardDataModule
from pixeltext_train.evaluate.finetune import FinetuneOptions
from pixeltext_train.influence.record import read_recording
from pixeltext_train.resume import ResumeError
from pixeltext_train.train import build, train

from numerics import KERNEL, close

REPO = Path(__file__).resolve().parents[2]
STREAM = {
    "batch_size": 4,
    "shuffle_buffer": 16,
    "val_fraction": 0.2,
    "max_positions": 64,
    "seed": 3,
}  # packed


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def column(run_dir: Path, name: str) -> dict[int, float]:
    """{step: value} of one metrics.csv column; a step logged twice fails the test."""
    rows = [(int(row["step"]), float(row[name])) for row in metrics(run_dir) if row.get(name)]
    steps = [step for step, _ in rows]
    assert len(steps) == len(set(steps)), f"{name}: steps logged twice in {run_dir}"
    return dict(rows)


def cells(run_dir: Path, name: str) -> list[tuple[int, float]]:
    """Every (step, value) of one metrics.csv column, in step order."""
    return sorted((int(row["step"]), float(row[name])) for row in metrics(run_dir) if row.get(name))


def trained_keys(data: ShardDataModule, batches: int) -> list[tuple[str, ...]]:
    """The keys of the next ``batches`` training batches, each marked as trained on."""
    keys = []
    for batch in itertools.islice(data.train_dataloader(), batches):
        data.advance([batch.stream])
        keys.append(batch.keys)
    return keys


def second_epoch_point(data: ShardDataModule, limit: int = 80) -> int:
    """The number of batches after which every reader is inside its second epoch or later."""
    for count, batch in enumerate(itertools.islice(data.train_dataloader(), limit), start=1):
        data.advance([batch.stream])
        if all(state and state["epoch"] >= 1 for state in data.state_dict()["ranks"][0]["streams"]):
            return count
    raise AssertionError(f"no reader reached its second epoch in {limit} batches")


@pytest.mark.parametrize("packing", [True, False, "split"])
@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("corpus", ["tiny_shards", "multilingual_shards"])
def test_a_resumed_stream_delivers_the_batches_of_an_uninterrupted_one(request, corpus, workers, packing):
    shards = request.getfixturevalue(corpus)  # 8 shards, or 1 shard: fewer than the readers
    options = {**STREAM, "shards": str(shards), "num_workers": workers, "packing": packing}
    resume_at = second_epoch_point(ShardDataModule(**options)) + 1
    whole = trained_keys(ShardDataModule(**options), resume_at + 6)
    first = ShardDataModule(**options)
    assert trained_keys(first, resume_at) == whole[:resume_at]
    second = ShardDataModule(**options)
    second.load_state_dict(first.state_dict())
    assert trained_keys(second, 6) == whole[resume_at:]
    assert len({key for batch in whole for key in batch}) < sum(map(len, whole))  # samples came back: epochs


def test_resuming_at_any_point_skips_and_counts_exactly_what_the_first_run_did(corrupt_shards):
    options = {**STREAM, "shards": str(corrupt_shards), "num_workers": 0}
    whole_data = ShardDataModule(**options)
    whole, skipped = [], []
    for batch in itertools.islice(whole_data.train_dataloader(), 24):  # into the third epoch
        whole_data.advance([batch.stream])
        whole.append(batch.keys)
        skipped.append(whole_data.skipped)
    assert skipped[-1] > 2 * skipped[0] > 0  # corrupt data met again in later epochs, counted again
    for resume_at in range(1, len(whole) - 1):  # every point: inside epochs, while a buffer drains
        first = ShardDataModule(**options)
        trained_keys(first, resume_at)
        second = ShardDataModule(**options)
        second.load_state_dict(first.state_dict())
        assert trained_keys(second, 2) == whole[resume_at : resume_at + 2], resume_at
        assert second.skipped == skipped[resume_at + 1], resume_at


def test_a_new_iteration_continues_after_the_last_batch_trained_on(tiny_shards):
    """Lightning iterates the training loader again in some configurations (a new epoch of
    ``limit_train_batches``): it must continue the stream, not replay it."""
    options = {**STREAM, "shards": str(tiny_shards), "num_workers": 2}
    whole = trained_keys(ShardDataModule(**options), 7)
    data = ShardDataModule(**options)
    assert trained_keys(data, 4) == whole[:4]
    assert trained_keys(data, 3) == whole[4:]


def test_a_resume_with_another_number_of_readers_is_refused(tiny_shards):
    first = ShardDataModule(**STREAM, shards=str(tiny_shards), num_workers=2)
    trained_keys(first, 3)
    second = ShardDataModule(**STREAM, shards=str(tiny_shards), num_workers=1)
    second.load_state_dict(first.state_dict())
    with pytest.raises(ValueError, match=r"data\.num_workers"):
        second.train_dataloader()


ISSUE_RUN = [  # the run of the report: 22 short multilingual documents, resumed at step 20 of 30
    "experiment=pixel_text",
    "seed=3",
    "optimizer.schedule_steps=40",
    "optimizer.warmup_steps=2",
    "data.num_workers=2",
    "callbacks=influence",
    "callbacks.influence.probe_size=2",
]


def test_a_run_resumed_inside_its_second_epoch_repeats_the_uninterrupted_run(
    make_config, multilingual_shards, tmp_path
):
    common = [*ISSUE_RUN, f"data.shards={multilingual_shards}"]
    train(make_config(*common, "trainer.max_steps=30"), tmp_path / "whole")
    train(make_config(*common, "trainer.max_steps=20"), tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(make_config(*common, "trainer.max_steps=30", f"ckpt_path={last}"), tmp_path / "second")
    whole, second = column(tmp_path / "whole", "train/loss"), column(tmp_path / "second", "train/loss")
    assert sorted(second) == list(range(30))  # the first run's steps, then the resumed ones, once each
    for step in range(20, 30):
        assert close(second[step], whole[step]), (step, second[step], whole[step])
    # the samples of every step, exactly (the recorder logs each step's sample keys; the resumed
    # run's record starts with the first run's)
    whole_steps = read_recording(tmp_path / "whole" / "influence.jsonl")
    resumed_steps = read_recording(tmp_path / "second" / "influence.jsonl")
    assert resumed_steps.steps == whole_steps.steps == list(range(31))
    assert resumed_steps.batches == whole_steps.batches
    torch.testing.assert_close(resumed_steps.losses, whole_steps.losses, **KERNEL)
    epochs = load_plain(last)["ShardDataModule"]["ranks"][0]["streams"]
    assert all(state["epoch"] >= 1 for state in epochs)  # the resume point is past the first epoch


def test_checkpoints_written_after_a_resume_resume_exactly_with_gradient_accumulation(make_config, tmp_path):
    def run(name: str, *overrides: str) -> dict[int, float]:
        common = ["experiment=pixel_text", "trainer.accumulate_grad_batches=2", "optimizer.schedule_steps=8"]
        train(make_config(*common, "checkpoint_every=2", *overrides), tmp_path / name)
        return column(tmp_path / name, "train/loss")

    whole = run("whole", "trainer.max_steps=8", "data.num_workers=1")
    run("first", "trainer.max_steps=4", "data.num_workers=0")
    first = tmp_path / "first" / "checkpoints" / "last.ckpt"
    run("second", "trainer.max_steps=6", "data.num_workers=1", f"ckpt_path={first}")  # 0 and 1: one reader
    saved = sorted(path.name for path in (tmp_path / "second" / "checkpoints").iterdir())
    assert saved == ["last.ckpt", "step=000006.ckpt"]  # step 4, where it resumed, is not saved again
    six = tmp_path / "second" / "checkpoints" / "step=000006.ckpt"
    third = run("third", "trainer.max_steps=8", "data.num_workers=1", f"ckpt_path='{six}'")  # (quoted: =)
    assert sorted(third) == list(range(8))
    assert all(close(third[step], whole[step]) for step in range(8))


def test_a_run_stopped_by_max_time_ends_on_a_whole_step_and_resumes_exactly(make_config, tmp_path):
    common = ["experiment=pixel_text", "trainer.accumulate_grad_batches=3", "optimizer.schedule_steps=400"]
    # a limit of a millisecond is reached at the first check after training starts: after one
    # micro-batch for Lightning's own timer, after the first whole step for pixeltext's
    stopped = train(
        make_config(*common, "trainer.max_steps=400", "+trainer.max_time={milliseconds: 1}"), tmp_path / "a"
    )
    steps = stopped.global_step
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    state = load_plain(last)
    assert steps == 1 and state["global_step"] == steps
    assert state["ShardDataModule"]["ranks"][0]["consumed"] == 3 * steps  # whole steps' batches only
    train(make_config(*common, f"trainer.max_steps={steps + 2}", f"ckpt_path={last}"), tmp_path / "b")
    train(make_config(*common, f"trainer.max_steps={steps + 2}"), tmp_path / "c")
    resumed, whole = column(tmp_path / "b", "train/loss"), column(tmp_path / "c", "train/loss")
    assert all(close(resumed[step], whole[step]) for step in (steps, steps + 1))


def test_resuming_into_the_same_folder_keeps_every_step_of_the_logs(make_config, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    common = ["experiment=pixel_text", "trainer.accumulate_grad_batches=2", "optimizer.schedule_steps=8"]
    common += ["tensorboard=true", "data.num_workers=1"]
    train(make_config(*common, "trainer.max_steps=8"), tmp_path / "whole")
    train(make_config(*common, "trainer.max_steps=5"), tmp_path / "run")
    train(make_config(*common, "trainer.max_steps=8", "resume=true"), tmp_path / "run")
    assert sorted(column(tmp_path / "run", "train/loss")) == list(range(8))  # each step once
    for name in ("train/loss", "train/token_loss", "train/skipped_samples", "lr-AdamW/pg1"):
        whole, resumed = cells(tmp_path / "whole", name), cells(tmp_path / "run", name)
        assert [step for step, _ in resumed] == [step for step, _ in whole], name  # the same rows
        assert all(close(a, b) for (_, a), (_, b) in zip(resumed, whole, strict=True)), name
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    logged = [event.step for event in events.Scalars("train/loss")]
    assert sorted(logged) == list(range(8))  # the redone steps once: the first run's 5.. purged


def test_the_schedule_is_a_function_of_schedule_steps_alone(make_config):
    def rates(*overrides: str) -> list[float]:
        module = build(make_config("optimizer.schedule_steps=40", "optimizer.warmup_steps=5", *overrides))[1]
        optimizer = module.configure_optimizers()
        values = []
        for _ in range(20):
            values.append(optimizer["optimizer"].param_groups[0]["lr"])
            optimizer["optimizer"].step()
            optimizer["lr_scheduler"]["scheduler"].step()
        return values

    short, long = rates("trainer.max_steps=20"), rates("trainer.max_steps=400")
    assert short == long
    peak = 5e-4
    assert short[:6] == pytest.approx(
        [peak * k / 5 for k in (1, 2, 3, 4, 5)] + [peak]
    )  # the warm-up asked for
    with pytest.raises(ValueError, match=r"optimizer\.warmup_steps"):
        build(make_config("optimizer.schedule_steps=40", "optimizer.warmup_steps=41"))


def test_the_default_warm_up_follows_the_length_of_the_run(make_config):
    def warmup(*overrides: str) -> int:
        return build(make_config("optimizer.warmup_steps=null", *overrides))[1].warmup

    assert warmup("trainer.max_steps=100") == 2 and warmup("trainer.max_steps=50000") == 1000  # one override
    assert warmup("trainer.max_steps=100", "optimizer.warmup_ratio=0.1") == 10
    assert warmup("trainer.max_steps=100", "optimizer.warmup_steps=7") == 7  # an explicit one wins
    with pytest.raises(ValueError, match=r"optimizer\.warmup_steps must be in \[0, 100\]"):
        warmup("trainer.max_steps=100", "optimizer.warmup_steps=200")  # longer than the schedule
    assert FinetuneOptions(max_steps=40).warmup == 2 and FinetuneOptions(max_steps=4000).warmup == 200


def test_resume_true_continues_only_a_compatible_run_of_the_same_name(make_config, tmp_path):
    runs = tmp_path / "outputs"
    train(make_config("experiment=pixel", "trainer.max_steps=2", "optimizer.schedule_steps=4"), runs / "a")
    train(make_config("experiment=text", "trainer.max_steps=2", "optimizer.schedule_steps=4"), runs / "b")
    train(
        make_config("experiment=pixel", "trainer.max_steps=4", "optimizer.schedule_steps=4", "resume=true"),
        runs / "c",
    )
    assert sorted(column(runs / "c", "train/loss")) == [0, 1, 2, 3]  # a's two steps, then two more
    assert column(runs / "c", "train/loss")[0] == column(runs / "a", "train/loss")[0]
    other_model = ["model.hidden_size=32", "trainer.max_steps=4", "optimizer.schedule_steps=4", "resume=true"]
    with pytest.raises(ResumeError, match=r"model\.hidden_size: 64 in the checkpoint's run, 32 now") as error:
        train(make_config("experiment=pixel", *other_model), runs / "d")
    assert "name: text" in str(error.value)  # every candidate is named with what differs


def test_a_checkpoint_of_other_shards_or_settings_is_refused(make_config, multilingual_shards, tmp_path):
    train(
        make_config("experiment=pixel", "trainer.max_steps=2", "optimizer.schedule_steps=4"), tmp_path / "a"
    )
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    other_shards = make_config(
        "experiment=pixel",
        "optimizer.schedule_steps=4",
        f"data.shards={multilingual_shards}",
        f"ckpt_path={last}",
    )
    with pytest.raises(ResumeError, match=r"shards\.content") as error:
        train(other_shards, tmp_path / "b")
    assert "data.shards" not in str(error.value)  # the place may change; what the shards hold may not
    with pytest.raises(ResumeError, match=r"optimizer\.schedule_steps: 4 in the checkpoint's run, 8 now"):
        train(make_config("experiment=pixel", "trainer.max_steps=8", f"ckpt_path={last}"), tmp_path / "c")
    stateless = load_plain(last)
    del stateless["ShardDataModule"]  # a checkpoint that cannot say where the data stream stood
    torch.save(stateless, tmp_path / "stateless.ckpt")
    with pytest.raises(ResumeError, match="no run config or data stream state"):
        train(
            make_config(
                "experiment=pixel", "optimizer.schedule_steps=4", f"ckpt_path={tmp_path / 'stateless.ckpt'}"
            ),
            tmp_path / "d",
        )


def test_sigterm_finishes_the_step_writes_a_checkpoint_exits_143_and_resumes_exactly(
    make_config, tiny_overrides, tmp_path
):
    common = ["experiment=pixel_text", "trainer.accumulate_grad_batches=2", "optimizer.schedule_steps=400"]
    run_dir = tmp_path / "preempted"
    command = [sys.executable, "train/run.py", *tiny_overrides, *common, "trainer.max_steps=400"]
    process = subprocess.Popen(
        [*command, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while len(metrics(run_dir) if (run_dir / "metrics.csv").is_file() else []) < 3:  # a few steps in
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, errors = process.communicate(timeout=240)
    assert process.returncode == PREEMPTED, errors[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert "SIGTERM" in errors and str(last) in errors
    state = load_plain(last)
    steps = state["global_step"]
    assert 0 < steps < 400 and state["ShardDataModule"]["ranks"][0]["consumed"] == 2 * steps  # whole steps
    train(make_config(*common, f"trainer.max_steps={steps + 2}", f"ckpt_path={last}"), tmp_path / "resumed")
    train(make_config(*common, f"trainer.max_steps={steps + 2}"), tmp_path / "whole")
    resumed, whole = column(tmp_path / "resumed", "train/loss"), column(tmp_path / "whole", "train/loss")
    assert all(close(resumed[step], whole[step]) for step in (steps, steps + 1))


def test_resume_true_falls_back_past_damaged_checkpoints_naming_them(make_config, tmp_path, caplog):
    common = ["experiment=pixel_text", "optimizer.schedule_steps=8", "checkpoint_every=2"]
    train(make_config(*common, "trainer.max_steps=8"), tmp_path / "whole")
    runs = tmp_path / "runs"
    train(make_config(*common, "trainer.max_steps=6"), runs / "first")
    folder = runs / "first" / "checkpoints"
    (folder / "last.ckpt").write_bytes((folder / "last.ckpt").read_bytes()[:5000])  # cut by a full disk
    (folder / "step=000006.ckpt").write_bytes(b"")
    caplog.set_level(logging.WARNING, logger="pixeltext_train.resume")
    train(make_config(*common, "trainer.max_steps=8", "resume=true"), runs / "second")
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 2 and any("last.ckpt" in m and "not a PyTorch file" in m for m in skipped)
    assert any("step=000006.ckpt" in m and "empty" in m for m in skipped)
    resumed, whole = column(runs / "second", "train/loss"), column(tmp_path / "whole", "train/loss")
    assert sorted(resumed) == list(range(8))  # steps 0-3 from the first run's log, 4-7 redone from step 4
    assert all(close(resumed[step], whole[step]) for step in range(8))


def test_a_checkpoint_is_written_beside_itself_and_renamed(make_config, tmp_path, monkeypatch):
    written = []
    save = torch.save

    def recording(obj, file, *args, **kwargs):
        written.append(Path(file.name))
        return save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", recording)
    common = ["experiment=pixel_text", "optimizer.schedule_steps=3"]
    train(make_config(*common, "trainer.max_steps=2", "checkpoint_every=1"), tmp_path)
    folder = tmp_path / "checkpoints"
    assert written and all(path.parent == folder and path.name.startswith(".") for path in written)
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step=000001.ckpt", "step=000002.ckpt"]

    def full_disk(obj, file, *args, **kwargs):
        file.write(b"partial")
        raise OSError(28, "No space left on device")

    before = (folder / "last.ckpt").read_bytes()
    monkeypatch.setattr(torch, "save", full_disk)
    resume = f"ckpt_path={folder / 'last.ckpt'}"
    with pytest.raises(OSError, match="No space"):  # continued in the same folder: last.ckpt rewritten
        train(make_config(*common, "trainer.max_steps=3", "checkpoint_every=1", resume), tmp_path)
    assert (folder / "last.ckpt").read_bytes() == before  # the old checkpoint, whole
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step=000001.ckpt", "step=000002.ckpt"]
