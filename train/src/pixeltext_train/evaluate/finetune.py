"""Fine-tune a backbone with a sequence head on its last real position, then score.

The head reads the final hidden state of the last real position, as the paper's fine-tuning
does: for pixels the black end patch (``pool=end_patch``, the default for checkpoints
pre-trained with it) or the last text patch (``last_text``), for text and pairs the last token.
Examples are rendered when they are read, in DataLoader worker processes that rebuild the
checkpoint's renderer, so memory does not grow with the task. Classification
uses cross-entropy, regression (STS-B) a single output and mean squared error. Training stops
early when the first scored split's main metric stops improving; the best weights are scored
on every scored split.

``color`` fine-tunes in another colour mode than pre-training, as the official PIXEL-GPT code
does (``render_mode``): the inputs are rendered in that mode, and an RGB checkpoint given
one-channel (gray, binary) inputs has its patch embedding averaged over the channels
(``model.one_channel``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from pixeltext_render import Renderer
from pixeltext_render.config import COLORS
from pixeltext_train.checkpoints import load_plain
from pixeltext_train.data.batches import Batch, collate
from pixeltext_train.data.sequences import SequenceSpec
from pixeltext_train.evaluate.backbone import (
    Backbone,
    InputBudget,
    RenderMismatch,
    encode_example,
    input_budget,
    sequence_spec,
)
from pixeltext_train.evaluate.metrics import score
from pixeltext_train.evaluate.tasks import Example, Task
from pixeltext_train.model import PixelTextModel, one_channel
from pixeltext_train.module import check_schedule, warmup_cosine

log = logging.getLogger(__name__)


@dataclass
class FinetuneOptions:
    """How a checkpoint is fine-tuned: the ``finetune`` config group. The defaults are the
    paper's protocol, read from the official run scripts (inputs of 768 positions, pairs of 512
    patches and 512 tokens; the optimisation within their ranges: lr 1e-5..1e-4, warm-up 10..100
    steps, evaluation every 50..100 steps, early stopping)."""

    modality: str = "pixel"
    max_positions: int = 768  # pixel and text inputs: patches, or tokens with bos (left crop)
    pair_patches: int = 512  # pair inputs: the pair strip's patches (both texts kept, the longer trimmed)
    pair_tokens: int = 512  # then both texts' tokens, <s> A <s> B (Llama 2's pair template)
    pool: str = "auto"  # end_patch | last_text | auto: end_patch if pre-trained with data.end_patch
    workers: int = 2  # DataLoader processes rendering examples as read (0: in this process)
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int | None = None  # null: warmup_ratio of max_steps (at most max_steps)
    warmup_ratio: float = 0.05  # linear warm-up over this fraction of max_steps (50 of 1000)
    max_steps: int = 1000
    min_lr_ratio: float = 0.0  # where the cosine decay ends, relative to lr (1.0: constant)
    eval_every: int = 100  # steps between validations (early stopping)
    patience: int = 5  # validations without improvement before stopping
    max_train_examples: int | None = None  # the first N of a seeded shuffle of train
    seed: int = 0
    init_seed: int | None = None  # the head's initialisation, if not from ``seed``
    color: str | None = None  # inputs rendered rgb | gray | binary; null: the checkpoint's own

    @property
    def warmup(self) -> int:
        """The warm-up's steps (``check_schedule`` refuses a schedule that cannot work)."""
        return check_schedule(
            self.lr, self.warmup_steps, self.max_steps, self.min_lr_ratio, "finetune", self.warmup_ratio
        )

    def __post_init__(self) -> None:
        _ = self.warmup  # (refuses a schedule that cannot work)
        if self.color is not None and self.color not in COLORS:
            raise ValueError(
                f"finetune.color must be null (the checkpoint's own) or one of {COLORS}, got {self.color!r}"
            )
        least = {
            "max_positions": 2,
            "pair_patches": 4,
            "pair_tokens": 2,
            "workers": 0,
            "batch_size": 1,
            "max_steps": 1,
            "eval_every": 1,
            "patience": 1,
        }
        for name, minimum in least.items():
            if getattr(self, name) < minimum:
                raise ValueError(f"finetune.{name} must be at least {minimum}, got {getattr(self, name)}")

    def budget(self, backbone: Backbone) -> InputBudget:
        return input_budget(backbone, self.max_positions, self.pair_patches, self.pair_tokens, self.pool)


def recolored(backbone: Backbone, color: str | None) -> Backbone:
    """``backbone`` taking inputs rendered in colour mode ``color`` (None: its own): its renderer
    in that mode, and for one-channel inputs to an RGB checkpoint a copy of its model with the
    patch embedding averaged over the channels. ``backbone`` itself is left as it is."""
    config = backbone.renderer.config
    if color is None or color == config.color:
        return backbone
    config = dataclasses.replace(config, color=color)
    model = backbone.model
    if config.channels != model.config.channels:
        if model.config.channels != 3:
            raise ValueError(
                f"finetune.color={color}: the checkpoint was pre-trained on one-channel "
                f"({backbone.renderer.config.color}) strips, whose patch embedding cannot take RGB"
            )
        model = one_channel(model)
    return dataclasses.replace(
        backbone, model=model, renderer=Renderer(config, backbone.renderer.tokenizer.spec)
    )


class SequenceClassifier(nn.Module):
    """The decoder with a bias-free linear head on the hidden state of the last real position."""

    def __init__(self, backbone: PixelTextModel, outputs: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, outputs, bias=False)
        nn.init.normal_(self.head.weight, std=backbone.config.init_std)

    def last_hidden(self, batch: Batch) -> torch.Tensor:
        """[B, H] the decoder's final hidden state at each sequence's last real position."""
        hidden = self.backbone(batch.tokens, batch.patches, batch.is_patch)
        last = batch.real.sum(dim=1) - 1
        return hidden[torch.arange(len(last), device=hidden.device), last]

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.head(self.last_hidden(batch))


class ClassifierModule(L.LightningModule):
    def __init__(self, classifier: SequenceClassifier, task: Task, options: FinetuneOptions):
        super().__init__()
        self.classifier, self.task, self.options = classifier, task, options
        self._predictions: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def training_step(self, item, index: int) -> torch.Tensor:
        loss = self.example_losses(item).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(item[1]))
        return loss

    def example_losses(self, item) -> torch.Tensor:
        """[B] each example's loss (the influence recorder's metric for a probe example)."""
        batch, labels = item
        outputs = self.classifier(batch)
        if self.task.regression:
            return (outputs.squeeze(-1).float() - labels.float()).pow(2)
        return F.cross_entropy(outputs.float(), labels, reduction="none")

    @staticmethod
    def example_keys(item) -> tuple[str, ...]:
        return item[0].keys

    def validation_step(self, item, index: int) -> None:
        batch, labels = item
        self._predictions.append(predictions(self.classifier(batch), self.task))
        self._labels.append(labels.cpu().numpy())

    def on_validation_epoch_end(self) -> None:
        metrics = score(self.task.metrics, np.concatenate(self._predictions), np.concatenate(self._labels))
        self._predictions, self._labels = [], []
        self.log_dict({f"val/{name}": value for name, value in metrics.items()}, prog_bar=True)

    def configure_optimizers(self):
        o = self.options
        optimizer = torch.optim.AdamW(self.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, o.warmup, o.max_steps, o.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def predictions(outputs: torch.Tensor, task: Task) -> np.ndarray:
    outputs = outputs.detach().float().cpu()
    return outputs.squeeze(-1).numpy() if task.regression else outputs.argmax(-1).numpy()


class ExampleInputs:
    """Makes a model input of an example, rendering with the backbone's renderer, which each
    process (a DataLoader worker) rebuilds from its config and checks by fingerprint."""

    def __init__(self, backbone: Backbone, modality: str, budget: InputBudget):
        self.modality, self.budget, self.bos_id = modality, budget, backbone.bos_id
        self.config, self.tokenizer = backbone.renderer.config, backbone.renderer.tokenizer.spec
        self.fingerprint = backbone.renderer.fingerprint
        self._inputs = self._backbone(backbone.renderer)
        self._process = os.getpid()

    def _backbone(self, renderer) -> Backbone:
        return Backbone(None, renderer, "", self.bos_id)  # no model: inputs only (the budget says the rest)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_inputs": None}  # the renderer is rebuilt, not pickled

    def __call__(self, example: Example):
        if self._inputs is None or self._process != os.getpid():
            renderer = Renderer(self.config, self.tokenizer)
            if renderer.fingerprint != self.fingerprint:
                raise RenderMismatch(
                    f"this process rebuilt another renderer ({renderer.fingerprint} vs {self.fingerprint})"
                )
            self._inputs, self._process = self._backbone(renderer), os.getpid()
        return encode_example(self._inputs, example, self.modality, self.budget)


class TaskSplit(torch.utils.data.Dataset):
    """A split's examples (a list, or a task's ``ExampleStore`` on disk); each is rendered (or
    tokenised) when read. Examples are named by ``keys``, else ``<name>/<number>``: ``numbers``
    are their places in the task's split (default: their order here)."""

    def __init__(
        self,
        name: str,
        examples: Sequence[Example],
        backbone: Backbone,
        options: FinetuneOptions,
        keys: list[str] | None = None,
        numbers: Sequence[int] | None = None,
    ):
        self.name, self.examples, self.keys = name, examples, keys
        self.numbers = None if numbers is None else np.asarray(numbers, np.int64)
        self.inputs = ExampleInputs(backbone, options.modality, options.budget(backbone))

    def __len__(self) -> int:
        return len(self.examples)

    def key(self, index: int) -> str:
        if self.keys is not None:
            return self.keys[index]
        return f"{self.name}/{index if self.numbers is None else self.numbers[index]}"

    def subset(self, indices) -> TaskSplit:
        part = copy.copy(self)
        part.examples = [self.examples[i] for i in indices]
        part.keys = [self.key(i) for i in indices]
        return part

    def __getitem__(self, index: int):
        example = self.examples[index]
        return self.inputs(example), example.label, self.key(index)


def loader(split: TaskSplit, options: FinetuneOptions, spec: SequenceSpec, shuffle: bool) -> DataLoader:
    def collate_with_labels(items):
        sequences, labels, keys = zip(*items, strict=True)
        return collate(list(sequences), spec, keys), torch.tensor(labels)

    generator = torch.Generator().manual_seed(options.seed)
    return DataLoader(
        split,
        batch_size=options.batch_size,
        shuffle=shuffle,
        collate_fn=collate_with_labels,
        generator=generator,
        num_workers=options.workers,
        persistent_workers=options.workers > 0,
    )


def prepare(task: Task, backbone: Backbone, options: FinetuneOptions) -> dict[str, TaskSplit]:
    """The train split (a seeded subset if asked) and every scored split, in ``options.color``."""
    backbone = recolored(backbone, options.color)
    examples, numbers = task.train, None  # (a task's store is read in place, not copied)
    if options.max_train_examples and len(task.train) > options.max_train_examples:
        numbers = sorted(
            np.random.default_rng(options.seed).permutation(len(task.train))[: options.max_train_examples]
        )
        examples = [task.train[i] for i in numbers]
    splits = {"train": TaskSplit("train", examples, backbone, options, numbers=numbers)}
    for name, examples in task.evaluations.items():
        splits[name] = TaskSplit(name, examples, backbone, options)
    return splits


def finetune(
    task: Task,
    backbone: Backbone,
    options: FinetuneOptions,
    run_dir: Path,
    splits: dict[str, TaskSplit] | None = None,
    progress: bool = True,
    callbacks: list[L.Callback] = (),
) -> dict[str, Any]:
    """Fine-tune, score every scored split with the best weights, write ``results.json``.
    ``callbacks`` join the trainer's (an influence recorder, for example)."""
    L.seed_everything(options.seed, workers=True)
    run_dir = Path(run_dir)
    started = time.perf_counter()
    backbone = recolored(backbone, options.color)
    splits = splits or prepare(task, backbone, options)
    spec = sequence_spec(backbone, options.budget(backbone).total(options.modality))
    with torch.random.fork_rng():
        torch.manual_seed(options.seed if options.init_seed is None else options.init_seed)
        classifier = SequenceClassifier(
            copy.deepcopy(backbone.model), task.num_outputs
        )  # backbone stays as is
    module = ClassifierModule(classifier, task, options)
    main = f"val/{task.metrics[0]}"
    first_split = next(iter(task.evaluations))
    best = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        monitor=main,
        mode="max",
        save_top_k=1,
        filename="best",
        save_weights_only=True,
    )
    callbacks = [best, EarlyStopping(monitor=main, mode="max", patience=options.patience), *callbacks]
    if progress:
        callbacks.append(TQDMProgressBar())
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        max_steps=options.max_steps,
        val_check_interval=options.eval_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=CSVLogger(run_dir, name="", version=""),
        callbacks=callbacks,
        enable_progress_bar=progress,
        log_every_n_steps=10,
        default_root_dir=run_dir,
        enable_model_summary=False,
    )
    trainer.fit(
        module,
        loader(splits["train"], options, spec, True),
        loader(splits[first_split], options, spec, False),
    )
    if best.best_model_path:
        module.load_state_dict(load_plain(best.best_model_path, "a fine-tuning checkpoint")["state_dict"])
    module.eval()
    scores = {}
    for name in task.evaluations:
        outputs, labels = [], []
        with torch.no_grad():
            for batch, batch_labels in loader(splits[name], options, spec, False):
                outputs.append(predictions(classifier(batch), task))
                labels.append(batch_labels.numpy())
        scores[name] = score(task.metrics, np.concatenate(outputs), np.concatenate(labels))
    for split, names in task.averages.items():
        scores[f"{split}/average"] = {m: float(np.mean([scores[n][m] for n in names])) for m in task.metrics}
    results = {
        "task": task.name,
        "modality": options.modality,
        "color": backbone.renderer.config.color,
        "input_budget": asdict(options.budget(backbone)),
        "checkpoint": backbone.source,
        "metrics": scores,
        "main_metric": task.metrics[0],
        "examples_seen": trainer.global_step * options.batch_size,
        "train_examples": len(splits["train"]),
        "skipped_rows": task.skipped,  # rows of the task's files without a usable text or label
        "skipped_reasons": task.skip_reasons,
        "steps": trainer.global_step,
        "seed": options.seed,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


def majority_baseline(task: Task) -> dict[str, dict[str, float]]:
    """Scores of always predicting the most frequent training class (or the mean score)."""
    labels = np.array([e.label for e in task.train])
    guess = labels.mean() if task.regression else np.bincount(labels.astype(int)).argmax()
    return {
        name: score(task.metrics, np.full(len(examples), guess), np.array([e.label for e in examples]))
        for name, examples in task.evaluations.items()
    }
