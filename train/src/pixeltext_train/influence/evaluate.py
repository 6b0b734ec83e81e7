"""Score simulated trajectories against recorded ones, method by method, run group by group.

Per trajectory (one probe example in one run): mean squared and absolute error over steps
1..T (the first value is given to every method); the error of the final value; and, per
run, the Spearman correlation between predicted and real final values across the probe
(does the method rank which test examples end up worse?), averaged over runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixeltext_train.checkpoints import load_plain
from pixeltext_train.evaluate.metrics import spearman
from pixeltext_train.influence.baselines import TRACIN, Simfluence, Snapshot, tracin_changes, tracin_simulate
from pixeltext_train.influence.record import RECORD, Recording, read_recording
from pixeltext_train.influence.simulator import GPTfluence

METHODS = ("GPTfluence", "Simfluence", "TracIn-CP", "TracIn-CP (LS-rescaled)", "no change")


@dataclass
class Run:
    name: str
    group: str
    recording: Recording
    directory: Path

    def snapshots(self) -> list[Snapshot]:
        saved = load_plain(self.directory / TRACIN, "TracIn factors (eval/influence.py stage=record)")
        return [Snapshot.from_plain(snapshot) for snapshot in saved["snapshots"]]


def load_runs(out: Path) -> list[Run]:
    runs = []
    for info_path in sorted(Path(out, "runs").glob("*/run.json")):
        info = json.loads(info_path.read_text())
        runs.append(
            Run(info["name"], info["group"], read_recording(info_path.parent / RECORD), info_path.parent)
        )
    if not runs:
        raise FileNotFoundError(f"no finished runs under {out}/runs: run stage=record first")
    return runs


def trajectory_scores(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """``pairs``: (predicted, real) [T+1, P] per run -> the table's numbers."""
    squared = np.concatenate([((p - r)[1:] ** 2).mean(axis=0) for p, r in pairs])
    absolute = np.concatenate([np.abs(p - r)[1:].mean(axis=0) for p, r in pairs])
    final = np.concatenate([np.abs(p[-1] - r[-1]) for p, r in pairs])
    rho = [spearman(p[-1], r[-1]) for p, r in pairs]
    return {
        "mse": float(squared.mean()),
        "mse_std": float(squared.std()),
        "mae": float(absolute.mean()),
        "mae_std": float(absolute.std()),
        "final_mae": float(final.mean()),
        "spearman": float(np.nanmean(rho)),
        "trajectories": len(squared),
    }


def predictions(
    run: Run, simulator: GPTfluence, simfluence: Simfluence, tracin_scale: float
) -> dict[str, np.ndarray]:
    """Every method's [T+1, P] trajectory for one run (Simfluence only where it knows the examples)."""
    recording = run.recording
    changes = tracin_changes(recording, run.snapshots())
    out = {
        "GPTfluence": simulator.simulate(recording),
        "TracIn-CP": tracin_simulate(recording, changes),
        "TracIn-CP (LS-rescaled)": tracin_simulate(recording, changes, tracin_scale),
        "no change": np.repeat(recording.losses[:1], len(recording.losses), axis=0),
    }
    if simfluence.covers(recording):
        out["Simfluence"] = simfluence.simulate(recording)
    return out


def evaluate(
    runs: list[Run],
    simulator: GPTfluence,
    simfluence: Simfluence,
    tracin_scale: float,
    groups: tuple[str, ...] = ("held_out", "unseen"),
) -> dict[str, dict[str, dict[str, float] | None]]:
    """{group: {method: scores, or None where a method cannot predict}}."""
    results = {}
    for group in groups:
        chosen = [r for r in runs if r.group == group]
        if not chosen:
            continue
        predicted = [predictions(r, simulator, simfluence, tracin_scale) for r in chosen]
        results[group] = {
            method: trajectory_scores(
                [(p[method], r.recording.losses) for p, r in zip(predicted, chosen, strict=True)]
            )
            if all(method in p for p in predicted)
            else None
            for method in METHODS
        }
    return results


def table(results: dict) -> str:
    """The results as a Markdown table."""
    lines = [
        "| runs | method | MSE (± std) | MAE (± std) | final-step MAE | Spearman (final) |",
        "|---|---|---|---|---|---|",
    ]
    for group, methods in results.items():
        for method, s in methods.items():
            if s is None:
                lines.append(f"| {group} | {method} | — | — | — | — |")
            else:
                lines.append(
                    f"| {group} | {method} | {s['mse']:.4f} ± {s['mse_std']:.4f} | "
                    f"{s['mae']:.4f} ± {s['mae_std']:.4f} | {s['final_mae']:.4f} | {s['spearman']:.3f} |"
                )
    return "\n".join(lines)
