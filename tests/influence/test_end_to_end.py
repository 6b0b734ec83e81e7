"""record -> fit -> evaluate -> explain, through ``eval/influence.py``, on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_record_fit_evaluate_explain(tiny_checkpoint, tmp_path):
    common = [
        f"dir={tmp_path}",
        f"checkpoint={tiny_checkpoint}",
        "runs.steps=8",
        "runs.snapshot_every=4",
        "runs.runs=[2,1,1,1]",
        "runs.pool_size=24",
        "runs.subset=16",
        "runs.probe_size=6",
        "runs.max_positions=32",
        "simulator.epochs=5",
    ]
    for stage in ("record", "fit", "evaluate", "explain"):
        done = subprocess.run(
            [sys.executable, "eval/influence.py", f"stage={stage}", *common],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["held_out-004", "train-001", "train-002", "unseen-005", "validation-003"]
    info = json.loads((tmp_path / "runs" / "train-001" / "run.json").read_text())
    assert 0 < info["recording_seconds"] < info["seconds"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"held_out", "unseen"}
    assert results["unseen"]["Simfluence"] is None  # it cannot score examples it never saw
    for group in results.values():
        for method in ("GPTfluence", "TracIn-CP", "TracIn-CP (LS-rescaled)", "no change"):
            assert group[method]["trajectories"] == 6 and group[method]["mse"] >= 0
    assert "| held_out | GPTfluence |" in (tmp_path / "results.md").read_text()
    influence = json.loads((tmp_path / "influences.json").read_text())
    assert influence["run"] == "held_out-004" and len(influence["influence"]) == 16
    assert Image.open(tmp_path / "explanation.png").width > 500
