"""The render job on a real distributed engine (Beam's DaskRunner on a local cluster of worker
processes) writes the same bytes as the local runner, bad records and a killed job included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from pixeltext_render.job.dask_cluster import DaskUnavailable, dask_cluster
from pixeltext_render.job.pipeline import RenderJob, run
from pixeltext_render.job.readers.base import ReadOptions

pytestmark = pytest.mark.slow


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dirty_corpus(tmp_path_factory, articles) -> Path:
    """Real articles in three files, with bad records, a duplicate id and a truncated file."""
    folder = tmp_path_factory.mktemp("dirty")
    records = [{"id": f"a{i}", "text": a["text"][:3000]} for i, a in enumerate(articles[:12])]
    lines = [json.dumps(r) for r in records[:6]]
    lines += ['{"id": "broken", "text": "no end', json.dumps({"id": "a1", "text": "A duplicate id."})]
    (folder / "one.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "two.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[6:]))
    (folder / "three.txt").write_text("A plain text document.")
    (folder / "unknown.bin").write_bytes(b"\x00\x01")
    return folder


def render_job(corpus: Path, out: Path) -> RenderJob:
    return RenderJob((str(corpus),), str(out), ReadOptions(), shard_samples=1)


@pytest.fixture(scope="module")
def direct_output(tmp_path_factory, dirty_corpus) -> Path:
    out = tmp_path_factory.mktemp("direct") / "out"
    run(render_job(dirty_corpus, out), workers=1, progress=False)
    return out


def test_dask_and_direct_runners_write_the_same_bytes(tmp_path, dirty_corpus, direct_output):
    expected = folder_bytes(direct_output)
    assert any(name.startswith("rejected/") and data for name, data in expected.items())
    two = tmp_path / "direct-2"
    run(render_job(dirty_corpus, two), workers=2, progress=False)
    assert folder_bytes(two) == expected
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask = tmp_path / "dask"
        run(
            render_job(dirty_corpus, dask),
            "DaskRunner",
            progress=False,
            dask_address=cluster.scheduler_address,
        )
        with Client(cluster.scheduler_address) as client:
            rendered_in = client.run(lambda: "pixeltext_render.renderer" in sys.modules)
    assert folder_bytes(dask) == expected
    assert len(rendered_in) == 2 and any(rendered_in.values())  # the workers did the rendering


def test_a_killed_dask_job_reruns_to_the_same_bytes(tmp_path, dirty_corpus, direct_output):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "pixeltext_render.cli", "run", "--corpus", str(dirty_corpus)]
    command += [
        "--out",
        str(out),
        "--shard-samples",
        "1",
        "--runner",
        "DaskRunner",
        "--workers",
        "2",
        "--quiet",
    ]
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    while len(list(out.glob(".work/shard-*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher, its cluster and every worker
    process.wait()
    assert not (out / "manifest.json").exists()
    subprocess.run(command, check=True, capture_output=True)
    assert folder_bytes(out) == folder_bytes(direct_output)


def test_a_local_cluster_has_workers_without_the_statistical_profiler():
    """Its samples pile up for 1,000 s: with no dashboard to show them, they only cost memory."""
    with dask_cluster(None, 2) as (address, _), Client(address) as client:
        profiling = client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
    assert len(profiling) == 2 and not any(profiling.values())


def test_a_scheduler_that_does_not_answer_is_an_error_that_says_so(tmp_path, dirty_corpus):
    start = time.monotonic()
    with pytest.raises(DaskUnavailable, match=r"no Dask scheduler answers at tcp://127\.0\.0\.1:9"):
        run(render_job(dirty_corpus, tmp_path / "out"), "DaskRunner", dask_address="tcp://127.0.0.1:9")
    assert time.monotonic() - start < 60 and not (tmp_path / "out").exists()


def test_without_the_dask_extra_the_error_names_it(tmp_path, dirty_corpus, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(DaskUnavailable, match=r"pixeltext-render\[dask\]"):
        run(render_job(dirty_corpus, tmp_path / "out"), "DaskRunner")
