"""Which training examples moved a test example's final metric, as a person can read it.

An example's estimated influence is the simulator's final value for the test example with
the run as recorded minus the final value with that example left out of every batch it was
in (positive: it pushed the loss up; negative: it helped). The picture shows the test
example's strip, the real trajectory against each method's, and the strips of the training
examples with the largest influences either way, with their scores and texts.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pixeltext_render import Renderer
from pixeltext_render.preview import as_rgb
from pixeltext_train.evaluate.tasks import Example
from pixeltext_train.influence.record import Recording
from pixeltext_train.influence.simulator import GPTfluence


def leave_one_out(simulator: GPTfluence, recording: Recording, probe: int) -> dict[str, float]:
    """key -> change of the probe example's simulated final value that the key caused."""
    full = simulator.simulate(recording)[-1, probe]
    keys = sorted({k for batch in recording.batches for k in batch})
    return {k: float(full - simulator.simulate(recording, drop=k)[-1, probe]) for k in keys}


def _strip(renderer: Renderer, text: str, patches: int) -> np.ndarray:
    strip = renderer.render(text).strips[0]
    return as_rgb(strip.pixels[:, : patches * renderer.config.patch_size])


def explanation_picture(
    path: Path,
    renderer: Renderer,
    test: Example,
    examples: dict[str, Example],
    influence: dict[str, float],
    trajectories: dict[str, np.ndarray],
    label_names: list[str],
    top: int = 4,
    patches: int = 64,
) -> Path:
    """Write the picture: test strip, trajectories, top helpful and harmful training strips."""
    ranked = sorted(influence, key=influence.get)
    helpful = [k for k in ranked[:top] if influence[k] < 0]
    harmful = [k for k in reversed(ranked[-top:]) if influence[k] > 0]
    rows = (
        [("test example", test, None)]
        + [("helped", examples[k], (k, influence[k])) for k in helpful]
        + [("hurt", examples[k], (k, influence[k])) for k in harmful]
    )
    figure = plt.figure(figsize=(12, 3.4 + 0.75 * len(rows)))
    # the plot, a spacer row (room for its axis label), then one row per strip
    grid = figure.add_gridspec(len(rows) + 2, 1, height_ratios=[3.0, 0.5] + [1.0] * len(rows), hspace=0.8)
    axes = figure.add_subplot(grid[0])
    for name, values in trajectories.items():
        axes.plot(
            values,
            label=name,
            linewidth=2.4 if name == "real" else 1.4,
            color="black" if name == "real" else None,
        )
    axes.set_xlabel("recorded step")
    axes.set_ylabel("test loss")
    axes.set_title("the test example's loss: real and simulated")
    axes.legend(fontsize=8, ncol=len(trajectories), loc="upper right")
    for row, (kind, example, scored) in enumerate(rows, start=2):
        ax = figure.add_subplot(grid[row])
        ax.imshow(_strip(renderer, example.text, patches), interpolation="nearest", aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([])
        label = label_names[int(example.label)] if label_names else f"{example.label:g}"
        head = f"{kind}" + (f" ({scored[1]:+.4f}, {scored[0]})" if scored else "") + f" [{label}]: "
        ax.set_title(textwrap.shorten(head + example.text, 150), fontsize=8, loc="left")
    figure.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(figure)
    return path
