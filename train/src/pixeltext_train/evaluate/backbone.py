"""A pre-trained model with the renderer and tokenizer it was trained with, and the inputs
they make for a task: pixels, text, or both (a strip's patches, then its tokens).

Inputs follow the paper's fine-tuning protocol: an input budget per modality (768 positions
for pixels or text, 512 patches then 512 tokens for pairs), both texts of a sentence pair kept
(the longer one is trimmed to fit), a pixel input ending in the black end patch when the
checkpoint was pre-trained with it, and token pairs in Llama 2's template ``<s> A <s> B``. An
example that carries the paper's stored pixels (``evaluate.rendered``) shows those instead of
a rendering, cut to the same budget the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixeltext_render import RenderConfig, Renderer, Strip
from pixeltext_render.text import normalize_text
from pixeltext_train.checkpoints import load_pretraining
from pixeltext_train.data.sequences import MODALITIES, SequenceSpec, shown_patches, strip_patches
from pixeltext_train.evaluate.rendered import PaperStrip, paper_strip
from pixeltext_train.evaluate.tasks import Example
from pixeltext_train.model import ModelConfig, PixelTextModel


@dataclass
class Backbone:
    model: PixelTextModel
    renderer: Renderer  # rebuilt from the checkpoint: the pixels of pre-training
    source: str  # checkpoint path, or "none" for a model trained from scratch
    bos_id: int
    end_patch: bool = False  # pre-trained with strips' black end patches as inputs


POOLS = ("auto", "end_patch", "last_text")


@dataclass(frozen=True)
class InputBudget:
    """Positions one example may take, and whether pixel inputs end with the end patch."""

    positions: int  # pixel inputs: patches; text inputs: tokens, bos included
    pair_patches: int  # pair inputs: the strip's patches (the end patch included) ...
    pair_tokens: int  # ... then both texts' tokens, bos included
    end_patch: bool = False  # the classifier then pools on the black end patch

    @classmethod
    def within(cls, positions: int, end_patch: bool = False) -> InputBudget:
        """One size for every modality (a pair splits it in half)."""
        return cls(positions, positions // 2, positions - positions // 2, end_patch)

    def total(self, modality: str) -> int:
        return self.pair_patches + self.pair_tokens if modality == "pair" else self.positions

    def fitted(self, max_positions: int) -> InputBudget:
        """This budget shrunk to a model of ``max_positions`` (pairs keep their proportions)."""
        pair = self.pair_patches + self.pair_tokens
        patches = self.pair_patches if pair <= max_positions else max_positions * self.pair_patches // pair
        tokens = min(self.pair_tokens, max_positions - patches)
        return InputBudget(min(self.positions, max_positions), patches, tokens, self.end_patch)


class RenderMismatch(ValueError):
    """Strips from two sources would not be the same: another renderer or tokenizer (a user's
    choice to fix, so the commands print it as a sentence)."""


def check_fingerprints(expected: dict[str, Any], renderer: Renderer, source: str, other: str) -> None:
    """Refuse ``renderer`` (``other``) unless it draws and tokenises as ``source`` did, whose
    ``render`` and ``tokenizer`` records (a checkpoint's or a manifest's) are ``expected``."""
    differ = []
    if renderer.fingerprint != expected["render"]["fingerprint"]:
        differ.append(
            f"render fingerprint {expected['render']['fingerprint']} vs {renderer.fingerprint} (different "
            "fonts, render config or engine versions; make install fetches the project's fonts)"
        )
    tokenizer = expected["tokenizer"]
    if renderer.tokenizer.fingerprint != tokenizer["fingerprint"]:
        differ.append(
            f"tokenizer fingerprint {tokenizer['fingerprint']} vs {renderer.tokenizer.fingerprint} "
            f"(tokenizer {tokenizer['spec']!r} vs {renderer.tokenizer.spec!r})"
        )
    if differ:
        raise RenderMismatch(f"{source} and {other} do not make the same inputs: " + "; ".join(differ))


def load_backbone(
    checkpoint: str | Path | None,
    model: dict[str, Any] | None = None,
    allow_render_difference: bool = False,
    official_pixels: bool = False,
) -> Backbone:
    """The checkpoint's decoder, renderer and tokenizer; ``none``: a fresh decoder shaped by
    ``model`` with the default renderer and tokenizer (the from-scratch baseline). A checkpoint
    converted from the paper's (``pixeltext_train.convert``) was pre-trained on another
    renderer's pixels: it is refused unless ``allow_render_difference`` (text inputs do not
    depend on it), or unless it is shown the paper's own pixels (``official_pixels``:
    ``rendered=official``), which in turn a checkpoint pre-trained on pixeltext's pixels was not
    trained on, and is refused for unless ``allow_render_difference``."""
    if checkpoint in (None, "none", "None"):
        if not model:
            raise ValueError("checkpoint=none needs the architecture to build: model=tiny|small|paper|demo")
        renderer = Renderer()
        config = ModelConfig(**model, vocab_size=renderer.tokenizer.vocab_size)
        return Backbone(PixelTextModel(config), renderer, "none", _bos(renderer))
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(
            f"checkpoint {checkpoint} does not exist: pre-train one first (make demo, or train/run.py), "
            "or pass checkpoint=none for a model trained from scratch"
        )
    saved = load_pretraining(checkpoint)
    hyper = saved["hyper_parameters"]
    differences = hyper["render"].get("differences")
    if differences and not official_pixels and not allow_render_difference:
        raise RenderMismatch(
            f"checkpoint {checkpoint} was pre-trained on pixels pixeltext does not draw the same way: "
            + "; ".join(differences)
            + ". Pixel results would not be the paper's; pass allow_render_difference=true to go on "
            "(modality=text is not affected), or fine-tune on the paper's own pixels of GLUE or XNLI "
            "(rendered=official)"
        )
    if official_pixels and not differences and not allow_render_difference:
        raise RenderMismatch(
            f"checkpoint {checkpoint} was pre-trained on pixeltext's pixels, and rendered=official shows it "
            "the paper's (drawn by PangoCairo with GoNotoCurrent.ttf): pixel results would measure that "
            "difference too; pass allow_render_difference=true to go on (modality=text is not affected)"
        )
    renderer = Renderer(RenderConfig.from_dict(hyper["render"]["config"]), hyper["tokenizer"]["spec"])
    check_fingerprints(hyper, renderer, f"checkpoint {checkpoint}", "this machine's renderer rebuilt from it")
    network = PixelTextModel(ModelConfig(**hyper["model"]))
    network.load_state_dict({k.removeprefix("model."): v for k, v in saved["state_dict"].items()})
    end_patch = bool(hyper.get("end_patch", False))
    return Backbone(network, renderer, str(checkpoint), _bos(renderer), end_patch)


def _bos(renderer: Renderer) -> int:
    return renderer.tokenizer.bos_id if renderer.tokenizer.bos_id is not None else 1


def input_budget(backbone: Backbone, positions: int, pair_patches: int, pair_tokens: int, pool: str):
    """The budget for ``backbone``: ``pool=auto`` pools on the end patch if it was pre-trained
    with it; a budget larger than the model's positions is shrunk to fit."""
    if pool not in POOLS:
        raise ValueError(f"finetune.pool must be one of {POOLS}, got {pool!r}")
    end_patch = backbone.end_patch if pool == "auto" else pool == "end_patch"
    budget = InputBudget(positions, pair_patches, pair_tokens, end_patch)
    return budget.fitted(backbone.model.config.max_positions)


def sequence_spec(backbone: Backbone, max_positions: int) -> SequenceSpec:
    """How the backbone's inputs are laid out (the ``data.batches.collate`` contract)."""
    config = backbone.renderer.config
    return SequenceSpec(max_positions, config.patch_size, backbone.bos_id, 0, channels=config.channels)


def encode_example(backbone: Backbone, example: Example, modality: str, budget: InputBudget):
    """``(kind, token ids, patches or None)`` for one example, as ``data.batches.collate`` takes it."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if modality == "text":
        ids = _text_ids(backbone, _token_texts(backbone, example), budget.positions - 1)
        return "text", np.concatenate([[backbone.bos_id], ids]).astype(np.int64), None
    patch_size = backbone.renderer.config.patch_size
    room = budget.pair_patches if modality == "pair" else budget.positions
    strip, texts = _strip(backbone, example, room)
    shown, with_end = shown_patches(strip.num_text_patches, room, budget.end_patch, crop_for_end=True)
    patches = strip_patches(strip, patch_size, shown)
    if with_end:  # the black end patch, pooled on
        patches = np.concatenate([patches, np.zeros((1, patches.shape[1]), np.uint8)])
    ids = np.zeros(0, np.int64)
    if modality == "pair":
        ids = np.concatenate([[backbone.bos_id], _text_ids(backbone, texts, budget.pair_tokens - 1)])
    elif not len(patches):
        ids = np.array([backbone.bos_id], np.int64)  # an empty text: just bos
    return modality, ids.astype(np.int64), patches


def _strip(backbone: Backbone, example: Example, room: int) -> tuple[Strip | PaperStrip, list[np.ndarray]]:
    """The strip an example is shown as, and the tokens of each of its texts (a pair input's).

    Stored pixels are shown as stored, the texts' tokens read from its fields; otherwise the
    checkpoint's renderer draws the text (a long one: its first strip, cropped on the left) or
    both texts, the longer trimmed so that they fit ``room`` with the end patch."""
    renderer = backbone.renderer
    if example.image is not None:
        stored = paper_strip(example.image, renderer.config.patch_size, renderer.config.color)
        return stored, _token_texts(backbone, example)
    if example.pair is None:
        strip = renderer.render(example.text).strips[0]
        return strip, [strip.token_ids]
    pair = renderer.render_pair(example.text, example.pair, max_patches=max(room, 4))
    return pair, [pair.token_ids[: pair.pair_tokens_start], pair.token_ids[pair.pair_tokens_start :]]


def _token_texts(backbone: Backbone, example: Example) -> list[np.ndarray]:
    tokenizer = backbone.renderer.tokenizer
    texts = [example.text] if example.pair is None else [example.text, example.pair]
    return [tokenizer.encode(normalize_text(text).text).ids for text in texts]


def _text_ids(backbone: Backbone, texts: list[np.ndarray], room: int) -> np.ndarray:
    """One text's tokens, or a pair's in Llama 2's template (``A <s> B``, after the leading
    ``<s>``), cut longest first to ``room``."""
    if len(texts) == 1:
        return texts[0][:room]
    first, second = texts
    while len(first) + 1 + len(second) > room:
        if len(first) >= len(second):
            first = first[:-1]
        else:
            second = second[:-1]
    return np.concatenate([first, [backbone.bos_id], second])
