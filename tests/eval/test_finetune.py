"""Fine-tuning end to end, the intrinsic losses, the reconstruction picture, the CLI, the demo."""

from __future__ import annotations

import json
import random
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CORRUPTIONS, custom_task_command
from PIL import Image

from pixeltext_render.job.pipeline import RenderJob, run
from pixeltext_train.evaluate.backbone import (
    InputBudget,
    RenderMismatch,
    encode_example,
    load_backbone,
    sequence_spec,
)
from pixeltext_train.evaluate.finetune import FinetuneOptions, TaskSplit, finetune, loader, majority_baseline
from pixeltext_train.evaluate.intrinsic import intrinsic
from pixeltext_train.evaluate.reconstruct import GAP, reconstruction_image
from pixeltext_train.evaluate.tasks import Example, Task

REPO = Path(__file__).resolve().parents[2]
ANIMALS = [
    "cat",
    "dog",
    "horse",
    "cow",
    "sheep",
    "goat",
    "mouse",
    "rabbit",
    "tiger",
    "lion",
    "bear",
    "wolf",
    "fox",
    "deer",
]
NUMBERS = [
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "twenty",
    "thirty",
]


def separable_task(seed: int = 0) -> Task:
    """Sentences of animal names (class 0) or number words (class 1), 60/40 so that the
    majority class scores 0.6."""
    rng = random.Random(seed)

    def examples(count: int) -> list[Example]:
        rows = []
        for i in range(count):
            label = int(i % 5 >= 3)
            words = rng.sample(NUMBERS if label else ANIMALS, 4)
            rows.append(Example(" ".join(words), None, label))
        return rows

    return Task(
        "separable",
        False,
        ["animals", "numbers"],
        ["accuracy", "f1"],
        examples(200),
        {"validation": examples(50)},
    )


@pytest.mark.parametrize("modality", ["pixel", "text", "pair"])
def test_a_short_fine_tune_beats_the_majority_class(tiny_checkpoint, tmp_path, modality):
    task = separable_task()
    options = FinetuneOptions(
        modality=modality,
        max_positions=48,
        pair_patches=24,
        pair_tokens=24,
        batch_size=16,
        lr=3e-3,
        warmup_steps=5,
        max_steps=100,
        eval_every=20,
        patience=3,
        pool="last_text",  # (pooled on the end patch, this 2-layer model stays at the majority class
        # in 100 steps, whether pre-trained with end patches or not: measured)
    )
    results = finetune(task, load_backbone(tiny_checkpoint), options, tmp_path, progress=False)
    majority = majority_baseline(task)["validation"]["accuracy"]
    assert majority == pytest.approx(0.6)
    assert results["metrics"]["validation"]["accuracy"] > majority + 0.2, results
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["modality"] == modality and written["examples_seen"] == written["steps"] * 16
    assert set(written) >= {"task", "checkpoint", "metrics", "examples_seen", "seed"}
    assert written["skipped_rows"] == 0


def test_the_same_seed_gives_the_same_numbers(tiny_checkpoint, tmp_path):
    task = separable_task()
    options = FinetuneOptions(
        modality="text", max_positions=32, batch_size=16, warmup_steps=2, max_steps=10, eval_every=5
    )
    first = finetune(task, load_backbone(tiny_checkpoint), options, tmp_path / "a", progress=False)
    second = finetune(task, load_backbone(tiny_checkpoint), options, tmp_path / "b", progress=False)
    assert first["metrics"] == second["metrics"]


def test_inputs_are_rendered_as_the_checkpoint_was_trained(tiny_checkpoint):
    backbone = load_backbone(tiny_checkpoint)
    assert backbone.renderer.tokenizer.spec == "bytes"  # the tiny shards' tokenizer, from the checkpoint
    budget = InputBudget.within(64)
    kind, ids, patches = encode_example(backbone, Example("A premise.", "A hypothesis.", 0), "pair", budget)
    assert kind == "pair" and ids[0] == backbone.bos_id and list(ids).count(backbone.bos_id) == 2
    pixels = backbone.renderer.render_pair("A premise.", "A hypothesis.")
    separator = pixels.separator_patch
    assert (patches[separator] == 0).all()  # the black separator patch is in the sequence
    kind, ids, patches = encode_example(
        backbone, Example("x" * 500, None, 0), "pixel", InputBudget.within(20)
    )
    assert len(ids) == 0 and patches.shape == (20, 768)  # the left crop
    for modality in ("pixel", "pair"):  # an empty text: no patch, just bos
        kind, ids, patches = encode_example(backbone, Example("", None, 0), modality, InputBudget.within(20))
        assert list(ids) == [backbone.bos_id] and patches.shape == (0, 768)


@pytest.mark.parametrize("premise_chars", [300, 2_000, 12_000])
def test_a_long_premise_never_pushes_the_hypothesis_out(tiny_checkpoint, articles, premise_chars):
    """The paper's budgets, fitted to the model: in every modality both texts are present, the
    short hypothesis whole, and the input stays within its budget."""
    backbone = load_backbone(tiny_checkpoint)
    premise = "\n".join(a["text"] for a in articles)[:premise_chars]
    hypothesis = "The article is about a place."
    example = Example(premise, hypothesis, 0)
    tokens = backbone.renderer.tokenizer.encode(hypothesis).ids
    for pool in ("end_patch", "last_text"):
        budget = FinetuneOptions(pool=pool).budget(backbone)
        assert budget.positions == backbone.model.config.max_positions  # 768 fitted to the tiny model
        for modality in ("pixel", "text", "pair"):
            _, ids, patches = encode_example(backbone, example, modality, budget)
            used = len(ids) + (0 if patches is None else len(patches))
            assert used <= budget.total(modality)
            if modality != "pixel":  # <s> premise... <s> hypothesis
                separator = int(np.flatnonzero(ids == backbone.bos_id)[-1])
                assert separator > 1 and list(ids[separator + 1 :]) == list(tokens)
            if modality != "text":
                black = np.flatnonzero((patches == 0).all(axis=1))
                assert len(black) >= 1 and black[0] > 0  # the separator, with the premise before it
                hypothesis_patches = patches[black[0] + 1 :]
                assert (hypothesis_patches < 128).any()  # ink after the separator: the hypothesis
                assert (patches[-1] == 0).all() == (pool == "end_patch")


def test_render_pair_fits_any_budget_and_keeps_both_texts(byte_renderer, articles):
    premise = articles[0]["text"][:6000]
    for budget in (9, 33, 100, 511, 2000):
        strip = byte_renderer.render_pair(premise, "A short hypothesis.", max_patches=budget)
        assert strip.num_text_patches <= min(budget, byte_renderer.config.max_patches) - 1
        assert strip.text_pair and strip.text
        assert premise.startswith(strip.text)
    with pytest.raises(ValueError, match="at least 4"):
        byte_renderer.render_pair("a", "b", max_patches=3)


def test_pooling_follows_the_checkpoints_pre_training(tiny_checkpoint, tmp_path):
    backbone = load_backbone(tiny_checkpoint)
    assert backbone.end_patch is True  # data.end_patch: true, the pre-training default
    assert FinetuneOptions().budget(backbone).end_patch
    assert not FinetuneOptions(pool="last_text").budget(backbone).end_patch
    saved = torch.load(tiny_checkpoint, weights_only=True)
    saved["hyper_parameters"]["end_patch"] = False
    edited = tmp_path / "no-end-patch.ckpt"
    torch.save(saved, edited)
    assert not FinetuneOptions().budget(load_backbone(edited)).end_patch
    assert FinetuneOptions(pool="end_patch").budget(load_backbone(edited)).end_patch
    with pytest.raises(ValueError, match="pool"):
        FinetuneOptions(pool="first").budget(backbone)


def test_examples_are_rendered_in_workers_the_same_as_here(tiny_checkpoint):
    backbone = load_backbone(tiny_checkpoint)
    task = separable_task()
    batches = {}
    for workers in (0, 2):
        options = FinetuneOptions(
            modality="pair", workers=workers, batch_size=8, pair_patches=32, pair_tokens=32
        )
        split = TaskSplit("train", task.train[:24], backbone, options)
        spec = sequence_spec(backbone, options.budget(backbone).total("pair"))
        batches[workers] = list(loader(split, options, spec, shuffle=True))
    for (a, labels_a), (b, labels_b) in zip(batches[0], batches[2], strict=True):
        assert a.keys == b.keys and torch.equal(labels_a, labels_b)
        assert torch.equal(a.patches, b.patches) and torch.equal(a.tokens, b.tokens)
    split.inputs.fingerprint = "0" * 16  # a worker that rebuilt another renderer stops
    split.inputs._inputs = None
    with pytest.raises(RenderMismatch, match="another renderer"):
        split[0]


def test_a_missing_checkpoint_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="make demo"):
        load_backbone(tmp_path / "nothing.ckpt")


def test_a_checkpoint_from_other_fonts_is_refused(tiny_checkpoint, tmp_path):
    saved = torch.load(tiny_checkpoint, weights_only=True)
    saved["hyper_parameters"]["render"]["fingerprint"] = "0000000000000000"
    edited = tmp_path / "edited.ckpt"
    torch.save(saved, edited)
    with pytest.raises(RenderMismatch, match="fonts"):
        load_backbone(edited)


def test_intrinsic_losses_on_held_out_documents(tiny_checkpoint, tiny_shards):
    results = intrinsic(load_backbone(tiny_checkpoint), str(tiny_shards), val_fraction=0.2, max_strips=10)
    assert 0 < results["strips"] <= 10 and results["tokens"] > 0 and results["patches"] > 0
    assert 0 < results["bits_per_byte"] < 20 and 0 < results["patch_loss"] < 5
    assert results["token_loss"] == pytest.approx(results["bits_per_byte"] * np.log(2) * 1, rel=0.5)


def test_intrinsic_counts_corrupt_samples_and_refuses_shards_of_another_tokenizer(
    tiny_checkpoint, corrupt_shards, tmp_path
):
    results = intrinsic(
        load_backbone(tiny_checkpoint), str(corrupt_shards), val_fraction=1.0, max_strips=1000
    )
    assert (
        results["skipped_samples"] == len(CORRUPTIONS) + 1 and results["strips"] > 20
    )  # one truncated shard
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "a", "text": "A few words."}) + "\n")
    run(
        RenderJob((str(corpus),), str(tmp_path / "shards"), tokenizer="sentencepiece"),
        workers=1,
        progress=False,
    )
    with pytest.raises(RenderMismatch, match="tokenizer fingerprint"):
        intrinsic(load_backbone(tiny_checkpoint), str(tmp_path / "shards"))


def test_the_reconstruction_picture_has_the_expected_size(tiny_checkpoint):
    backbone = load_backbone(tiny_checkpoint)
    text = "What does the pixel model predict next?"
    patches = backbone.renderer.render(text).strips[0].num_text_patches
    image = reconstruction_image(backbone, text, max_patches=64, scale=3)
    assert image.size == (patches * 16 * 3, (2 * 16 + GAP) * 3)
    top = np.asarray(image)[: 16 * 3]
    assert (top < 128).any()  # the rendered text is there


@pytest.mark.slow
def test_eval_run_writes_results_and_pictures(tiny_checkpoint, tmp_path):
    out = tmp_path / "reconstruct"
    command = [
        sys.executable,
        "eval/run.py",
        "task=reconstruct",
        f"checkpoint={tiny_checkpoint}",
        'prompt="Hello there, pixels."',
        f"hydra.run.dir={out}",
    ]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    assert Image.open(out / "reconstruction.png").height == (2 * 16 + GAP) * 4
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"t": e.text, "y": e.label}) + "\n" for e in separable_task().train[:40])
    )
    out = tmp_path / "custom"
    command = [sys.executable, *custom_task_command(data, "none", "text", 4, out)]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    results = json.loads((out / "results.json").read_text())
    assert (
        results["checkpoint"] == "none"
        and results["steps"] == 4
        and "accuracy" in results["metrics"]["validation"]
    )


@pytest.mark.slow
def test_make_demo_with_the_smoke_budget_writes_the_report(tmp_path):
    command = ["make", "-s", "demo", "DEMO_BUDGET=smoke", f"DEMO_OUT={tmp_path}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f"report: {tmp_path / 'report' / 'report.md'}"
    report = (tmp_path / "report" / "report.md").read_text()
    for modality in ("pixel", "text", "pair"):
        assert f"| {modality} | pre-trained |" in report and f"| {modality} | from scratch |" in report
    assert "| — | majority class |" in report
    assert Image.open(tmp_path / "report" / "reconstruction.png").width > 0
    assert Image.open(tmp_path / "report" / "pretraining_loss.png").width > 0
    assert Image.open(tmp_path / "report" / "generation-pixel" / "generation.png").width > 0
    scores = json.loads((tmp_path / "report" / "results.json").read_text())["cloze"]
    assert scores["passages"] == 4 and "| pixel accuracy (continued in pixels, read by OCR) |" in report


def test_the_demo_verdict_counts_a_lead_only_beyond_its_standard_error():
    pretraining_verdict = runpy.run_path(str(REPO / "eval" / "demo.py"))["pretraining_verdict"]

    def verdict(pixel: float, text: float, pair: float) -> str:
        accuracies = {"pixel": pixel, "text": text, "pair": pair}
        results = {
            (m, k): {"metrics": {"test": {"accuracy": 0.7 + (accuracies[m] if k == "pre-trained" else 0)}}}
            for m in accuracies
            for k in ("pre-trained", "from scratch")
        }
        return pretraining_verdict(results, {"test": {"accuracy": 0.5}}, 1323)

    assert "does **not** measurably beat" in verdict(0.001, 0.006, -0.01)  # the leads called noise
    assert "beats the from-scratch baseline on test accuracy in: text" in verdict(0.001, 0.06, 0.0)
    assert "from-scratch model is measurably ahead in: pair" in verdict(0.0, 0.0, -0.08)
