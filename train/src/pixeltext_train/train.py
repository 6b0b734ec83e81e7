"""One training run from a composed config: data module, module, trainer, fit.

``train/run.py`` is the Hydra entry point that composes the config and calls :func:`train`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from pixeltext_train.data import ShardDataModule
from pixeltext_train.module import PixelTextLM

log = logging.getLogger(__name__)
LAST = "last.ckpt"


def default_precision() -> str:
    """bf16 mixed precision on a GPU that has it, fp32 otherwise (CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def checkpoint_to_resume(cfg: DictConfig, run_dir: Path) -> str | None:
    """``ckpt_path`` if given; with ``resume=true``, the newest ``last.ckpt`` of this run or of
    an earlier run of the same name (sibling run folders)."""
    if cfg.ckpt_path:
        path = Path(cfg.ckpt_path)
        if not path.is_file():
            raise FileNotFoundError(f"ckpt_path={path} does not exist")
        return str(path)
    if not cfg.resume:
        return None
    candidates = sorted(run_dir.parent.glob(f"*/checkpoints/{LAST}"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f"resume=true, but no checkpoints/{LAST} under {run_dir.parent}")
    return str(candidates[-1])


def build(cfg: DictConfig) -> tuple[ShardDataModule, PixelTextLM]:
    data_options = OmegaConf.to_container(cfg.data, resolve=True)
    data = ShardDataModule(**data_options, max_positions=cfg.model.max_positions, seed=cfg.seed)
    model = {**OmegaConf.to_container(cfg.model, resolve=True), "vocab_size": data.vocab_size}
    module = PixelTextLM(
        model=model,
        **OmegaConf.to_container(cfg.optimizer, resolve=True),
        bos_id=data.spec.bos_id,
        render=data.manifest["render"],
        tokenizer=data.manifest["tokenizer"],
    )
    return data, module


def trainer_for(cfg: DictConfig, run_dir: Path) -> L.Trainer:
    options: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)
    options["precision"] = options.get("precision") or default_precision()
    loggers = [CSVLogger(run_dir, name="", version="")]
    if cfg.tensorboard:
        loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=""))
    callbacks = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="{step:06d}",
            every_n_train_steps=cfg.checkpoint_every,
            save_top_k=-1,
            save_last=True,
        ),
        LearningRateMonitor(logging_interval="step"),
    ]
    callbacks += [instantiate(spec) for spec in (cfg.get("callbacks") or {}).values()]
    if options.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    return L.Trainer(
        **options, logger=loggers, callbacks=callbacks, default_root_dir=run_dir, check_val_every_n_epoch=None
    )


def train(cfg: DictConfig, run_dir: Path) -> L.Trainer:
    """Fit as the config says, writing checkpoints and metrics.csv into ``run_dir``."""
    run_dir = Path(run_dir)
    L.seed_everything(cfg.seed, workers=True)
    data, module = build(cfg)
    trainer = trainer_for(cfg, run_dir)
    ckpt = checkpoint_to_resume(cfg, run_dir)
    if ckpt:
        log.info("resuming from %s", ckpt)
    if trainer.is_global_zero:
        parameters = module.model.num_parameters()
        log.info("model: %.1f M parameters; shards: %s (%d)", parameters / 1e6, data.location, len(data.urls))
    trainer.fit(module, datamodule=data, ckpt_path=ckpt)
    trainer.save_checkpoint(run_dir / "checkpoints" / LAST)
    trainer.validate(module, datamodule=data, verbose=False)  # val/loss at the final step, always
    return trainer
