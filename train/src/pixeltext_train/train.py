"""One training run from a composed config: data module, module, trainer, fit.

``train/run.py`` is the Hydra entry point that composes the config and calls :func:`train`.
"""

from __future__ import annotations

import csv
import logging
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, Timer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from pixeltext_train.checkpoints import AtomicCheckpointIO, load_pretraining
from pixeltext_train.cli import Preempted, check_finite
from pixeltext_train.data.datamodule import ShardDataModule, StreamTracker
from pixeltext_train.from_llama import LlamaFolder, is_llama_folder, read_llama_folder
from pixeltext_train.module import PixelTextLM
from pixeltext_train.progress import BudgetProgressBar
from pixeltext_train.resume import (
    LAST,
    TENSORBOARD,
    Resume,
    carry_tensorboard,
    find_checkpoint,
    metrics_history,
    run_identity,
)

log = logging.getLogger(__name__)


def default_precision() -> str:
    """bf16 mixed precision on a GPU that has it, fp32 otherwise (CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def build(cfg: DictConfig, llama: LlamaFolder | None = None) -> tuple[ShardDataModule, PixelTextLM]:
    """The data module and the module; starting from a Llama folder, the folder decides the shape."""
    data_options = OmegaConf.to_container(cfg.data, resolve=True)
    data = ShardDataModule(**data_options, max_positions=cfg.model.max_positions, seed=cfg.seed)
    # the vocabulary is the tokenizer's, and the patches' channels the shards' colour mode
    model = {
        **OmegaConf.to_container(cfg.model, resolve=True),
        "vocab_size": data.vocab_size,
        "channels": data.spec.channels,
    }
    color = data.render_config.color
    if model.get("patch_loss") == "bce" and color != "binary":
        raise ValueError(
            f"model.patch_loss=bce learns the ink bits of binary shards; those at {data.location} are "
            f"rendered in color={color}: render them with color=binary, or keep model.patch_loss=mse"
        )
    if llama is not None:
        llama.check_tokenizer(data.manifest["tokenizer"])
        model = llama.model(model)
    module = PixelTextLM(
        model=model,
        **OmegaConf.to_container(cfg.optimizer, resolve=True),
        bos_id=data.spec.bos_id,
        render=data.manifest["render"],
        tokenizer=data.manifest["tokenizer"],
        run=run_identity(cfg, data.identity()),
        compile=uses_compile(cfg),
        end_patch=data.spec.end_patch,
    )
    return data, module


def uses_compile(cfg: DictConfig) -> bool:
    """``trainer.compile``; unset: on a GPU, not on a CPU (where compiling costs more than it gains)."""
    chosen = cfg.trainer.get("compile")
    return torch.cuda.is_available() if chosen is None else bool(chosen)


class ContinuedCSVLogger(CSVLogger):
    """Lightning's CSV logger (``<run dir>/metrics.csv``), whose file starts with the rows an
    earlier run logged before the step this run resumes from, so it holds every step once.
    Rows are written as they are logged: a run killed after a checkpoint has logged every step
    before it."""

    def __init__(self, save_dir: Path, history: list[dict[str, str]]):
        super().__init__(save_dir, name="", version="", flush_logs_every_n_steps=1)
        self._history = history

    @property
    def experiment(self):
        writer = super().experiment  # (on ranks other than zero, a stand-in that writes nothing)
        if self._history and rank_zero_only.rank == 0:
            keys = sorted({key for row in self._history for key in row})
            with open(writer.metrics_file_path, "w", newline="", encoding="utf-8") as handle:
                table = csv.DictWriter(handle, fieldnames=keys)
                table.writeheader()
                table.writerows(self._history)
            writer.metrics_keys = keys
            self._history = []
        return writer


class StepCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, which does not save again the step a run resumed from (it
    forgets which step it last saved, and would save it once more after the first micro-batch
    of an accumulated step: a checkpoint taken mid-step does not resume exactly)."""

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        super().on_train_start(trainer, module)
        self._last_global_step_saved = trainer.global_step


class StepTimer(Timer):
    """``trainer.max_time``, checked right after optimizer steps only, so that a run stopped by
    time ends on a whole step and its final checkpoint resumes exactly (Lightning's own timer
    may stop between the micro-batches of an accumulated step)."""

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        super().on_train_start(trainer, module)
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step != self._step:
            self._step = trainer.global_step
            super().on_train_batch_end(trainer, *args, **kwargs)


class Preemption(L.Callback):
    """SIGTERM, what SLURM and Kubernetes send before they preempt a job: the optimizer step in
    progress is finished, then the run stops (on every rank if any one was signalled) and
    :func:`train` writes ``last.ckpt`` and raises :class:`Preempted`. Lightning's own handler,
    which this replaces while training, stops after any micro-batch and exits 0."""

    def __init__(self) -> None:
        self.requested = self.stopped = False
        self._step = 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._step = trainer.global_step
        launcher = trainer.strategy.launcher

        def request(signum: int, frame: Any) -> None:
            if not self.requested and launcher is not None:
                launcher.kill(signum)  # (the processes it started, as Lightning's handler does)
            self.requested = True

        # (Lightning restores the handler it found when training ends)
        signal.signal(signal.SIGTERM, request)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step == self._step:
            return  # mid-accumulation
        self._step = trainer.global_step
        if trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            self.stopped = trainer.should_stop = True


def trainer_for(cfg: DictConfig, run_dir: Path, resume: Resume | None = None) -> L.Trainer:
    options: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)
    options.pop("compile", None)  # (the module compiles its blocks: PixelTextLM.configure_model)
    options["precision"] = options.get("precision") or default_precision()
    if isinstance(options.get("strategy"), dict):  # e.g. trainer=fsdp: a strategy object with settings
        options["strategy"] = instantiate(options["strategy"])
    loggers: list = [ContinuedCSVLogger(run_dir, metrics_history(resume))]
    if cfg.tensorboard:
        carry_tensorboard(resume, run_dir)
        purge = {"purge_step": resume.step} if resume else {}  # hides the earlier run's redone steps
        loggers.append(TensorBoardLogger(run_dir, name=TENSORBOARD, version="", **purge))
    callbacks = [
        StreamTracker(),
        StepCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="{step:06d}",
            every_n_train_steps=cfg.checkpoint_every,
            save_top_k=-1,
            save_last=True,
        ),
        LearningRateMonitor(logging_interval="step"),
        Preemption(),
    ]
    timer = StepTimer(options.pop("max_time")) if options.get("max_time") else None
    callbacks += [timer] if timer else []
    callbacks += [instantiate(spec) for spec in (cfg.get("callbacks") or {}).values()]
    if options.get("enable_progress_bar", True):  # ours, against the real budget (no validation bars)
        callbacks.append(BudgetProgressBar(timer))
        options["enable_progress_bar"] = False
    return L.Trainer(
        **options,
        logger=loggers,
        callbacks=callbacks,
        default_root_dir=run_dir,
        check_val_every_n_epoch=None,
        plugins=[AtomicCheckpointIO()],
    )


INIT_MAY_DIFFER = ("attention", "activation_checkpointing")  # the same model, computed otherwise
FRESH_HEADS = {"patch_stats": "patch_stats_head."}  # optional heads a run may add (fresh) or drop


def initialise(module: PixelTextLM, data: ShardDataModule, path: Path) -> None:
    """Start from ``path``'s weights (a converted paper checkpoint, or any pixeltext one) with
    a fresh optimizer and data stream; its model and the shards' pixels and tokens must match."""
    saved = load_pretraining(path)
    hyper = saved["hyper_parameters"]
    mine = vars(module.config)
    problems = [
        f"model.{key}: {value} in the checkpoint, {mine.get(key)} here"
        for key, value in hyper["model"].items()
        if key not in (*INIT_MAY_DIFFER, *FRESH_HEADS) and mine.get(key) != value
    ]
    for what in ("render", "tokenizer"):
        if data.manifest[what]["fingerprint"] != hyper[what]["fingerprint"]:
            problems.append(
                f"the shards' {what} fingerprint is {data.manifest[what]['fingerprint']}, the checkpoint's "
                f"{hyper[what]['fingerprint']} (render the corpus with the checkpoint's render config and "
                f"tokenizer, {hyper['tokenizer']['spec']})"
            )
    if problems:
        raise ValueError(f"cannot start from {path}:\n  " + "\n  ".join(problems))
    if bool(hyper.get("end_patch")) != data.spec.end_patch:
        log.warning(
            "%s was pre-trained with data.end_patch=%s; this run has %s",
            path,
            hyper.get("end_patch"),
            data.spec.end_patch,
        )
    weights = {k.removeprefix("model."): v for k, v in saved["state_dict"].items()}
    dropped = tuple(prefix for key, prefix in FRESH_HEADS.items() if not mine.get(key))
    loaded = module.model.load_state_dict(
        {k: v for k, v in weights.items() if not k.startswith(dropped)}, strict=False
    )
    if loaded.missing_keys:
        if not all(key.startswith(tuple(FRESH_HEADS.values())) for key in loaded.missing_keys):
            raise ValueError(f"cannot start from {path}: it lacks {', '.join(loaded.missing_keys)}")
        log.info(
            "%s has no %s: it starts fresh",
            path,
            ", ".join(sorted({k.split(".")[0] for k in loaded.missing_keys})),
        )
    if loaded.unexpected_keys:
        raise ValueError(f"cannot start from {path}: this model has no {', '.join(loaded.unexpected_keys)}")
    log.info("starting from the weights of %s", path)


def train(cfg: DictConfig, run_dir: Path) -> L.Trainer:
    """Fit as the config says, writing checkpoints and metrics.csv into ``run_dir``."""
    run_dir = Path(run_dir)
    check_finite(cfg)
    if cfg.trainer.max_steps < 1:  # (pre-training is bounded by steps, not epochs)
        raise ValueError(f"trainer.max_steps must be at least 1, got {cfg.trainer.max_steps}")
    L.seed_everything(cfg.seed, workers=True)
    init_from = cfg.get("init_from")
    llama = read_llama_folder(init_from) if is_llama_folder(init_from) else None
    data, module = build(cfg, llama)
    if cfg.ckpt_path and load_pretraining(cfg.ckpt_path)["hyper_parameters"].get("converted"):
        # a converted paper checkpoint has no run to resume: start a new run from its weights
        if llama is not None:
            raise ValueError(
                f"ckpt_path={cfg.ckpt_path} is a converted paper checkpoint and init_from={init_from} a "
                "Llama text model: a run starts from one of them"
            )
        init_from, cfg = cfg.ckpt_path, OmegaConf.merge(cfg, {"ckpt_path": None})
    resume = find_checkpoint(cfg, run_dir, module.hparams.run)
    trainer = trainer_for(cfg, run_dir, resume)
    if resume:
        log.info("resuming from %s (step %d)", resume.checkpoint, resume.step)
    if trainer.is_global_zero:
        parameters = module.model.num_parameters()
        log.info("model: %.1f M parameters; shards: %s (%d)", parameters / 1e6, data.location, len(data.urls))
    if llama is not None and not resume:  # (a resumed run has its own weights)
        fresh = llama.load_into(module.model)
        log.info("starting from the text model %s; fresh: %s", llama.path, ", ".join(fresh))
    elif init_from and not resume:
        initialise(module, data, Path(init_from))
    ckpt = str(resume.checkpoint) if resume else None
    last = run_dir / "checkpoints" / LAST
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt, weights_only=True)
    except SIGTERMException:  # (Lightning's handler: SIGTERM before training started)
        raise Preempted("stopped by SIGTERM before training began; rerun the same command") from None
    tracker = next(c for c in trainer.callbacks if isinstance(c, StreamTracker))
    if tracker.mid_step:  # stopped between the micro-batches of a step (by some callback)
        log.warning(
            "training stopped in the middle of an accumulated step; %s stays at the last whole one", LAST
        )
    else:
        trainer.save_checkpoint(last)
    if next(c for c in trainer.callbacks if isinstance(c, Preemption)).stopped:
        raise Preempted(
            f"stopped by SIGTERM after step {trainer.global_step}; {last} continues it exactly "
            "(rerun with resume=true)"
        )
    try:
        trainer.validate(module, datamodule=data, verbose=False, weights_only=True)  # val/loss at the end
    except SIGTERMException:
        raise Preempted(f"stopped by SIGTERM in the final validation; training is done ({last})") from None
    return trainer
