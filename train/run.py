"""Pre-train on rendered shards: ``python train/run.py experiment=pixel_text [overrides]``.

Hydra composes ``conf/`` (model, data, trainer, optimizer, experiment); the run writes the
composed config (``.hydra/``), ``checkpoints/`` and ``metrics.csv`` to its run directory.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pixeltext_train.cli import reported
from pixeltext_train.train import train


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with reported("train"):
        train(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
