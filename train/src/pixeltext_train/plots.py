"""Loss curves from a run's ``metrics.csv``: ``pixeltext-plots RUN_DIR OUT.png``."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

CURVES = ("train/loss", "train/patch_loss", "train/token_loss", "val/loss")


def read_curves(metrics_csv: Path) -> dict[str, tuple[list[int], list[float]]]:
    """Each logged loss as (steps, values); steps counted from 1."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    with open(metrics_csv) as handle:
        for row in csv.DictReader(handle):
            for name in CURVES:
                if row.get(name):
                    steps, values = curves.setdefault(name, ([], []))
                    steps.append(int(row["step"]) + 1)
                    values.append(float(row[name]))
    return curves


def plot_curves(runs: dict[str, Path], out: Path, title: str = "") -> Path:
    """One panel per run: its training and validation losses against the step."""
    figure, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 3.6), squeeze=False)
    for axis, (label, run_dir) in zip(axes[0], runs.items(), strict=True):
        for name, (steps, values) in read_curves(Path(run_dir) / "metrics.csv").items():
            style = {"marker": "o"} if name.startswith("val") else {}
            axis.plot(steps, values, label=name, **style)
        axis.set_title(label)
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    plt.close(figure)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="pixeltext-plots", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(plot_curves({args.run_dir.name: args.run_dir}, args.out))


if __name__ == "__main__":
    main()
