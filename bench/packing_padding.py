"""Padding fraction (positions that are not real) of training batches under each
``data.packing`` (none, whole, split): ``python bench/packing_padding.py [SHARDS] [BATCHES]``,
by default over the default corpus's shards (rendered once, as ``train_bench`` does), batches
of 8 rows of 1024 and the default regimen."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from train_bench import default_shards

from pixeltext_train.data.batches import PACKINGS
from pixeltext_train.data.datamodule import ShardDataModule


def padding(shards: Path, packing: str, batches: int, rows: int = 8, width: int = 1024) -> float:
    """The fraction of positions that are padding over the first ``batches`` training batches."""
    data = ShardDataModule(str(shards), batch_size=rows, num_workers=0, max_positions=width, packing=packing)
    taken = list(itertools.islice(data._dataset(training=True), batches))
    return 1 - sum(int(b.real.sum()) for b in taken) / sum(b.real.numel() for b in taken)


def main() -> None:
    shards = Path(sys.argv[1]) if len(sys.argv) > 1 else default_shards()
    batches = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    for packing in PACKINGS:
        fraction = padding(shards, packing, batches)
        print(f"data.packing={packing}: {fraction:.1%} padding over {batches} batches")


if __name__ == "__main__":
    main()
