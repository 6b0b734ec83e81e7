"""The baselines GPTfluence is measured against, on the same recordings.

Simfluence-Linear (Guu et al. 2023): one multiplicative and one additive factor per
(training example, test example), ``phi_t = (1 + sum_{i in B_t} a_i) phi_{t-1} + sum_{i in B_t} b_i``,
fitted per test example by ridge regression (closed form) on the training runs. Written with
``1 +`` so that the ridge pulls towards "no change"; it is Simfluence's ``A_i = a_i + 1/|B|``.
It has nothing to say about a training example it never saw.

TracIn-CP (Pruthi et al. 2020), last layer: a step changes a test loss by
``-lr_t / |B| * sum_{i in B_t} grad l(x_i) . grad l(z)``, the gradients taken at the newest
saved checkpoint before the step. For a linear head on features h with output gradient g,
``grad l(x) . grad l(z) = (g_x . g_z)(h_x . h_z)``. Optionally rescaled by one least-squares
factor fitted on the training runs (the optimiser is Adam, not SGD, so raw TracIn is off in scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pixeltext_train.influence.record import Recording

TRACIN = "tracin.pt"  # a run's snapshots, in its folder


def _counts(recording: Recording, index: dict[str, int]) -> np.ndarray:
    """[T, N] how often each training example is in each transition."""
    counts = np.zeros((recording.transitions, len(index)))
    for t, keys in enumerate(recording.batches):
        for key in keys:
            counts[t, index[key]] += 1
    return counts


@dataclass
class Simfluence:
    train_keys: list[str]
    probe: list[str]
    a: np.ndarray  # [P, N] multiplicative factors (around 1)
    b: np.ndarray  # [P, N] additive factors

    @classmethod
    def fit(cls, runs: list[Recording], ridge: float = 1e-2) -> Simfluence:
        probe = runs[0].probe
        keys = sorted({k for run in runs for batch in run.batches for k in batch})
        index = {k: i for i, k in enumerate(keys)}
        counts = np.concatenate([_counts(run, index) for run in runs])  # [rows, N]
        previous = np.concatenate([run.losses[:-1] for run in runs])  # [rows, P]
        change = np.concatenate([np.diff(run.losses, axis=0) for run in runs])
        n = len(keys)
        a, b = np.zeros((len(probe), n)), np.zeros((len(probe), n))
        for p in range(len(probe)):
            design = np.concatenate([counts * previous[:, p : p + 1], counts], axis=1)
            gram = design.T @ design + ridge * np.eye(2 * n)
            solution = np.linalg.solve(gram, design.T @ change[:, p])
            a[p], b[p] = solution[:n], solution[n:]
        return cls(keys, probe, a, b)

    def to_plain(self) -> dict[str, Any]:
        """Tensors and strings only (``simfluence.pt`` loads without unpickling code)."""
        return {
            "train_keys": self.train_keys,
            "probe": self.probe,
            "a": torch.from_numpy(self.a),
            "b": torch.from_numpy(self.b),
        }

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> Simfluence:
        return cls(list(data["train_keys"]), list(data["probe"]), data["a"].numpy(), data["b"].numpy())

    def covers(self, recording: Recording) -> bool:
        known = set(self.train_keys)
        return all(k in known for batch in recording.batches for k in batch)

    def simulate(self, recording: Recording) -> np.ndarray:
        if not self.covers(recording):
            raise KeyError("Simfluence has no factors for training examples it never saw")
        counts = _counts(recording, {k: i for i, k in enumerate(self.train_keys)})
        values = [recording.losses[0]]
        for t in range(recording.transitions):
            values.append((1 + self.a @ counts[t]) * values[-1] + self.b @ counts[t])
        return np.stack(values)


@dataclass
class Snapshot:
    """Last-layer gradient factors at one checkpoint: output gradients g and head inputs h."""

    step: int
    train: dict[str, tuple[np.ndarray, np.ndarray]]  # key -> (g, h)
    probe_g: np.ndarray  # [P, C]
    probe_h: np.ndarray  # [P, H]

    def to_plain(self) -> dict[str, Any]:
        """Tensors, strings and numbers only (``tracin.pt`` loads without unpickling code)."""
        keys = list(self.train)
        return {
            "step": self.step,
            "train_keys": keys,
            "train_g": torch.from_numpy(np.stack([self.train[k][0] for k in keys])),
            "train_h": torch.from_numpy(np.stack([self.train[k][1] for k in keys])),
            "probe_g": torch.from_numpy(self.probe_g),
            "probe_h": torch.from_numpy(self.probe_h),
        }

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> Snapshot:
        g, h = data["train_g"].numpy(), data["train_h"].numpy()
        train = {key: (g[i], h[i]) for i, key in enumerate(data["train_keys"])}
        return cls(int(data["step"]), train, data["probe_g"].numpy(), data["probe_h"].numpy())


def tracin_changes(recording: Recording, snapshots: list[Snapshot]) -> np.ndarray:
    """[T, P] TracIn-CP's estimate of each transition's change of each probe loss."""
    snapshots = sorted(snapshots, key=lambda s: s.step)
    changes = np.zeros((recording.transitions, len(recording.probe)))
    for t, keys in enumerate(recording.batches):
        start, end = recording.steps[t], recording.steps[t + 1]
        snapshot = [s for s in snapshots if s.step <= start][-1]  # the parameters the step started from
        g = np.stack([snapshot.train[k][0] for k in keys])
        h = np.stack([snapshot.train[k][1] for k in keys])
        products = (g @ snapshot.probe_g.T) * (h @ snapshot.probe_h.T)  # [b, P]
        per_step_batch = len(keys) / (end - start)
        if recording.lrs[t] is None:
            raise ValueError(f"no learning rate recorded for step {end}: TracIn needs it")
        changes[t] = -recording.lrs[t] * products.sum(axis=0) / per_step_batch
    return changes


def tracin_scale(runs: list[tuple[Recording, np.ndarray]]) -> float:
    """The least-squares factor s in ``phi_t - phi_{t-1} = s * change_t`` over training runs."""
    changes = np.concatenate([c.ravel() for _, c in runs])
    actual = np.concatenate([np.diff(r.losses, axis=0).ravel() for r, _ in runs])
    return float(changes @ actual / max(changes @ changes, 1e-30))


def tracin_simulate(recording: Recording, changes: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """[T+1, P] the first value plus the (scaled) cumulative TracIn changes."""
    return np.concatenate([recording.losses[:1], recording.losses[:1] + scale * np.cumsum(changes, axis=0)])
