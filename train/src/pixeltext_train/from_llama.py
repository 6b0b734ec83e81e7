"""Continued pre-training from a Hugging Face Llama text model: ``init_from=hf:FOLDER``.

FOLDER is what ``LlamaForCausalLM.save_pretrained`` writes, with its tokenizer:
``config.json``, the weights (``model.safetensors``, sharded with its index, or PyTorch's
``.bin`` read by the weights-only loader: never by running code), and ``tokenizer.json`` or
``tokenizer.model``. pixeltext's text path is Llama's (the same tensors under the same names
after ``model.``, rotary embeddings, RMSNorm, SwiGLU, grouped-query attention), so the token
embeddings, the decoder and the LM head load exactly; the patch embedding and the patch heads
start fresh. The folder decides the model's shape; the run decides how many positions it
trains on (at most the folder's ``max_position_embeddings``) and its options. The shards must
be rendered with the folder's tokenizer (``pixeltext-render run --tokenizer
hf:FOLDER/tokenizer.json``, or ``sentencepiece:FOLDER/tokenizer.model``): checked by
fingerprint before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pixeltext_render.tokenizers import load_tokenizer
from pixeltext_train.convert import (
    ConversionError,
    model_config,
    read_config,
    read_weights,
    weight_problems,
)
from pixeltext_train.model import PixelTextModel

PREFIX = "hf:"
ARCHITECTURES = ("LlamaForCausalLM",)
FOLDER_DECIDES = (
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "intermediate_size",
    "rms_norm_eps",
    "rope_theta",
)
FRESH = ("embed_patches.", "patch_head.", "patch_stats_head.")  # what a text model does not have
TOKENIZER_FILES = {"tokenizer.json": "hf", "tokenizer.model": "sentencepiece"}


def is_llama_folder(init_from: str | None) -> bool:
    return bool(init_from) and str(init_from).startswith(PREFIX)


@dataclass
class LlamaFolder:
    """A checked Llama folder: the model shape it decides, its tensors under pixeltext's names,
    and the fingerprint of each tokenizer it holds (spec -> fingerprint)."""

    path: Path
    sizes: dict[str, Any]
    max_positions: int
    weights: dict[str, torch.Tensor]
    tokenizers: dict[str, str]

    def model(self, run: dict[str, Any]) -> dict[str, Any]:
        """The run's model options with the folder's shape; the run's positions must fit it."""
        if run["max_positions"] > self.max_positions:
            raise ValueError(
                f"model.max_positions={run['max_positions']} is more than {self.path}'s "
                f"max_position_embeddings ({self.max_positions})"
            )
        return {**run, **self.sizes}

    def check_tokenizer(self, shards: dict[str, Any]) -> None:
        """Refuse shards whose tokenizer is not one of the folder's (ids would mean other words)."""
        if shards["fingerprint"] in self.tokenizers.values():
            return
        specs = " or ".join(f"--tokenizer {spec}" for spec in self.tokenizers)
        raise ValueError(
            f"the shards were rendered with tokenizer {shards['spec']!r}, not {self.path}'s: render the "
            f"corpus again with {specs}"
        )

    def load_into(self, model: PixelTextModel) -> list[str]:
        """Load the text model's tensors (checked against the folder's shape when read) into a
        model of that shape, releasing the folder's copy (a second model in host memory for the
        whole run otherwise); return the parts that start fresh."""
        loaded = model.load_state_dict(self.weights, strict=False)
        self.weights = {}
        return sorted({name.split(".")[0] for name in loaded.missing_keys})


def read_llama_folder(init_from: str) -> LlamaFolder:
    """The folder ``init_from`` (``hf:FOLDER``) names, checked; a sentence says what is wrong."""
    path = Path(init_from.removeprefix(PREFIX)).expanduser()
    try:
        if not path.is_dir():
            raise ConversionError(f"{path} is not a folder")
        official = read_config(path, ARCHITECTURES, "a Llama text model")
        config = model_config(official)
        weights = _text_weights(read_weights(path), official)
    except ConversionError as error:
        raise ValueError(f"cannot start from {init_from}: {error}") from None
    with torch.device("meta"):  # (shapes only: nothing allocated)
        expected = PixelTextModel(config).state_dict()
    problems = weight_problems(weights, expected, FRESH)
    if problems:
        raise ValueError(f"cannot start from {init_from}: the weights do not match config.json: {problems}")
    tokenizers = {}
    for name, kind in TOKENIZER_FILES.items():
        if (path / name).is_file():
            spec = f"{kind}:{(path / name).resolve()}"
            tokenizers[spec] = load_tokenizer(spec).fingerprint
    if not tokenizers:
        raise ValueError(f"cannot start from {init_from}: it has no tokenizer.json or tokenizer.model")
    sizes = {name: getattr(config, name) for name in FOLDER_DECIDES}
    return LlamaFolder(path, sizes, config.max_positions, weights, tokenizers)


def _text_weights(tensors: dict[str, torch.Tensor], official: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The folder's tensors under pixeltext's names, in float32; a tied LM head is copied from
    the token embeddings (pixeltext's head is a tensor of its own, trained apart from then on)."""
    weights = {
        name.removeprefix("model."): tensor.float().contiguous()
        for name, tensor in tensors.items()
        if not name.endswith("rotary_emb.inv_freq")
    }
    tied = official.get("tie_word_embeddings") and "embed_tokens.weight" in weights
    if tied and "lm_head.weight" not in weights:
        weights["lm_head.weight"] = weights["embed_tokens.weight"].clone()
    return weights
