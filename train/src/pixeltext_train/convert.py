"""Convert a released PixelGPT, MonoGPT or DualGPT checkpoint into a pixeltext checkpoint.

``pixeltext-convert SRC OUT.ckpt`` reads a Hugging Face checkpoint folder
(``config.json`` of an ``ErniePixelForCausalLM``, weights as ``model.safetensors`` (or
sharded, with its index) or ``pytorch_model.bin``, and Llama 2's ``tokenizer.model``) and
writes ``OUT.ckpt``, which ``eval/run.py checkpoint=OUT.ckpt`` and
``train/run.py init_from=OUT.ckpt`` take, with the tokenizer beside it
(``OUT.tokenizer.model``) and what the conversion found (``OUT.conversion.json``).

The decoder and both heads keep their weights (pixeltext's names are Llama's). The official
patch embedding is a 16 x 16 convolution, stride 16, over brightness in [0, 1] (channel, row,
column), then LayerNorm; pixeltext's is a linear map over ink, 1 - brightness, flattened row,
column, channel, then LayerNorm. With ``W`` the convolution's kernel and ``b`` its bias,
``W . brightness + b = -W . ink + (b + sum(W))``: the linear weight is ``-W`` reordered and its
bias ``b + sum(W)``, exactly. The next-patch head predicts values in row, column, channel order
in both. The official renderer (PangoCairo with ``GoNotoCurrent.ttf``) is not pixeltext's:
the renderer config is carried over where it maps, every difference is recorded, and evaluation
refuses pixel inputs from a converted checkpoint unless told (``allow_render_difference``).

Weights are read with safetensors, or PyTorch's weights-only loader: never by running code.
A folder that is not such a checkpoint gets an error that says what is wrong; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from pixeltext_render import RenderConfig, Renderer
from pixeltext_render.fonts import FontError, resolve_font
from pixeltext_render.tokenizers import load_tokenizer, tokenizer_record
from pixeltext_train.checkpoints import CheckpointError, load_plain
from pixeltext_train.model import ModelConfig, PixelTextModel

ARCHITECTURES = ("ErniePixelForCausalLM",)
CONVOLUTION = "model.embed_patches.patch_embeddings.projection."
RENAMED = {
    "model.embed_patches.patch_embeddings.norm.weight": "embed_patches.norm.weight",
    "model.embed_patches.patch_embeddings.norm.bias": "embed_patches.norm.bias",
    "lm_token_head.weight": "lm_head.weight",
    "lm_pixel_head.weight": "patch_head.weight",
}
COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0)}
PIXEL_DPI_POINTS = 72  # PangoCairo: pixels per em = points x dpi / 72


class ConversionError(ValueError):
    """SRC is not a checkpoint this converter knows; the message says what is wrong."""


def read_json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:  # (RecursionError: nested past what a parser follows)
        raise ConversionError(f"{path} is not JSON a converter can read: {error}") from None
    if not isinstance(value, dict):
        raise ConversionError(f"{path} holds a {type(value).__name__}, not a JSON object")
    return value


def read_config(
    source: Path, known: tuple[str, ...] = ARCHITECTURES, models: str = "PixelGPT, MonoGPT, DualGPT"
) -> dict[str, Any]:
    """A Hugging Face folder's ``config.json``, refused unless its architecture is one of
    ``known`` (``models`` names them for the error) and its decoder is Llama's as pixeltext has it."""
    path = source / "config.json"
    if not path.is_file():
        raise ConversionError(f"{source} has no config.json: not a Hugging Face checkpoint folder")
    config = read_json_object(path)
    architectures = config.get("architectures") or []
    if not any(name in known for name in architectures):
        raise ConversionError(
            f"{path}: architecture {architectures or config.get('model_type')} is not one this "
            f"converter knows ({', '.join(known)}: {models})"
        )
    unsupported = {
        "hidden_act": (config.get("hidden_act", "silu"), "silu"),
        "rope_scaling": (config.get("rope_scaling"), None),
        "attention_bias": (config.get("attention_bias", False), False),
        "mlp_bias": (config.get("mlp_bias", False), False),
        "head_dim": (config.get("head_dim") or _head_dim(config), _head_dim(config)),
        "image_size[0]": ((config.get("image_size") or [16])[0], config.get("patch_size", 16)),
    }
    wrong = [
        f"{key}={value!r} (pixeltext: {want!r})"
        for key, (value, want) in unsupported.items()
        if value != want
    ]
    if wrong:
        raise ConversionError(f"{path}: settings pixeltext's model does not have: {', '.join(wrong)}")
    return config


def _head_dim(config: dict[str, Any]) -> Any:
    try:
        return config["hidden_size"] // config["num_attention_heads"]
    except (KeyError, TypeError, ZeroDivisionError):
        return None  # (model_config says what is wrong)


def model_config(official: dict[str, Any]) -> ModelConfig:
    try:
        heads = official["num_attention_heads"]
        return ModelConfig(
            vocab_size=official["vocab_size"],
            hidden_size=official["hidden_size"],
            num_layers=official["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=official.get("num_key_value_heads") or heads,
            intermediate_size=official["intermediate_size"],
            max_positions=official.get("max_position_embeddings", 1024),
            rms_norm_eps=official.get("rms_norm_eps", 1e-6),
            rope_theta=official.get("rope_theta", 10000.0),
            patch_size=official.get("patch_size", 16),
            channels=official.get("num_channels", 3),
        )
    except KeyError as error:
        raise ConversionError(f"config.json lacks {error.args[0]}") from None
    except (TypeError, ValueError) as error:
        raise ConversionError(f"config.json: {error}") from None


def read_weights(source: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's weights, by name (safetensors first, then PyTorch's)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file as load_safetensors

    def load_file(path: Path) -> dict[str, torch.Tensor]:
        try:
            return load_safetensors(path)
        except (SafetensorError, OSError, ValueError) as error:  # e.g. a header that lies about sizes
            raise ConversionError(f"{path} is not a safetensors file it can read: {error}") from None

    for index_name, load in (
        ("model.safetensors.index.json", load_file),
        ("pytorch_model.bin.index.json", lambda p: load_plain(p, "a weights file")),
    ):
        index = source / index_name
        if index.is_file():
            weight_map = read_json_object(index).get("weight_map")
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise ConversionError(f"{index} has no weight_map of tensor names to file names")
            files = sorted(set(weight_map.values()))
            weights: dict[str, torch.Tensor] = {}
            for name in files:
                shard = (source / name).resolve()
                if shard.parent != source.resolve() or not shard.is_file():
                    raise ConversionError(f"{index} names {name!r}, which is not a file in {source}")
                weights.update(load(shard))
            return weights
    if (source / "model.safetensors").is_file():
        return load_file(source / "model.safetensors")
    if (source / "pytorch_model.bin").is_file():
        try:
            return load_plain(source / "pytorch_model.bin", "a weights file")
        except CheckpointError as error:
            raise ConversionError(str(error)) from None
    raise ConversionError(f"{source} has no weights (model.safetensors or pytorch_model.bin)")


def convert_weights(official: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """The official tensors under pixeltext's names; the patch embedding re-expressed on ink."""
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in official.items():
        if name.endswith("rotary_emb.inv_freq") or name.startswith(CONVOLUTION):
            continue
        if name in RENAMED:
            converted[RENAMED[name]] = tensor
        elif name.startswith("model."):
            converted[name.removeprefix("model.")] = tensor
        else:
            converted[name] = tensor
    kernel, bias = official.get(CONVOLUTION + "weight"), official.get(CONVOLUTION + "bias")
    if kernel is not None and bias is not None:
        if kernel.dim() != 4:
            raise ConversionError(
                f"{CONVOLUTION}weight has shape {list(kernel.shape)}, not a 2-D convolution"
            )
        kernel = kernel.double()
        converted["embed_patches.projection.weight"] = -kernel.permute(0, 2, 3, 1).reshape(
            kernel.shape[0], -1
        )
        converted["embed_patches.projection.bias"] = bias.double() + kernel.sum(dim=(1, 2, 3))
    expected = PixelTextModel(config).state_dict()
    problems = weight_problems(converted, expected)
    if problems:
        raise ConversionError(f"the weights do not match an ErniePixel model of this config.json: {problems}")
    return {name: converted[name].float().contiguous() for name in expected}


def weight_problems(
    tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], fresh: tuple[str, ...] = ()
) -> str:
    """What keeps ``tensors`` from loading into a model of ``expected`` tensors (names starting
    with ``fresh`` may be missing), the first few; empty if nothing."""
    problems = [f"missing {name}" for name in expected if name not in tensors and not name.startswith(fresh)]
    problems += [f"unexpected {name}" for name in tensors if name not in expected]
    problems += [
        f"{name} has shape {list(tensors[name].shape)}, the config says {list(tensor.shape)}"
        for name, tensor in expected.items()
        if name in tensors and tensors[name].shape != tensor.shape
    ]
    return "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")


def render_config(source: Path) -> tuple[RenderConfig, list[str]]:
    """pixeltext's render config nearest the official one, and every way it differs."""
    path = source / "text_renderer_config.json"
    official = {"font_file": "GoNotoCurrent.ttf", "font_size": 8, "dpi": 120, "pixels_per_patch": 16}
    official |= {"max_seq_length": 1024, "font_color": "black", "background_color": "white", "pad_size": 3}
    differences = ["drawn by PangoCairo in the official code, by HarfBuzz and FreeType in pixeltext"]
    if path.is_file():
        official |= read_json_object(path)
    else:
        differences.append(
            "no text_renderer_config.json in the folder: the official noto_renderer's is assumed"
        )
    values: dict[str, Any] = {
        "patch_size": int(official["pixels_per_patch"]),
        "max_patches": int(official["max_seq_length"]),
        "font_size": float(official["font_size"]) * float(official["dpi"]) / PIXEL_DPI_POINTS,
    }
    for key, field in (("font_color", "text_color"), ("background_color", "background")):
        colour = official[key]
        if colour in COLOURS:
            values[field] = COLOURS[colour]
        else:
            differences.append(f"{key}={colour!r} is not mapped: pixeltext's default is used")
    try:
        resolve_font(str(official["font_file"]))
        values["fonts"] = (str(official["font_file"]),)
    except FontError:
        differences.append(
            f"font {official['font_file']} is not installed: pixeltext draws with its Noto fallback chain"
        )
    config = RenderConfig(**values)
    differences.append(f"pad_size={official['pad_size']} (PIXEL's padding) has no pixeltext setting")
    return config, differences


def convert(source: str | Path, out: str | Path) -> dict[str, Any]:
    """Write ``out`` (a pixeltext checkpoint), its tokenizer and a conversion report."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise ConversionError(f"{source} is not a folder")
    official = read_config(source)
    config = model_config(official)
    state = convert_weights(read_weights(source), config)
    tokenizer_file = source / "tokenizer.model"
    if not tokenizer_file.is_file():
        raise ConversionError(f"{source} has no tokenizer.model (Llama 2's SentencePiece model)")
    pieces = load_tokenizer(f"sentencepiece:{tokenizer_file.resolve()}").vocab_size
    if pieces != config.vocab_size:
        raise ConversionError(
            f"tokenizer.model has {pieces} pieces; config.json's vocab_size is {config.vocab_size}"
        )
    render, differences = render_config(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer_copy = out.with_suffix(".tokenizer.model")
    shutil.copyfile(tokenizer_file, tokenizer_copy)
    renderer = Renderer(render, f"sentencepiece:{tokenizer_copy.resolve()}")
    tokenizer = renderer.tokenizer
    report = {
        "source": str(source.resolve()),
        "architecture": official["architectures"],
        "parameters": sum(t.numel() for t in state.values()),
        "render_differences": differences,
    }
    hyper = {
        "model": {**vars(config)},
        "render": {**renderer.describe(), "fingerprint": renderer.fingerprint, "differences": differences},
        "tokenizer": tokenizer_record(tokenizer),
        "bos_id": tokenizer.bos_id,
        "end_patch": True,  # the official pre-training feeds and predicts the black end patch
        "converted": report,
    }
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "hyper_parameters": hyper}, out)
    out.with_suffix(".conversion.json").write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="pixeltext-convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="the released checkpoint's folder")
    parser.add_argument("out", help="the pixeltext checkpoint to write (a .ckpt file)")
    args = parser.parse_args()
    try:
        report = convert(args.source, args.out)
    except (ConversionError, CheckpointError) as error:
        raise SystemExit(f"cannot convert: {error}") from None
    print(f"converted {report['parameters']:,} parameters -> {args.out}")
    print("the renderer differs from the official one:\n  " + "\n  ".join(report["render_differences"]))


if __name__ == "__main__":
    main()
