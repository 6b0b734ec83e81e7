"""Training and evaluation need the renderer, the tokenizers and the shard format, not the render
job: Apache Beam and the readers are the ``job`` extra of ``pixeltext-render``."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

from conftest import REPO, custom_task_command

JOB_ONLY = ("apache-beam", "mwparserfromhell")
# Loaded at interpreter start (sitecustomize): these imports fail as in an environment without them
BLOCKER = """
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        blocked = name.split(".")[0] in ("apache_beam", "mwparserfromhell")
        if blocked or name.startswith("pixeltext_render.job"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, Absent())
"""


def test_the_renderer_package_needs_beam_only_for_its_job_extra():
    requirements = importlib.metadata.requires("pixeltext-render")
    for name in JOB_ONLY:
        found = [r for r in requirements if r.startswith(name)]
        assert found and all("extra ==" in r for r in found), found
    required = [r for r in importlib.metadata.requires("pixeltext-train") if "extra ==" not in r]
    assert [r for r in required if r.startswith("pixeltext-render")] == ["pixeltext-render"]  # the core alone


def test_training_and_fine_tuning_run_without_beam(tiny_overrides, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]),
    }

    def run(*command: str) -> None:
        done = subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]

    probe = "import apache_beam"
    assert subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode != 0
    run(
        "train/run.py",
        *tiny_overrides,
        "experiment=pixel_text",
        "trainer.max_steps=3",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"t": f"review {i}", "y": i % 2}) + "\n" for i in range(16)))
    out = tmp_path / "finetune"
    run(*custom_task_command(data, str(checkpoint), "pixel", 2, out), "finetune=quick", "finetune.workers=0")
    assert json.loads((out / "results.json").read_text())["steps"] == 2
