"""The LightningModule: training and validation steps, optimiser and schedule, logging."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.utilities import rank_zero_warn
from torch.distributed.fsdp import FSDPModule, fully_shard

from pixeltext_train.data.batches import Batch
from pixeltext_train.losses import (
    mean_and_count,
    next_patch_loss,
    next_patch_stats_errors,
    next_token_loss,
    per_example_loss,
    sequence_ids,
    targets,
)
from pixeltext_train.model import ModelConfig, PixelTextModel

# each loss term and the count of predictions it averages (patch statistics: one per next patch)
VALIDATION_TERMS = (("patch", "patch_count"), ("token", "token_count"), ("patch_stats", "patch_count"))


def warmup_cosine(step: int, warmup_steps: int, schedule_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier at ``step``: a linear warm-up over ``warmup_steps``, then a cosine
    decay that reaches ``min_ratio`` at ``schedule_steps`` and stays there. A function of the
    schedule alone, so a run stopped early (``trainer.max_steps``) or resumed takes the same
    steps as a whole one."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, schedule_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class TrainingDiverged(ArithmeticError):
    """The loss or the weights stopped being finite numbers; nothing poisoned is saved."""


def check_schedule(
    lr: float,
    warmup_steps: int | None,
    schedule_steps: int,
    min_ratio: float,
    prefix: str,
    warmup_ratio: float = 0.0,
) -> int:
    """The warm-up's length in steps: ``warmup_steps`` if set, else ``warmup_ratio`` of the
    schedule (so that a longer or shorter run needs one override). A schedule that cannot work
    is refused, naming the config keys (``prefix``: their group)."""
    problems = [
        f"{prefix}.{name} must be {rule}, got {value}"
        for name, value, ok, rule in (
            ("lr", lr, math.isfinite(lr) and lr > 0, "a positive number"),
            (
                "warmup_steps",
                warmup_steps,
                warmup_steps is None or 0 <= warmup_steps <= schedule_steps,
                f"in [0, {schedule_steps}] (the schedule's length) or null (warmup_ratio of it)",
            ),
            ("warmup_ratio", warmup_ratio, 0 <= warmup_ratio <= 1, "in [0, 1]"),
            ("min_lr_ratio", min_ratio, 0 <= min_ratio <= 1, "in [0, 1]"),
        )
        if not ok
    ]
    if problems:
        raise ValueError("; ".join(problems))
    return warmup_steps if warmup_steps is not None else round(warmup_ratio * schedule_steps)


class PixelTextLM(L.LightningModule):
    """Next-patch and next-token prediction with one decoder.

    ``render`` and ``tokenizer`` (from the shards' manifest) are kept in the checkpoint so
    evaluation rebuilds the identical renderer and tokenizer; ``run`` is the composed config of
    the run (``train.py``), which a resumed run must match; ``end_patch`` says whether the
    data fed strips' black end patches (fine-tuning then pools on them by default).
    """

    def __init__(
        self,
        model: dict[str, Any],
        lr: float = 5e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.1,
        warmup_steps: int | None = None,
        schedule_steps: int = 10_000,
        warmup_ratio: float = 0.02,
        min_lr_ratio: float = 0.1,
        bos_id: int | None = 1,
        render: dict[str, Any] | None = None,
        tokenizer: dict[str, Any] | None = None,
        run: dict[str, Any] | None = None,
        compile: bool = False,
        end_patch: bool = False,
    ):
        super().__init__()
        if schedule_steps < 1:
            raise ValueError(f"optimizer.schedule_steps must be at least 1, got {schedule_steps}")
        self.warmup = check_schedule(
            lr, warmup_steps, schedule_steps, min_lr_ratio, "optimizer", warmup_ratio
        )
        self.save_hyperparameters()
        self.config = ModelConfig(**model)
        self.model = PixelTextModel(self.config)
        self._step_started = 0.0
        self._peak_flops: float | None = None
        self._compiled = False

    def hidden(self, batch: Batch) -> torch.Tensor:
        return self.model(batch.tokens, batch.patches, batch.is_patch, batch.packing)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor | int]:
        hidden = self.hidden(batch)
        patch_where, token_where = targets(batch, self.hparams.bos_id)
        patch_loss, patches = next_patch_loss(
            hidden, self.model.patch_head, batch.patches, patch_where, self.config.patch_loss
        )
        token_loss, tokens = next_token_loss(hidden, self.model.lm_head, batch.tokens, token_where)
        out = {
            "loss": patch_loss + token_loss,
            "patch_loss": patch_loss,
            "token_loss": token_loss,
            "patch_count": patches,
            "token_count": tokens,
        }
        if self.config.patch_stats:
            stats = next_patch_stats_errors(hidden, self.model.patch_stats_head, batch.patches, patch_where)
            out["patch_stats_loss"] = mean_and_count(stats)[0]
            out["loss"] = out["loss"] + out["patch_stats_loss"]
        return out

    def example_losses(self, batch: Batch) -> torch.Tensor:
        """[S] each sequence's loss (the influence recorder's metric for a probe example)."""
        return per_example_loss(self.hidden(batch), self.model, batch, self.hparams.bos_id)

    @staticmethod
    def example_keys(batch: Batch) -> tuple[str, ...]:
        return batch.keys

    def training_step(self, batch: Batch, batch_index: int) -> torch.Tensor:
        out = self.losses(batch)
        finite = bool(torch.isfinite(out["loss"].detach()))
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):  # (every rank stops)
            raise TrainingDiverged(
                f"the loss is not finite at step {self.global_step} ({float(out['loss'].detach())} on rank "
                f"{self.global_rank}): training stopped before the step changed the weights, and the "
                "checkpoints written so far are intact; lower optimizer.lr and resume from the last one"
            )
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=batch.tokens.shape[0])
        for kind, count in VALIDATION_TERMS:
            if out[count] and f"{kind}_loss" in out:
                self.log(f"train/{kind}_loss", out[f"{kind}_loss"], batch_size=1)
        return out["loss"]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to save weights that are not finite (the previous checkpoints stay the good ones)."""
        broken = next(
            (
                name
                for name, tensor in checkpoint["state_dict"].items()
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
            ),
            None,
        )
        if broken is not None:
            raise TrainingDiverged(
                f"the weights are not finite at step {self.global_step} ({broken}): no checkpoint was "
                "written over the earlier ones; lower optimizer.lr and resume from the last one"
            )

    def on_validation_epoch_start(self) -> None:
        self._val_totals = torch.zeros(2 * len(VALIDATION_TERMS), dtype=torch.float64, device=self.device)

    def validation_step(self, batch: Batch, batch_index: int) -> None:
        out = self.losses(batch)
        totals = []
        for kind, count in VALIDATION_TERMS:
            loss = out.get(f"{kind}_loss")
            totals += [0.0 if loss is None else loss.item() * out[count], 0 if loss is None else out[count]]
        self._val_totals += torch.tensor(totals, dtype=torch.float64, device=self.device)

    def on_validation_epoch_end(self) -> None:
        """Losses averaged over every predicted position of every rank (one collective call,
        whatever each rank saw), so all ranks log the same keys and values."""
        totals = self.trainer.strategy.reduce(self._val_totals, reduce_op="sum").tolist()
        values = {
            f"val/{kind}_loss": totals[2 * i] / totals[2 * i + 1]
            for i, (kind, _) in enumerate(VALIDATION_TERMS)
            if totals[2 * i + 1]
        }
        if values:
            values["val/loss"] = sum(values.values())
            self.log_dict(values, rank_zero_only=True)  # already reduced over the ranks
        else:
            rank_zero_warn(
                "validation found no held-out strip: no document falls in the validation split "
                "(raise data.val_fraction, or render more documents)"
            )

    def on_train_batch_start(self, batch: Batch, batch_index: int) -> None:
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, outputs, batch: Batch, batch_index: int) -> None:
        seconds = time.perf_counter() - self._step_started
        real = int(batch.real.sum())  # patches + tokens, padding excluded
        self.log("train/real_positions_per_s", real / seconds, prog_bar=True, on_step=True, batch_size=1)
        self.log("train/padding_fraction", 1 - real / batch.real.numel(), on_step=True, batch_size=1)
        if self._peak_flops is None:
            self._peak_flops = get_available_flops(self.device, compute_dtype(self.trainer.precision)) or 0.0
        if self._peak_flops:  # model FLOPs utilisation, where the device's peak is known
            lengths = torch.bincount(sequence_ids(batch)[batch.real])
            flops = self.model.training_flops(lengths)
            self.log("train/mfu", flops / seconds / self._peak_flops, on_step=True, batch_size=1)

    def configure_model(self) -> None:
        """Shards the model block by block under ``trainer=fsdp`` (FSDP2's ``fully_shard`` on the
        strategy's nodes x devices mesh: sharded within a node, replicated across nodes), then
        compiles each block when asked (``trainer.compile``)."""
        if self.device_mesh is not None and not isinstance(self.model, FSDPModule):
            for block in self.model.layers:
                fully_shard(block, mesh=self.device_mesh)
            fully_shard(self.model, mesh=self.device_mesh)
        if self.hparams.compile and not self._compiled:  # (Lightning calls this hook for each stage)
            for block in self.model.layers:
                block.compile()
            self._compiled = True

    def configure_optimizers(self):
        """AdamW; weight decay on the matrices of linear maps only (not on embeddings, norms or
        biases), decided by module type, which sharding leaves as it is."""
        matrices = {id(m.weight) for m in self.model.modules() if isinstance(m, torch.nn.Linear)}
        decay = [p for p in self.model.parameters() if id(p) in matrices]
        others = [p for p in self.model.parameters() if id(p) not in matrices]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": others, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
        )
        h = self.hparams
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, self.warmup, h.schedule_steps, h.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype the matrix multiplications run in under a Lightning precision setting."""
    return {"bf16": torch.bfloat16, "16": torch.float16, "64": torch.float64}.get(
        str(precision).split("-")[0], torch.float32
    )
