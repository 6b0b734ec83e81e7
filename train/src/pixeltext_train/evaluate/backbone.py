"""A pre-trained model with the renderer and tokenizer it was trained with, and the inputs
they make for a task: pixels, text, or both (a strip's patches, then its tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixeltext_render import RenderConfig, Renderer
from pixeltext_render.text import normalize_text
from pixeltext_train.checkpoints import load_pretraining
from pixeltext_train.data import SequenceSpec, make_sequence
from pixeltext_train.evaluate.tasks import Example
from pixeltext_train.model import ModelConfig, PixelTextModel

MODALITIES = ("pixel", "text", "pair")


@dataclass
class Backbone:
    model: PixelTextModel
    renderer: Renderer  # rebuilt from the checkpoint: the pixels of pre-training
    source: str  # checkpoint path, or "none" for a model trained from scratch
    bos_id: int
    eos_id: int


class RenderMismatch(RuntimeError):
    """Strips from two sources would not be the same: another renderer or tokenizer."""


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


def load_backbone(checkpoint: str | Path | None, model: dict[str, Any] | None = None) -> Backbone:
    """The checkpoint's decoder, renderer and tokenizer; ``none``: a fresh decoder shaped by
    ``model`` with the default renderer and tokenizer (the from-scratch baseline)."""
    if checkpoint in (None, "none", "None"):
        renderer = Renderer()
        config = ModelConfig(**(model or {}), vocab_size=renderer.tokenizer.vocab_size)
        return Backbone(PixelTextModel(config), renderer, "none", *_specials(renderer))
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(
            f"checkpoint {checkpoint} does not exist: pre-train one first (make demo, or train/run.py), "
            "or pass checkpoint=none for a model trained from scratch"
        )
    saved = load_pretraining(checkpoint)
    hyper = saved["hyper_parameters"]
    renderer = Renderer(RenderConfig.from_dict(hyper["render"]["config"]), hyper["tokenizer"]["spec"])
    check_fingerprints(hyper, renderer, f"checkpoint {checkpoint}", "this machine's renderer rebuilt from it")
    network = PixelTextModel(ModelConfig(**hyper["model"]))
    network.load_state_dict({k.removeprefix("model."): v for k, v in saved["state_dict"].items()})
    return Backbone(network, renderer, str(checkpoint), *_specials(renderer))


def _specials(renderer: Renderer) -> tuple[int, int]:
    tokenizer = renderer.tokenizer
    bos = tokenizer.bos_id if tokenizer.bos_id is not None else 1
    eos = tokenizer.eos_id if tokenizer.eos_id is not None else bos
    return bos, eos


@dataclass
class _PairView:
    """A pair strip seen as one strip whose tokens have ``eos`` between the two texts."""

    pixels: np.ndarray
    num_text_patches: int
    token_ids: np.ndarray
    token_patches: np.ndarray


def sequence_spec(backbone: Backbone, max_positions: int) -> SequenceSpec:
    """How the backbone's inputs are laid out (the ``data.collate`` contract)."""
    return SequenceSpec(max_positions, backbone.renderer.config.patch_size, backbone.bos_id, 0)


def encode_example(backbone: Backbone, example: Example, modality: str, max_positions: int):
    """``(kind, token ids, patches or None)`` for one example, as ``data.collate`` takes it."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    spec = sequence_spec(backbone, max_positions)
    if modality == "text":
        ids = _text_ids(backbone, example, max_positions - 1)
        return "text", np.concatenate([[backbone.bos_id], ids]).astype(np.int64), None
    renderer = backbone.renderer
    if example.pair is None:
        strip = renderer.render(example.text).strips[0]  # a long text: its first strip (left crop)
    else:
        pair = renderer.render_pair(example.text, example.pair)
        cut = pair.pair_tokens_start
        strip = _PairView(
            pair.pixels,
            pair.num_text_patches,
            np.insert(pair.token_ids, cut, backbone.eos_id),
            np.insert(pair.token_patches, cut, [pair.separator_patch] * 2, axis=0),
        )
    ids, patches = make_sequence(strip, modality, spec)
    if not len(ids) and (patches is None or not len(patches)):
        ids = np.array([backbone.bos_id], np.int64)  # an empty text: just bos
    return modality, ids, patches


def _text_ids(backbone: Backbone, example: Example, room: int) -> np.ndarray:
    """Tokens of the text, or of both texts with eos between, cut longest first to ``room``."""
    tokenizer = backbone.renderer.tokenizer
    first = tokenizer.encode(normalize_text(example.text).text).ids
    if example.pair is None:
        return first[:room]
    second = tokenizer.encode(normalize_text(example.pair).text).ids
    while len(first) + 1 + len(second) > room:
        if len(first) >= len(second):
            first = first[:-1]
        else:
            second = second[:-1]
    return np.concatenate([first, [backbone.eos_id], second])
