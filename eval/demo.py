"""``make demo``: the whole system on one CPU, from text to a results table.

1. render the default corpus (106 Wikipedia articles) into shards;
2. pre-train ``experiment=pixel_text`` with ``model=demo`` for a bounded time;
3. fine-tune and score it on Rotten Tomatoes from pixels, text and pairs, and the same
   architecture from scratch, and the majority class;
4. held-out losses, a reconstruction picture, loss curves, and a Markdown report.

``--budget full`` (default; about 10 minutes of pre-training) or ``--budget smoke`` (a minute
or two in all, for tests); ``PIXELTEXT_DEMO_BUDGET`` sets the default.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir

from pixeltext_render.corpora import default_corpus
from pixeltext_render.pipeline import RenderJob, run
from pixeltext_train.evaluate.backbone import MODALITIES, load_backbone
from pixeltext_train.evaluate.finetune import FinetuneOptions, finetune, majority_baseline, prepare
from pixeltext_train.evaluate.intrinsic import intrinsic
from pixeltext_train.evaluate.reconstruct import write_reconstruction
from pixeltext_train.evaluate.tasks import rotten_tomatoes
from pixeltext_train.plots import plot_curves
from pixeltext_train.train import train

REPO = Path(__file__).resolve().parents[1]
PROMPT = "The film is a beautiful and moving story about a family, and the acting is superb."


@dataclass(frozen=True)
class Budget:
    model: str
    pretrain_minutes: float
    pretrain_steps: int
    schedule_steps: int
    warmup_steps: int
    batch_size: int
    finetune_steps: int
    finetune_warmup_steps: int
    train_examples: int | None
    eval_every: int


BUDGETS = {
    "full": Budget("demo", 10.0, 100_000, 1500, 150, 8, 500, 30, None, 100),
    "smoke": Budget("tiny", 1.0, 15, 15, 1, 4, 30, 3, 400, 10),
}


def stage(message: str) -> None:
    print(f"\n=== {message}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--budget", choices=sorted(BUDGETS), default=os.environ.get("PIXELTEXT_DEMO_BUDGET", "full")
    )
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "demo")
    args = parser.parse_args()
    budget, out = BUDGETS[args.budget], args.out
    started, timings = time.perf_counter(), {}

    stage("1/4 rendering the default corpus into WebDataset shards")
    shards = out / "shards"
    manifest = run(RenderJob((str(default_corpus()),), str(shards)), progress=True)
    print(f"{manifest['totals']['documents']} documents, {manifest['totals']['strips']} strips -> {shards}")
    timings["render"] = time.perf_counter() - started

    stage(
        f"2/4 pre-training experiment=pixel_text model={budget.model} "
        f"({budget.pretrain_minutes:g} min at most)"
    )
    minutes = int(budget.pretrain_minutes)
    seconds = round((budget.pretrain_minutes - minutes) * 60)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "experiment=pixel_text",
                f"model={budget.model}",
                "trainer=cpu",
                f"data.shards={shards}",
                f"data.batch_size={budget.batch_size}",
                f"trainer.max_steps={budget.pretrain_steps}",
                f"+trainer.max_time=00:00:{minutes:02d}:{seconds:02d}",
                f"optimizer.schedule_steps={budget.schedule_steps}",
                f"optimizer.warmup_steps={budget.warmup_steps}",
                "trainer.val_check_interval=250",
                "checkpoint_every=500",
            ],
        )
    pretrain_dir = out / "pretrain"
    trainer = train(cfg, pretrain_dir)
    checkpoint = pretrain_dir / "checkpoints" / "last.ckpt"
    timings["pretrain"] = time.perf_counter() - started - sum(timings.values())

    stage("3/4 fine-tuning on Rotten Tomatoes: pre-trained vs from scratch, three modalities")
    task = rotten_tomatoes()
    pretrained = load_backbone(checkpoint)
    model = {k: v for k, v in cfg.model.items()}
    results = {}
    for modality in MODALITIES:
        options = FinetuneOptions(
            modality=modality,
            max_positions=96,
            pair_patches=48,
            pair_tokens=48,
            batch_size=32,
            lr=3e-4,
            warmup_steps=budget.finetune_warmup_steps,
            max_steps=budget.finetune_steps,
            eval_every=budget.eval_every,
            patience=3,
            max_train_examples=budget.train_examples,
        )
        splits = prepare(task, pretrained, options)  # same renderer and tokenizer for both backbones
        for name, source in (("pre-trained", checkpoint), ("from scratch", None)):
            print(f"--- {modality}, {name}", flush=True)
            backbone = pretrained if source else load_backbone(None, model)
            results[(modality, name)] = finetune(
                task, backbone, options, out / "finetune" / modality / name.replace(" ", "-"), splits=splits
            )
    majority = majority_baseline(task)
    timings["finetune"] = time.perf_counter() - started - sum(timings.values())

    stage("4/4 held-out losses, reconstruction picture, loss curves, report")
    held_out = intrinsic(pretrained, str(shards), max_strips=100)
    report = out / "report"
    write_reconstruction(pretrained, PROMPT, report / "reconstruction.png", max_patches=48)
    plot_curves({"pre-training, pixel_text": pretrain_dir}, report / "pretraining_loss.png")
    timings["report"] = time.perf_counter() - started - sum(timings.values())
    path = write_report(
        report,
        args.budget,
        budget,
        manifest,
        trainer.global_step,
        results,
        majority,
        held_out,
        timings,
        test_size=len(task.evaluations["test"]),
    )
    print(f"\ndemo finished in {(time.perf_counter() - started) / 60:.1f} minutes")
    print(f"report: {path}")


def write_report(
    report: Path,
    name: str,
    budget: Budget,
    manifest: dict,
    steps: int,
    results: dict,
    majority: dict,
    held_out: dict,
    timings: dict,
    test_size: int,
) -> Path:
    lines = [
        "# pixeltext demo report",
        "",
        f"Budget `{name}`: pre-trained `experiment=pixel_text model={budget.model}` for {steps} steps "
        f"({timings['pretrain'] / 60:.1f} min on this CPU) on {manifest['totals']['strips']} strips of "
        f"{manifest['totals']['documents']} Wikipedia articles; fine-tuned on Rotten Tomatoes "
        f"(fresh vs rotten; up to {budget.finetune_steps} steps, early stopping on validation accuracy).",
        "",
        "| modality | model | validation accuracy | validation F1 | test accuracy | test F1 | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for (modality, kind), result in results.items():
        v, t = result["metrics"]["validation"], result["metrics"]["test"]
        lines.append(
            f"| {modality} | {kind} | {v['accuracy']:.3f} | {v['f1']:.3f} | {t['accuracy']:.3f} | "
            f"{t['f1']:.3f} | {result['steps']} |"
        )
    v, t = majority["validation"], majority["test"]
    lines.append(
        f"| — | majority class | {v['accuracy']:.3f} | {v['f1']:.3f} | "
        f"{t['accuracy']:.3f} | {t['f1']:.3f} | — |"
    )
    wins = [
        m
        for m in MODALITIES
        if results[(m, "pre-trained")]["metrics"]["test"]["accuracy"]
        > results[(m, "from scratch")]["metrics"]["test"]["accuracy"]
    ]
    verdict = (
        f"Pre-training beats the from-scratch baseline on test accuracy in: {', '.join(wins)}."
        if wins
        else "Pre-training does **not** beat the from-scratch baseline on test accuracy in any "
        "modality at this budget: the model saw too little text for its features to transfer."
    )
    floor = majority["test"]["accuracy"] + 0.01
    stuck = [
        m
        for m in MODALITIES
        if all(
            results[(m, k)]["metrics"]["test"]["accuracy"] <= floor for k in ("pre-trained", "from scratch")
        )
    ]
    if stuck:
        verdict += (
            f" From {', '.join(stuck)} neither model gets beyond the majority class: at this budget "
            "the decoder has not learnt to read the words in the patches well enough to judge a "
            "review (it does fit a task that only needs word shapes; see the test suite)."
        )
    accuracy = results[("text", "pre-trained")]["metrics"]["test"]["accuracy"]
    error = (accuracy * (1 - accuracy) / test_size) ** 0.5
    verdict += (
        f" A test accuracy here has a standard error of about {error:.3f} ({test_size} reviews), so "
        f"differences under about {2 * error:.2f} are within noise."
    )
    lines += [
        "",
        verdict,
        "",
        "Held-out Wikipedia strips (pre-trained model): "
        f"next-token loss {held_out['token_loss']:.3f} nats ({held_out['bits_per_byte']:.3f} bits per byte), "
        f"next-patch loss {held_out['patch_loss']:.3f} ({held_out['strips']} strips).",
        "",
        "![pre-training loss](pretraining_loss.png)",
        "",
        f"Reconstruction: the strip of “{PROMPT}”, and under it each patch as the model predicts it from "
        "the patches before it (given the true patch's mean and variance).",
        "",
        "![reconstruction](reconstruction.png)",
        "",
        "Time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()) + ".",
        "",
    ]
    path = report / "report.md"
    path.write_text("\n".join(lines))
    (report / "results.json").write_text(
        json.dumps(
            {
                "budget": asdict(budget),
                "pretrain_steps": steps,
                "held_out": held_out,
                "majority": majority,
                "finetune": {f"{m}/{k}": r for (m, k), r in results.items()},
                "timings_s": timings,
            },
            indent=2,
            default=float,
        )
    )
    return path


if __name__ == "__main__":
    main()
