"""GPTfluence for pixeltext runs: ``python eval/influence.py stage=record|fit|evaluate|explain``.

- ``record``: short fine-tuning runs of ``task`` from ``checkpoint`` with different data
  orders and subsets, each recording its training dynamics and TracIn snapshots;
- ``fit``: the GPTfluence simulator on the train runs (features from the frozen pixeltext
  model), and the baselines: Simfluence's factors, TracIn's least-squares scale;
- ``evaluate``: every method on held-out runs and on runs over unseen training examples;
  ``results.md`` holds the table;
- ``explain``: for one test example in one run, the training examples that moved its final
  loss most, as strips with scores, and its real and simulated trajectories.
"""

import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from pixeltext_train.checkpoints import load_plain
from pixeltext_train.cli import check_finite, reported
from pixeltext_train.evaluate.backbone import load_backbone
from pixeltext_train.evaluate.tasks import load_task
from pixeltext_train.influence.baselines import Simfluence, tracin_changes, tracin_scale
from pixeltext_train.influence.evaluate import evaluate, load_runs, predictions, table
from pixeltext_train.influence.explain import explanation_picture, leave_one_out
from pixeltext_train.influence.features import example_features
from pixeltext_train.influence.runs import RunPlan, pools, record_runs
from pixeltext_train.influence.simulator import GPTfluence, SimulatorConfig


def plan_of(cfg: DictConfig) -> RunPlan:
    options = OmegaConf.to_container(cfg.runs, resolve=True)
    return RunPlan(**{**options, "runs": tuple(options["runs"])})


def main_stage(cfg: DictConfig) -> None:
    out = Path(cfg.dir)
    out.mkdir(parents=True, exist_ok=True)
    task = load_task(cfg.task, OmegaConf.to_container(cfg, resolve=True))
    backbone = load_backbone(cfg.checkpoint)
    plan = plan_of(cfg)
    if cfg.stage == "record":
        record_runs(task, backbone, plan, out)
        print(f"runs: {out / 'runs'}")
        return
    examples, probe = pools(task, plan)
    train_examples = {**examples["A"], **examples["B"]}
    runs = load_runs(out)
    by_group = {g: [r.recording for r in runs if r.group == g] for g in ("train", "validation")}
    if cfg.stage == "fit":
        encoding = (cfg.features.modality, plan.max_positions, 0 if task.regression else len(task.labels))
        train_features = example_features(backbone, train_examples, *encoding)
        test_features = example_features(backbone, probe, *encoding)
        simulator = GPTfluence(train_features, test_features, SimulatorConfig(**cfg.simulator))
        log = simulator.fit(
            by_group["train"], by_group["validation"] or by_group["train"][-1:], progress=True
        )
        simulator.save(out / "simulator.pt")
        torch.save(Simfluence.fit(by_group["train"], cfg.simfluence_ridge).to_plain(), out / "simfluence.pt")
        train_runs = [r for r in runs if r.group == "train"]
        scale = tracin_scale([(r.recording, tracin_changes(r.recording, r.snapshots())) for r in train_runs])
        (out / "fit.json").write_text(json.dumps({"tracin_scale": scale, "simulator_log": log}, indent=2))
        print(
            f"fitted: {out / 'simulator.pt'} (best validation roll-out MSE "
            f"{min(e['validation_rollout_mse'] for e in log):.5f}), TracIn scale {scale:.3g}"
        )
        return
    simulator = GPTfluence.load(out / "simulator.pt")
    simfluence = Simfluence.from_plain(load_plain(out / "simfluence.pt", "Simfluence factors (stage=fit)"))
    scale = json.loads((out / "fit.json").read_text())["tracin_scale"]
    if cfg.stage == "evaluate":
        results = evaluate(runs, simulator, simfluence, scale)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        (out / "results.md").write_text(table(results) + "\n")
        print(table(results))
        print(f"results: {out / 'results.md'}")
        return
    if cfg.stage == "explain":
        run = next(
            r
            for r in runs
            if r.name == cfg.explain.run or (cfg.explain.run is None and r.group == "held_out")
        )
        p = cfg.explain.probe
        influence = leave_one_out(simulator, run.recording, p)
        trajectories = {"real": run.recording.losses[:, p]}
        trajectories |= {
            m: v[:, p] for m, v in predictions(run, simulator, simfluence, scale).items() if m != "no change"
        }
        path = explanation_picture(
            out / "explanation.png",
            backbone.renderer,
            probe[run.recording.probe[p]],
            train_examples,
            influence,
            trajectories,
            task.labels,
            cfg.explain.top,
        )
        (out / "influences.json").write_text(
            json.dumps({"run": run.name, "probe": run.recording.probe[p], "influence": influence}, indent=2)
        )
        print(f"explanation: {path}")
        return
    raise SystemExit(f"stage must be record, fit, evaluate or explain, got {cfg.stage!r}")


@hydra.main(config_path="../conf", config_name="influence", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with reported("influence"):
        check_finite(cfg)
        main_stage(cfg)


if __name__ == "__main__":
    main()
