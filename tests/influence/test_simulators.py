"""GPTfluence recovers a process generated with known factors; the baselines match hand
computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixeltext_train.influence.baselines import (
    Simfluence,
    Snapshot,
    tracin_changes,
    tracin_scale,
    tracin_simulate,
)
from pixeltext_train.influence.record import Recording
from pixeltext_train.influence.simulator import Featurised, GPTfluence, SimulatorConfig, histories


def synthetic_runs(truth: GPTfluence, keys: list[str], runs: int, steps: int, seed: int) -> list[Recording]:
    """Runs whose probe losses follow ``truth``'s factors exactly, batches of 4 drawn from ``keys``."""
    rng = np.random.default_rng(seed)
    recordings = []
    for _ in range(runs):
        batches = [list(rng.choice(keys, 4, replace=False)) for _ in range(steps)]
        start = rng.uniform(1.0, 2.0, len(truth.test_keys))
        skeleton = Recording(truth.test_keys, list(range(steps + 1)), np.tile(start, (steps + 1, 1)), batches)
        skeleton.losses = truth.simulate(skeleton)
        recordings.append(skeleton)
    return recordings


def test_gptfluence_recovers_known_factors_and_generalises_to_unseen_examples():
    rng = np.random.default_rng(0)
    train = {f"x{i}": v for i, v in enumerate(rng.normal(size=(60, 8)).astype(np.float32))}
    tests = {f"z{i}": v for i, v in enumerate(rng.normal(size=(6, 8)).astype(np.float32))}
    truth = GPTfluence(train, tests, SimulatorConfig(order=1, width=16, seed=1))
    torch.manual_seed(1)
    torch.nn.init.normal_(truth.network.mlp[-1].weight, std=0.02)  # non-trivial factors around identity
    seen, unseen = list(train)[:40], list(train)[40:]
    fit_runs = synthetic_runs(truth, seen, 10, 25, seed=2)
    held_out = synthetic_runs(truth, seen, 2, 25, seed=3)
    novel = synthetic_runs(truth, unseen, 2, 25, seed=4)

    model = GPTfluence(
        train, tests, SimulatorConfig(order=1, width=64, lr=3e-3, epochs=150, patience=30, seed=0)
    )
    model.fit(fit_runs, held_out[:1])
    for runs in (held_out, novel):
        for run in runs:
            error = ((model.simulate(run) - run.losses) ** 2)[1:].mean()
            no_change = ((run.losses[0] - run.losses) ** 2)[1:].mean()
            assert error < 0.02 * no_change, (error, no_change)

    # the factors themselves, for batches of examples the fit never saw
    batch = torch.tensor(np.stack([train[k] for k in unseen[:4]]))[None].expand(6, -1, -1)
    mask, test = torch.ones(6, 4), torch.tensor(np.stack(list(tests.values())))
    with torch.no_grad():
        for learned, true in zip(
            model.network.factors(batch, mask, test), truth.network.factors(batch, mask, test), strict=True
        ):
            np.testing.assert_allclose(learned.numpy(), true.numpy(), atol=0.03)


def test_the_simulator_saves_and_loads(tmp_path):
    rng = np.random.default_rng(0)
    train = {f"x{i}": v for i, v in enumerate(rng.normal(size=(5, 4)).astype(np.float32))}
    tests = {"z": rng.normal(size=4).astype(np.float32)}
    model = GPTfluence(train, tests, SimulatorConfig(order=3, width=8))
    torch.nn.init.normal_(model.network.mlp[-1].weight, std=0.1)
    run = Recording(["z"], [0, 1, 2], np.ones((3, 1)), [["x0", "x1"], ["x2", "x4"]])
    model.save(tmp_path / "sim.pt")
    np.testing.assert_array_equal(GPTfluence.load(tmp_path / "sim.pt").simulate(run), model.simulate(run))


def test_an_untrained_simulator_predicts_no_change_and_histories_pad_with_the_first_value():
    model = Featurised(4, SimulatorConfig(order=2, width=8))
    alpha, beta = model.factors(torch.randn(3, 2, 4), torch.ones(3, 2), torch.randn(3, 4))
    assert alpha.tolist() == [[1.0, 0.0]] * 3 and beta.tolist() == [0.0] * 3
    values = np.array([[1.0], [2.0], [3.0]])
    assert histories(values, 3)[:, 0].tolist() == [[1.0, 1.0, 1.0], [2.0, 1.0, 1.0]]


def test_simfluence_finds_the_factors_of_a_hand_computed_run():
    # phi_t = (1 + sum a_i) phi_{t-1} + sum b_i with a = (-0.1, 0.2), b = (0.05, -0.02):
    # 1.0 -x1-> 0.9 * 1.0 + 0.05 = 0.95 -x2-> 1.2 * 0.95 - 0.02 = 1.12
    #     -x1-> 0.9 * 1.12 + 0.05 = 1.058 -x2-> 1.2 * 1.058 - 0.02 = 1.2496
    losses = np.array([[1.0], [0.95], [1.12], [1.058], [1.2496]])
    run = Recording(["z"], [0, 1, 2, 3, 4], losses, [["x1"], ["x2"], ["x1"], ["x2"]])
    fitted = Simfluence.fit([run], ridge=1e-10)
    assert fitted.train_keys == ["x1", "x2"]
    np.testing.assert_allclose(fitted.a[0], [-0.1, 0.2], atol=1e-6)
    np.testing.assert_allclose(fitted.b[0], [0.05, -0.02], atol=1e-6)
    np.testing.assert_allclose(fitted.simulate(run), losses, atol=1e-6)
    assert not fitted.covers(Recording(["z"], [0, 1], losses[:2], [["x3"]]))


def test_tracin_matches_a_hand_computed_step():
    # g.g' (h.h'): x1: (0.5*0.4 + 0.5*0.4)(1*1 + 0*1) = 0.4;  x2: (-0.08 - 0.08)(0 + 2) = -0.32
    # change = -lr * (0.4 - 0.32) / 2 (a mean over the batch of two) = -0.1 * 0.04 = -0.004
    snapshot = Snapshot(
        0,
        {
            "x1": (np.array([0.5, -0.5]), np.array([1.0, 0.0])),
            "x2": (np.array([-0.2, 0.2]), np.array([0.0, 2.0])),
        },
        np.array([[0.4, -0.4]]),
        np.array([[1.0, 1.0]]),
    )
    later = Snapshot(
        1, {k: (-g, h) for k, (g, h) in snapshot.train.items()}, snapshot.probe_g, snapshot.probe_h
    )
    run = Recording(
        ["z"], [0, 1, 2], np.array([[1.0], [0.99], [1.0]]), [["x1", "x2"], ["x1", "x2"]], [0.1, 0.1]
    )
    changes = tracin_changes(run, [later, snapshot])
    np.testing.assert_allclose(
        changes[:, 0], [-0.004, 0.004]
    )  # each step uses the checkpoint it started from
    np.testing.assert_allclose(tracin_simulate(run, changes)[:, 0], [1.0, 0.996, 1.0])
    assert tracin_scale([(run, changes)]) == pytest.approx((-0.004 * -0.01 + 0.004 * 0.01) / (2 * 0.004**2))
