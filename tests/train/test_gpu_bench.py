"""``make bench-gpu`` runs with PyTorch, NumPy and the model code alone (as on a bare GPU machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ABSENT = (
    "lightning",
    "hydra",
    "apache_beam",
    "webdataset",
    "freetype",
    "uharfbuzz",
    "pixeltext_render",
    "yaml",
)


def test_the_gpu_benchmark_needs_only_torch_and_the_model_code(tmp_path):
    out = tmp_path / "gpu.json"
    arguments = ["--device", "cpu", "--models", "tiny", "--rows", "2", "--steps", "1", "--warmup", "1"]
    arguments += [
        "--no-search",
        "--no-compile",
        "--attention",
        "mask",
        "--dtype",
        "float32",
        "--decode-batches",
        "2",
        "--decode-new",
        "3",
        "--out",
        str(out),
    ]
    script = (
        "import runpy, sys\n"
        f"for name in {ABSENT!r}: sys.modules[name] = None  # importing any of them fails\n"
        f"sys.argv = ['gpu_bench.py', *{arguments!r}]\n"
        "runpy.run_path('bench/gpu_bench.py', run_name='__main__')\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO / "train" / "src")}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    assert [(r["packed"], r["attention"]) for r in rows] == [(False, "causal"), (True, "mask")]
    for row in rows:
        assert row["real_positions_per_s"] > 0 and row["mfu"] is None  # (no peak known for a CPU)
    assert rows[0]["padding_fraction"] == 0 and 0 <= rows[1]["padding_fraction"] < 0.25
    (decoding,) = json.loads(out.read_text())["decoding"]
    assert decoding["tokens_per_s"] > 0 and decoding["patches_per_s"] > 0 and decoding["same_tokens_as_eager"]
