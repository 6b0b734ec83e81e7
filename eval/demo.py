"""``make demo``: the whole system on one CPU, from text to a results table.

1. render the default corpus (106 Wikipedia articles) into shards;
2. pre-train ``experiment=pixel_text`` with ``model=demo`` for a bounded time;
3. fine-tune and score it on Rotten Tomatoes from pixels, text and pairs, and the same
   architecture from scratch, and the majority class;
4. held-out losses, a reconstruction picture, a generation picture, the cloze scores (last
   word in text and in pixels, read back by OCR, and reading strips into text), loss curves,
   and a Markdown report.

``--budget full`` (default; about 10 minutes of pre-training) or ``--budget smoke`` (a minute
or two in all, for tests); ``PIXELTEXT_DEMO_BUDGET`` sets the default.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir

from pixeltext_render.job.corpora import default_corpus
from pixeltext_render.job.pipeline import RenderJob, run
from pixeltext_train.evaluate.backbone import MODALITIES, load_backbone
from pixeltext_train.evaluate.cloze import cloze, plot_passages
from pixeltext_train.evaluate.finetune import FinetuneOptions, finetune, majority_baseline, prepare
from pixeltext_train.evaluate.generation import GenerateOptions, write_generation
from pixeltext_train.evaluate.intrinsic import intrinsic
from pixeltext_train.evaluate.reconstruct import write_reconstruction
from pixeltext_train.evaluate.tasks import rotten_tomatoes
from pixeltext_train.plots import plot_curves
from pixeltext_train.train import train

REPO = Path(__file__).resolve().parents[1]
PROMPT = "The film is a beautiful and moving story about a family, and the acting is superb."
GENERATION_PROMPT = "The city lies on the river, and its old town"


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
    cloze_passages: int


BUDGETS = {
    "full": Budget("demo", 10.0, 100_000, 1500, 150, 8, 500, 30, None, 100, 200),
    "smoke": Budget("tiny", 1.0, 15, 15, 1, 4, 30, 3, 400, 10, 4),
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

    stage("4/4 held-out losses, pictures, generation and cloze scores, loss curves, report")
    held_out = intrinsic(pretrained, str(shards), max_strips=100)
    report = out / "report"
    write_reconstruction(pretrained, PROMPT, report / "reconstruction.png", max_patches=48)
    options = GenerateOptions(max_new_tokens=24, max_new_patches=48)
    generations = {
        modality: write_generation(
            pretrained, modality, options, report / f"generation-{modality}", GENERATION_PROMPT
        )
        for modality in ("text", "pixel", "read")
    }
    scores = cloze(pretrained, plot_passages(), GenerateOptions(), budget.cloze_passages)
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
        generations,
        scores,
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
    generations: dict,
    scores: dict,
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
    verdict = pretraining_verdict(results, majority, test_size)
    text, pixel, read = (generations[m] for m in ("text", "pixel", "read"))
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
        f"Generation (`task=generate`) after “{GENERATION_PROMPT}”: in text, “{text['text']}” "
        f"(stopped: {text['stopped']}); read from its strip, “{read['text']}”; in pixels, "
        f"{pixel['new_patches']} patches (stopped: {pixel['stopped']}, the continuation marked in red):",
        "",
        "![generation in pixels](generation-pixel/generation.png)",
        "",
        *cloze_lines(scores),
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
                "generation": generations,
                "cloze": scores,
                "majority": majority,
                "finetune": {f"{m}/{k}": r for (m, k), r in results.items()},
                "timings_s": timings,
            },
            indent=2,
            default=float,
        )
    )
    return path


def lead_counts(ahead: float, behind: float, size: int) -> bool:
    """Whether one test accuracy leads another by more than twice the standard error of their
    difference (each over ``size`` examples)."""
    error = math.sqrt((ahead * (1 - ahead) + behind * (1 - behind)) / size)
    return ahead - behind > 2 * error


def pretraining_verdict(results: dict, majority: dict, test_size: int) -> str:
    """One paragraph: in which modalities pre-training leads beyond noise, and where neither
    model learnt anything."""
    test = {key: result["metrics"]["test"]["accuracy"] for key, result in results.items()}
    wins = [
        m for m in MODALITIES if lead_counts(test[(m, "pre-trained")], test[(m, "from scratch")], test_size)
    ]
    losses = [
        m for m in MODALITIES if lead_counts(test[(m, "from scratch")], test[(m, "pre-trained")], test_size)
    ]
    error = math.sqrt(test[("text", "pre-trained")] * (1 - test[("text", "pre-trained")]) / test_size)
    verdict = (
        f"Pre-training beats the from-scratch baseline on test accuracy in: {', '.join(wins)}"
        if wins
        else "Pre-training does **not** measurably beat the from-scratch baseline in any modality"
    )
    verdict += (
        " (a lead counts only beyond twice the standard error of the difference, about "
        f"{2 * math.sqrt(2) * error:.3f} here: one accuracy's is about {error:.3f} over {test_size} reviews)."
    )
    if losses:
        verdict += f" The from-scratch model is measurably ahead in: {', '.join(losses)}."
    floor = majority["test"]["accuracy"] + 0.01
    stuck = [m for m in MODALITIES if all(test[(m, k)] <= floor for k in ("pre-trained", "from scratch"))]
    if stuck:
        verdict += (
            f" From {', '.join(stuck)} neither model gets beyond the majority class: at this budget "
            "the decoder has not learnt to read the words in the patches well enough to judge a "
            "review (it does fit a task that only needs word shapes; see the test suite)."
        )
    return verdict


def cloze_lines(scores: dict) -> list[str]:
    """The cloze scores as a short table, with what they mean at this budget."""

    def rate(entry: dict) -> str:
        return f"{entry['value']:.3f} ± {entry['standard_error']:.3f}"

    calibration = scores["ocr_calibration"]
    return [
        f"Cloze (`task=cloze`, the last word of {scores['passages']} held-out film plot passages):",
        "",
        "| score | value |",
        "|---|---|",
        f"| text accuracy (greedy last word) | {rate(scores['text_accuracy'])} |",
        f"| pixel accuracy (continued in pixels, read by OCR) | {rate(scores['pixel_accuracy'])} |",
        f"| readable rate (the word read is an English word) | {rate(scores['readable_rate'])} |",
        f"| read character error rate (strips transcribed) | {scores['read_cer']:.3f} |",
        f"| OCR alone: character error rate on the true strips | {calibration['passage_cer']:.3f} |",
        f"| OCR alone: accuracy on the true last words | {rate(calibration['target_accuracy'])} |",
        "",
        "A model trained for minutes on a CPU scores near zero on these: they show the scoring works "
        "and where a larger run starts, not what pixel language models can do.",
    ]


if __name__ == "__main__":
    main()
