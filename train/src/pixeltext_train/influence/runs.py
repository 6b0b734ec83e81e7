"""The runs GPTfluence learns from: short fine-tuning runs of one config with different data
orders and training subsets, each recording its dynamics (``influence.jsonl``) and TracIn's
last-layer gradient factors at a few checkpoints (``tracin.pt``).

Every run starts from the same weights (the head's initialisation is fixed), so that runs
differ only in their data, as the paper's do. The learning rate is constant (no warm-up, no
decay): the simulator's factors do not depend on the step, so the process it learns should not
either.

Runs come in groups: ``train`` runs (fit the simulators) and ``validation`` runs (choose when
to stop fitting) draw subsets from pool A of training examples; ``held_out`` runs also draw
from pool A with new seeds (new orders and subsets of seen examples); ``unseen`` runs draw
from pool B, examples no simulator was fitted on.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import lightning as L
import numpy as np
import torch

from pixeltext_train.evaluate.backbone import Backbone, sequence_spec
from pixeltext_train.evaluate.finetune import (
    ClassifierModule,
    FinetuneOptions,
    TaskSplit,
    finetune,
    loader,
)
from pixeltext_train.evaluate.tasks import Example, Task
from pixeltext_train.influence.baselines import TRACIN, Snapshot
from pixeltext_train.influence.record import RECORD, InfluenceRecorder

GROUPS = ("train", "validation", "held_out", "unseen")


@dataclass
class RunPlan:
    modality: str = "pixel"
    max_positions: int = 64
    pool_size: int = 1000  # training examples in each of pool A and pool B
    subset: int = 384  # examples each run trains on (a seeded sample of its pool): one pass
    probe_size: int = 32  # test examples whose losses are recorded (from the validation split)
    steps: int = 48
    batch_size: int = 8
    lr: float = 3e-4
    snapshot_every: int = 12  # TracIn checkpoints (step 0 included)
    runs: tuple[int, int, int, int] = (24, 2, 4, 4)  # train, validation, held_out, unseen
    seed: int = 0


@dataclass
class RunInfo:
    name: str
    group: str
    pool: str
    seed: int


def schedule(plan: RunPlan) -> list[RunInfo]:
    runs, seed = [], plan.seed
    for group, count in zip(GROUPS, plan.runs, strict=True):
        for _ in range(count):
            seed += 1
            runs.append(RunInfo(f"{group}-{seed:03d}", group, "B" if group == "unseen" else "A", seed))
    return runs


def pools(task: Task, plan: RunPlan) -> tuple[dict[str, dict[str, Example]], dict[str, Example]]:
    """Pools A and B (disjoint training examples by key) and the probe (validation examples)."""
    validation = next(iter(task.evaluations.values()))
    if 2 * plan.pool_size > len(task.train) or plan.probe_size > len(validation):
        raise ValueError(
            f"{task.name} has {len(task.train)} training and {len(validation)} validation examples; "
            f"the plan needs {2 * plan.pool_size} and {plan.probe_size}"
        )
    rng = np.random.default_rng(plan.seed)
    order = rng.permutation(len(task.train))
    chosen = {"A": sorted(order[: plan.pool_size]), "B": sorted(order[plan.pool_size : 2 * plan.pool_size])}
    probe = sorted(rng.permutation(len(validation))[: plan.probe_size])
    return (
        {name: {f"train/{i}": task.train[i] for i in ids} for name, ids in chosen.items()},
        {f"validation/{i}": validation[i] for i in probe},
    )


class TracInSnapshots(L.Callback):
    """At step 0 and every ``every`` steps: the head's input h and the loss gradient g with
    respect to the head's output, for the run's training examples and the probe."""

    def __init__(self, every: int, train_items: list, probe_items: list):
        self.every, self.train_items, self.probe_items = every, train_items, probe_items
        self.snapshots: list[Snapshot] = []
        self.seconds = 0.0

    def on_train_start(self, trainer: L.Trainer, module: ClassifierModule) -> None:
        self._take(module, 0)

    def on_train_batch_end(
        self, trainer: L.Trainer, module: ClassifierModule, outputs, batch, index: int
    ) -> None:
        step = trainer.global_step
        taken = self.snapshots and self.snapshots[-1].step == step  # (mid gradient accumulation)
        if step % self.every == 0 and step < trainer.max_steps and not taken:
            self._take(module, step)

    @torch.no_grad()
    def _take(self, module: ClassifierModule, step: int) -> None:
        started = time.perf_counter()
        module.eval()
        train = {}
        for item in self.train_items:
            keys, g, h = _output_gradients(module, item)
            train.update({k: (g[i], h[i]) for i, k in enumerate(keys)})
        probe = [_output_gradients(module, item) for item in self.probe_items]
        module.train()
        self.snapshots.append(
            Snapshot(
                step, train, np.concatenate([p[1] for p in probe]), np.concatenate([p[2] for p in probe])
            )
        )
        self.seconds += time.perf_counter() - started


def _output_gradients(module: ClassifierModule, item) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Keys, d loss / d head output [B, C], and the head input [B, H] (the last real position)."""
    batch, labels = module.transfer_batch_to_device(item, module.device, 0)
    h = module.classifier.last_hidden(batch).float()
    outputs = module.classifier.head(h)
    if module.task.regression:
        g = 2 * (outputs - labels[:, None].float())
    else:
        g = torch.softmax(outputs, dim=-1) - torch.nn.functional.one_hot(labels, outputs.shape[-1]).float()
    return batch.keys, g.cpu().numpy(), h.cpu().numpy()


def record_runs(
    task: Task, backbone: Backbone, plan: RunPlan, out: Path, progress: bool = True
) -> list[RunInfo]:
    """Run every planned run not yet complete in ``out/runs/<name>/`` (safe to rerun)."""
    out = Path(out)
    (out / "plan.json").write_text(json.dumps(asdict(plan), indent=2))
    examples, probe = pools(task, plan)
    options = FinetuneOptions(
        modality=plan.modality,
        max_positions=plan.max_positions,
        pair_patches=plan.max_positions // 2,
        pair_tokens=plan.max_positions - plan.max_positions // 2,
        workers=0,  # small pools, many short runs: rendering in this process costs less
        batch_size=plan.batch_size,
        lr=plan.lr,
        warmup_steps=0,
        max_steps=plan.steps,
        eval_every=plan.steps,
        patience=1,
        min_lr_ratio=1.0,
        init_seed=plan.seed,
    )
    encoded = {
        name: TaskSplit("train", list(pool.values()), backbone, options, list(pool))
        for name, pool in examples.items()
    }
    probe_split = TaskSplit("probe", list(probe.values()), backbone, options, list(probe))
    spec = sequence_spec(backbone, options.budget(backbone).total(plan.modality))
    probe_items = list(loader(probe_split, options, spec, shuffle=False))  # same for every run
    runs = schedule(plan)
    for number, run in enumerate(runs, 1):
        run_dir = out / "runs" / run.name
        if (run_dir / "run.json").exists():
            continue
        shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted run starts over
        print(f"run {number}/{len(runs)}: {run.name} (pool {run.pool})", flush=True)
        pool = encoded[run.pool]
        chosen = sorted(np.random.default_rng(run.seed).permutation(len(pool))[: plan.subset])
        train_split = pool.subset(chosen)
        run_options = replace(options, seed=run.seed)
        recorder = InfluenceRecorder(probe=probe_items)
        snapshots = TracInSnapshots(
            plan.snapshot_every, list(loader(train_split, run_options, spec, shuffle=False)), probe_items
        )
        run_task = replace(task, evaluations={"probe": list(probe.values())})
        started = time.perf_counter()
        finetune(
            run_task,
            backbone,
            run_options,
            run_dir,
            splits={"train": train_split, "probe": probe_split},
            progress=progress,
            callbacks=[recorder, snapshots],
        )
        seconds = time.perf_counter() - started
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # a whole model per run: not needed
        torch.save({"snapshots": [s.to_plain() for s in snapshots.snapshots]}, run_dir / TRACIN)
        info = {
            **asdict(run),
            "seconds": seconds,
            "recording_seconds": recorder.seconds,
            "snapshot_seconds": snapshots.seconds,
            "record": RECORD,
        }
        (run_dir / "run.json").write_text(json.dumps(info, indent=2))
    return runs
