"""``make bench`` (fine-tuning inputs): memory and speed of a sentence-pair task of 4,000 and of
400,000 pairs, rendered lazily in 2 DataLoader workers with the paper's pair budget.

The pairs are the shipped Rotten Tomatoes reviews, each paired with the next one, written as a
GLUE RTE folder (``train.tsv``, ``dev.tsv``) and loaded with ``task=rte`` as a user's would be.
Each size runs in a process of its own, which loads the task, makes its DataLoader and reads a
fixed number of batches; the peak resident memory
of that process (resident) and of its workers (unique: a forked worker's resident memory also
counts the pages it shares with its parent) is sampled every 0.1 s. Also: the bytes one rendered input
takes, which is what rendering every example up front (the old way) held per example.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BATCHES = 40
BATCH_SIZE = 32


def reviews() -> list[str]:
    from pixeltext_render.assets import asset_path

    with bz2.open(asset_path("corpora/rotten_tomatoes.csv.bz2"), "rt", encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle) if row["text"].strip()]


def write_task(folder: Path, size: int) -> None:
    """An RTE-layout folder of ``size`` training pairs (GLUE's TSV: no tabs or newlines in text)."""
    texts = [" ".join(text.split()) for text in reviews()]
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", size), ("dev", 200)):
        with open(folder / f"{name}.tsv", "w", encoding="utf-8") as handle:
            handle.write("index\tsentence1\tsentence2\tlabel\n")
            for i in range(count):
                label = "entailment" if i % 2 else "not_entailment"
                handle.write(f"{i}\t{texts[i % len(texts)]}\t{texts[(i + 1) % len(texts)]}\t{label}\n")


def child(folder: str) -> None:
    """Load the task, read BATCHES batches; print a JSON line of what was measured."""
    import numpy as np

    from pixeltext_train.evaluate.backbone import load_backbone, sequence_spec
    from pixeltext_train.evaluate.finetune import FinetuneOptions, TaskSplit, loader
    from pixeltext_train.evaluate.tasks import load_task

    task = load_task("rte", {"data_dir": folder})
    model = {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "max_positions": 1024}
    backbone = load_backbone(None, model)
    options = FinetuneOptions(modality="pair", workers=2, batch_size=BATCH_SIZE)
    split = TaskSplit("train", task.train, backbone, options)
    spec = sequence_spec(backbone, options.budget(backbone).total("pair"))
    sizes = [sum(part.nbytes for part in split[i][0][1:]) for i in range(50)]  # (kind, ids, patches)
    start = time.perf_counter()
    read = 0
    for batch, _ in loader(split, options, spec, shuffle=True):
        read += len(batch.tokens)
        if read >= BATCHES * BATCH_SIZE:
            break
    seconds = time.perf_counter() - start
    print(json.dumps({"examples_per_s": read / seconds, "input_bytes": float(np.mean(sizes))}))


def measure(size: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="pixeltext-finetune-bench-"))
    write_task(folder, size)
    job = subprocess.Popen(
        [sys.executable, __file__, "--child", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    main, peaks = psutil.Process(job.pid), {}
    while job.poll() is None:
        try:  # workers: unique memory (USS); their RSS also counts the pages shared with the parent
            peaks[job.pid] = max(peaks.get(job.pid, 0), main.memory_info().rss)
            for worker in main.children(recursive=True):
                peaks[worker.pid] = max(peaks.get(worker.pid, 0), worker.memory_full_info().uss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    out, err = job.communicate()
    shutil.rmtree(folder)
    if job.returncode != 0:
        raise SystemExit(f"the {size:,}-pair run failed: {err.decode()[-2000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    workers = [rss for pid, rss in peaks.items() if pid != job.pid]
    return {
        "pairs": size,
        **result,
        "main_peak_mb": peaks.get(job.pid, 0) / 2**20,
        "worker_peak_mb": max(workers, default=0) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4_000, 400_000])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    rows = [measure(size) for size in args.sizes]
    print(f"\nfine-tuning inputs, pair modality, 512 + 512 budget, 2 DataLoader workers, {BATCHES} batches")
    print(f"{'pairs':>9}{'examples/s':>12}{'main peak MB':>14}{'worker USS MB':>15}{'up front GB':>13}")
    for row in rows:
        up_front = row["input_bytes"] * row["pairs"] / 1e9
        print(
            f"{row['pairs']:9,}{row['examples_per_s']:12.1f}{row['main_peak_mb']:14.0f}"
            f"{row['worker_peak_mb']:15.0f}{up_front:13.2f}"
        )
    print("(up front: what rendering every pair before training would hold, at this run's bytes per input)")
    out = Path("outputs/bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / "finetune.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
