"""GPTfluence: a featurised simulator of how training batches move a test example's metric.

The n-th order model (Chai et al. 2024, arXiv 2404.07840): with ``phi_t(z)`` the metric of
test example z after transition t and B_t the training examples of that transition,

    phi_t(z) = sum_{j=1..n} alpha_j(B_t, z) * phi_{t-j}(z) + beta(B_t, z)
    alpha_j(B_t, z) = sum_{i in B_t} A_j(x_i, z),    beta(B_t, z) = sum_{i in B_t} B(x_i, z)

where ``[A_1..A_n, B](x, z)`` are the n + 1 outputs of an MLP over the concatenated frozen
features ``[h(x); h(z)]``. Because the factors come from features, not from a table indexed
by example, the simulator scores training examples it never saw.

Choices the paper leaves open, made here: the MLP's outputs are residuals around identity
dynamics (alpha_1 = 1, the rest 0, at initialisation: an untrained simulator predicts "no
change"); before step n the missing history repeats the first value; fitting is
teacher-forced (true history in, next value out), and prediction rolls out from the true
first value alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pixeltext_train.checkpoints import load_plain
from pixeltext_train.influence.record import Recording


@dataclass
class SimulatorConfig:
    order: int = 3  # n: how many past values each step depends on
    width: int = 256  # the MLP's hidden width
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 128  # (transition, test example) pairs per update
    epochs: int = 60
    patience: int = 8  # epochs without improvement on the validation runs
    seed: int = 0


class Featurised(nn.Module):
    """The factor network: ``[h(x); h(z)] -> (A_1..A_n, B)``."""

    def __init__(self, features: int, config: SimulatorConfig):
        super().__init__()
        self.order = config.order
        self.mlp = nn.Sequential(
            nn.Linear(2 * features, config.width), nn.ReLU(), nn.Linear(config.width, config.order + 1)
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def factors(self, train: Tensor, mask: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
        """train [M, b, F] (a transition's examples, padded), mask [M, b], test [M, F]
        -> alpha [M, n], beta [M]."""
        pairs = torch.cat([train, test[:, None].expand(-1, train.shape[1], -1)], dim=-1)
        out = (self.mlp(pairs) * mask[..., None]).sum(dim=1)
        identity = torch.zeros(self.order, device=out.device)
        identity[0] = 1.0
        return out[:, : self.order] + identity, out[:, self.order]

    def step(self, history: Tensor, train: Tensor, mask: Tensor, test: Tensor) -> Tensor:
        """history [M, n] (phi_{t-1}, ..., phi_{t-n}) -> phi_t [M]."""
        alpha, beta = self.factors(train, mask, test)
        return (alpha * history).sum(dim=-1) + beta


@dataclass
class Transitions:
    """Every (run, transition, test example) of some recordings, as tensors for fitting."""

    history: Tensor  # [N, n]
    target: Tensor  # [N]
    batch: Tensor  # [N, b] indices into the training features (padded with 0)
    mask: Tensor  # [N, b]
    test: Tensor  # [N] indices into the test features


def histories(values: np.ndarray, order: int) -> np.ndarray:
    """[T+1, P] values -> [T, P, n]: for each t >= 1, (v_{t-1}, ..., v_{t-n}), padded with v_0."""
    padded = np.concatenate([np.repeat(values[:1], order - 1, axis=0), values])
    steps = values.shape[0] - 1
    return np.stack([padded[order - 1 - j : order - 1 - j + steps] for j in range(order)], axis=-1)


def batch_indices(recording: Recording, train_index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """[T, b] indices of each transition's training examples in the feature table, and mask."""
    width = max((len(b) for b in recording.batches), default=1)
    index = np.zeros((recording.transitions, width), np.int64)
    mask = np.zeros((recording.transitions, width), np.float32)
    for t, keys in enumerate(recording.batches):
        missing = [k for k in keys if k not in train_index]
        if missing:
            raise KeyError(f"no features for training examples {missing[:3]}...")
        index[t, : len(keys)] = [train_index[k] for k in keys]
        mask[t, : len(keys)] = 1.0
    return index, mask


def transitions(
    recordings: list[Recording], train_index: dict[str, int], test_index: dict[str, int], order: int
) -> Transitions:
    parts = []
    for recording in recordings:
        index, mask = batch_indices(recording, train_index)
        steps, probes = recording.transitions, len(recording.probe)
        parts.append(
            (
                histories(recording.losses, order).reshape(steps * probes, order),
                recording.losses[1:].reshape(-1),
                np.repeat(index, probes, axis=0),
                np.repeat(mask, probes, axis=0),
                np.tile([test_index[k] for k in recording.probe], steps),
            )
        )
    width = max(p[2].shape[1] for p in parts)

    def joined(column: int, pad: bool = False) -> np.ndarray:
        arrays = [p[column] for p in parts]
        return np.concatenate(
            [np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in arrays] if pad else arrays
        )

    return Transitions(
        torch.tensor(joined(0), dtype=torch.float32),
        torch.tensor(joined(1), dtype=torch.float32),
        torch.tensor(joined(2, pad=True)),
        torch.tensor(joined(3, pad=True)),
        torch.tensor(joined(4)),
    )


class GPTfluence:
    """The simulator with its feature tables: fit on recordings, roll out new ones, save, load."""

    def __init__(
        self,
        train_features: dict[str, np.ndarray],
        test_features: dict[str, np.ndarray],
        config: SimulatorConfig,
    ):
        self.config = config
        self.train_keys = list(train_features)
        self.test_keys = list(test_features)
        self.train_index = {k: i for i, k in enumerate(self.train_keys)}
        self.test_index = {k: i for i, k in enumerate(self.test_keys)}
        self.train_table = torch.tensor(np.stack(list(train_features.values())), dtype=torch.float32)
        self.test_table = torch.tensor(np.stack(list(test_features.values())), dtype=torch.float32)
        torch.manual_seed(config.seed)
        self.network = Featurised(self.train_table.shape[1], config)

    def _predict(self, data: Transitions, rows: Tensor) -> Tensor:
        return self.network.step(
            data.history[rows],
            self.train_table[data.batch[rows]],
            data.mask[rows],
            self.test_table[data.test[rows]],
        )

    def fit(
        self, train_runs: list[Recording], validation_runs: list[Recording], progress: bool = False
    ) -> list[dict]:
        """Teacher-forced MSE on ``train_runs``; keeps the weights best on ``validation_runs``
        (rolled out, as the simulator is used). Returns the per-epoch log."""
        c = self.config
        data = transitions(train_runs, self.train_index, self.test_index, c.order)
        optimizer = torch.optim.Adam(self.network.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        generator = torch.Generator().manual_seed(c.seed)
        best, best_state, stale, log = float("inf"), None, 0, []
        epochs = range(c.epochs)
        if progress:
            from tqdm import tqdm

            epochs = tqdm(epochs, desc="fitting GPTfluence", unit=" epochs")
        for epoch in epochs:
            self.network.train()
            total = 0.0
            order = torch.randperm(len(data.target), generator=generator)
            for rows in order.split(c.batch_size):
                loss = (self._predict(data, rows) - data.target[rows]).pow(2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(rows)
            score = float(np.mean([((self.simulate(r) - r.losses) ** 2)[1:].mean() for r in validation_runs]))
            log.append(
                {"epoch": epoch, "train_mse": total / len(data.target), "validation_rollout_mse": score}
            )
            if score < best:
                best, stale = score, 0
                best_state = {k: v.clone() for k, v in self.network.state_dict().items()}
            else:
                stale += 1
                if stale >= c.patience:
                    break
        if best_state is not None:
            self.network.load_state_dict(best_state)
        return log

    @torch.no_grad()
    def simulate(self, recording: Recording, drop: str | None = None) -> np.ndarray:
        """[T+1, P] the probe's metric rolled out from its true first value over the
        recording's batches; ``drop``: as if that training example had not been in them."""
        self.network.eval()
        order = self.config.order
        index, mask = batch_indices(recording, self.train_index)
        if drop is not None:
            mask = mask * (index != self.train_index[drop])
        tests = self.test_table[[self.test_index[k] for k in recording.probe]]
        values = [torch.tensor(recording.losses[0], dtype=torch.float32)]
        for t in range(recording.transitions):
            history = torch.stack([values[max(len(values) - 1 - j, 0)] for j in range(order)], dim=-1)
            train = self.train_table[torch.tensor(index[t])][None].expand(len(tests), -1, -1)
            step_mask = torch.tensor(mask[t])[None].expand(len(tests), -1)
            values.append(self.network.step(history, train, step_mask, tests))
        return torch.stack(values).numpy().astype(np.float64)

    def save(self, path: str | Path) -> None:
        """Tensors, strings and numbers only (loads without unpickling code)."""
        torch.save(
            {
                "config": asdict(self.config),
                "network": self.network.state_dict(),
                "train_keys": self.train_keys,
                "train_table": self.train_table,
                "test_keys": self.test_keys,
                "test_table": self.test_table,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> GPTfluence:
        saved = load_plain(path, "a GPTfluence simulator (eval/influence.py stage=fit)")
        train = dict(zip(saved["train_keys"], saved["train_table"].numpy(), strict=True))
        test = dict(zip(saved["test_keys"], saved["test_table"].numpy(), strict=True))
        simulator = cls(train, test, SimulatorConfig(**saved["config"]))
        simulator.network.load_state_dict(saved["network"])
        return simulator
