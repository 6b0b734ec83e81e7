"""Export a checkpoint's text-only part in Hugging Face's Llama layout, with its tokenizer.

``pixeltext-export CHECKPOINT OUT_DIR`` writes ``config.json`` and
``model.safetensors`` as ``LlamaForCausalLM.save_pretrained`` would: the token embeddings,
the decoder and the LM head (the patch embedding and patch head have no place there). The
parameter names already follow Llama's, and the rotary embedding is Llama's, so no weight is
permuted. The tokenizer goes in as ``tokenizer.json`` (``hf_tokenizer``), so
``AutoTokenizer.from_pretrained(OUT_DIR)`` and ``LlamaForCausalLM.from_pretrained(OUT_DIR)``
give pixeltext's token ids and text logits. What a Hugging Face user cannot do with it: feed
pixels (no patch embedding or patch head in Llama's layout; use pixeltext for pixel or pair
inputs). ``transformers`` is not needed to export, only to load the result.

``OUT_DIR`` must be empty (or new): files of an earlier export left beside the new ones, such
as a ``special_tokens_map.json``, change what ``transformers`` loads. ``--replace`` first
removes what an export or ``save_pretrained`` writes there (``MODEL_FILES``) and keeps the rest.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from pixeltext_train.checkpoints import load_pretraining
from pixeltext_train.hf_tokenizer import write_tokenizer
from pixeltext_train.model import ModelConfig

TEXT_PARTS = ("embed_tokens.", "layers.", "norm.")
# What transformers reads of a model folder: an earlier export's (or save_pretrained's) files
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


class ExportError(ValueError):
    """An export that would mix with what is already in its folder."""


def llama_config(config: ModelConfig, tokenizer: dict[str, Any] | None) -> dict[str, Any]:
    tokenizer = tokenizer or {}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_positions,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": tokenizer.get("bos_id"),
        "eos_token_id": tokenizer.get("eos_id"),
        "pad_token_id": tokenizer.get("pad_id"),
        "torch_dtype": "float32",
        "pixeltext_tokenizer": tokenizer.get("spec"),
    }


def llama_state_dict(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our model's parameters -> Llama's names, text parts only."""
    exported = {}
    for name, tensor in model_state.items():
        if name == "lm_head.weight":
            exported[name] = tensor
        elif name.startswith(TEXT_PARTS):
            exported[f"model.{name}"] = tensor
    return {name: tensor.detach().float().contiguous() for name, tensor in exported.items()}


def export_checkpoint(checkpoint: str | Path, out: str | Path, replace: bool = False) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (and the tokenizer's files) for a
    Lightning checkpoint's model into ``out``: a new or empty folder, or with ``replace`` one
    whose earlier model files are removed first. Files get the usual mode (0666 less umask)."""
    saved = load_pretraining(checkpoint, needs=("model",))  # (the tokenizer is optional here)
    hyper = saved["hyper_parameters"]
    config = ModelConfig(**hyper["model"])
    model_state = {
        k.removeprefix("model."): v for k, v in saved["state_dict"].items() if k.startswith("model.")
    }
    out = Path(out)
    _make_room(out, replace)
    save_file(llama_state_dict(model_state), out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(llama_config(config, hyper.get("tokenizer")), indent=2))
    if (hyper.get("tokenizer") or {}).get("spec"):
        write_tokenizer(hyper["tokenizer"]["spec"], out)
    umask = os.umask(0)
    os.umask(umask)
    for path in _model_files(out):
        path.chmod(0o666 & ~umask)  # (safetensors writes 0600)
    return out


def _model_files(out: Path) -> list[Path]:
    return [path for pattern in MODEL_FILES for path in out.glob(pattern)]


def _make_room(out: Path, replace: bool) -> None:
    """An empty ``out``: made, found empty, or (``replace``) cleared of an earlier export."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; export into a folder")
    out.mkdir(parents=True, exist_ok=True)
    if not replace:
        if any(out.iterdir()):
            raise ExportError(
                f"{out} is not empty; export into a new folder, or pass --replace to remove an earlier "
                "export's files there first"
            )
        return
    for path in _model_files(out):
        path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="pixeltext-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument(
        "--replace", action="store_true", help="remove an earlier export's files in OUT first"
    )
    args = parser.parse_args()
    try:
        print(f"exported {export_checkpoint(args.checkpoint, args.out, args.replace)}")
    except (ValueError, FileNotFoundError) as error:  # (CheckpointError and ExportError too)
        raise SystemExit(f"cannot export: {error}") from None


if __name__ == "__main__":
    main()
