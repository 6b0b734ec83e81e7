"""``make bench`` (scale): the render job on 20,000 and 200,000 short real documents, 2 workers.

The documents are the shipped Rotten Tomatoes reviews and Django's messages in 24 languages,
``--distinct`` of them (4,000 by default) cycled under distinct ids, so that each worker has
seen every text by the end of the smaller run: what grows between the runs is then the corpus,
not the variety of text in the renderer's caches (which are bounded: ``cache_size`` pieces).
The job runs as ``pixeltext-render run`` in its own process; the peak resident memory of the
launcher and of each worker process is sampled every 0.2 s (the launcher of a DirectRunner job
also holds Beam's shuffle).
"""

from __future__ import annotations

import argparse
import bz2
import csv
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from pixeltext_render.assets import asset_path
from pixeltext_render.format.folder import MANIFEST
from pixeltext_render.job.corpora import django_languages, django_messages

WORKERS = 2


def real_texts(distinct: int) -> list[str]:
    with bz2.open(asset_path("corpora/rotten_tomatoes.csv.bz2"), "rt", encoding="utf-8") as handle:
        reviews = [row["text"] for row in csv.DictReader(handle) if row["text"].strip()]
    messages = [m for language in django_languages() for m in django_messages(language) if len(m) > 20]
    texts = reviews + messages
    return texts[:: max(len(texts) // distinct, 1)][:distinct]  # spread over both sources


def write_corpus(path: Path, texts: list[str], count: int) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for i, text in zip(range(count), itertools.cycle(texts), strict=False):
            handle.write(json.dumps({"id": f"doc{i}", "text": text}, ensure_ascii=False) + "\n")


def _tree(process: psutil.Process) -> Iterator[psutil.Process]:
    yield process
    yield from process.children(recursive=True)


def run_job(corpus: Path, out: Path, runner: str) -> dict:
    """Run the job in a process of its own, sampling the memory of every process of it."""
    command = [
        str(Path(sys.executable).with_name("pixeltext-render")),
        "run",
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--workers",
        str(WORKERS),
        "--runner",
        runner,
        "--quiet",
    ]
    start = time.perf_counter()
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    launcher = psutil.Process(job.pid)
    peaks: dict[int, int] = {}
    while job.poll() is None:
        try:
            for process in _tree(launcher):
                rss = process.memory_info().rss
                peaks[process.pid] = max(peaks.get(process.pid, 0), rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    if job.returncode != 0:
        raise SystemExit(f"the job failed: {job.stderr.read().decode()[-2000:]}")
    manifest = json.loads((out / MANIFEST).read_text())
    workers = [rss for pid, rss in peaks.items() if pid != job.pid]
    return {
        "seconds": seconds,
        "documents": manifest["totals"]["documents"],
        "strips": manifest["totals"]["strips"],
        "launcher_peak_mb": peaks.get(job.pid, 0) / 2**20,
        "worker_peak_mb": max(workers, default=0) / 2**20,
        "worker_processes": len(workers),
        "output_mb": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--runner", default="DirectRunner", help="DirectRunner or DaskRunner")
    parser.add_argument("--distinct", type=int, default=4_000, help="distinct texts, cycled")
    args = parser.parse_args()
    texts = real_texts(args.distinct)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            corpus = Path(folder, f"corpus-{size}.jsonl")
            write_corpus(corpus, texts, size)
            print(f"rendering {size:,} documents with {WORKERS} workers ...", file=sys.stderr)
            row = {"size": size, **run_job(corpus, Path(folder, f"out-{size}"), args.runner)}
            rows.append(row)
            os.remove(corpus)
    print(f"\nthe render job at scale ({WORKERS} worker processes, {args.runner}, short real documents)")
    header = f"{'documents':>10}{'strips':>9}{'seconds':>9}{'docs/s/worker':>15}"
    print(header + f"{'worker peak MB':>16}{'launcher peak MB':>18}{'output MB':>11}")
    for row in rows:
        rate = row["documents"] / row["seconds"] / WORKERS
        print(
            f"{row['documents']:10,}{row['strips']:9,}{row['seconds']:9.1f}{rate:15.1f}"
            f"{row['worker_peak_mb']:16.0f}{row['launcher_peak_mb']:18.0f}{row['output_mb']:11.1f}"
        )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(
            f"{last['size'] / first['size']:.0f}x the documents: worker peak memory "
            f"x{last['worker_peak_mb'] / first['worker_peak_mb']:.2f}, launcher x"
            f"{last['launcher_peak_mb'] / first['launcher_peak_mb']:.2f}"
        )
    out = Path("outputs/bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"scale-{args.runner}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
