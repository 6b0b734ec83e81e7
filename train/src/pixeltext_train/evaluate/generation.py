"""``task=generate``: one prompt continued in text or pixels, or a strip read into text.

prompt text (rendered with the checkpoint's renderer) or a strip picture (``prompt_image``)
-> ``generate``'s loop in the chosen mode
-> ``generation.json`` (what was asked, what came out, why it stopped, how long it took) and,
   for ``pixel`` and ``read``, ``generation.png``: the strip, its continuation marked in colour,
   or the strip over the model's transcription drawn by the same renderer
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixeltext_render import RenderConfig
from pixeltext_render.preview import as_rgb
from pixeltext_render.raster import convert_color
from pixeltext_render.text import normalize_text
from pixeltext_train.data.sequences import strip_patches
from pixeltext_train.evaluate.backbone import Backbone
from pixeltext_train.generate import (
    Prompt,
    Sampling,
    for_cpu_decoding,
    generate_patches,
    generate_tokens,
    pixel_prompt,
    read_prompt,
    strip_patches_of,
)

MODES = ("text", "pixel", "read")
MARK = (220, 40, 40)  # the colour that marks what the model drew
SCALE = 4


@dataclass(frozen=True)
class GenerateOptions:
    """The ``generate`` config group (task=generate and task=cloze): how new tokens and
    patches are chosen."""

    max_new_tokens: int = 64  # modality=text and read
    max_new_patches: int = 64  # modality=pixel; it stops earlier where the model draws the end patch
    temperature: float = 0.0  # 0: greedy; else sampled at this temperature
    top_k: int = 0  # sample among the k likeliest tokens (0: all)
    top_p: float = 1.0  # sample within this much probability mass (1: all)
    seed: int = 0
    cache: bool = True  # false: the whole forward pass at every step (slow; for comparison)

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "max_new_patches"):
            if getattr(self, name) < 1:
                raise ValueError(f"generate.{name} must be at least 1, got {getattr(self, name)}")
        _ = self.sampling  # (refuses bad sampling options)

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.temperature, self.top_k, self.top_p, self.seed)


def text_prompt(text: str, tokenizer, bos_id: int) -> Prompt:
    """``bos`` and the text's tokens (normalised as the renderer normalises)."""
    ids = tokenizer.encode(normalize_text(text).text).ids
    return Prompt(np.concatenate([[bos_id], ids]).astype(np.int64))


def load_strip(path: str | Path, config: RenderConfig) -> np.ndarray:
    """The text patches of a strip saved as a picture (PNG or any format Pillow reads), in the
    renderer's colour mode (a picture in another is converted as the renderer converts strips)."""
    try:
        with Image.open(path) as image:
            pixels = convert_color(np.asarray(image.convert("RGB")), config.color)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path} as a picture: {error}") from None
    return strip_patches_of(pixels, config.patch_size, config.channels)


def strip_of(backbone: Backbone, prompt: str | None, prompt_image: str | Path | None) -> np.ndarray:
    """The text patches of the prompt's strip: the picture given, or the text rendered (its
    first strip)."""
    if (prompt is None) == (prompt_image is None):
        raise ValueError(
            'give the prompt as text (prompt="...") or as a strip picture (prompt_image=...), not both'
        )
    if prompt_image is not None:
        patches = load_strip(prompt_image, backbone.renderer.config)
        if not len(patches):
            raise ValueError(f"{prompt_image} shows no text: its strip is blank")
        return patches
    if not prompt.strip():
        raise ValueError("the prompt is empty: give some text to render")
    strip = backbone.renderer.render(prompt).strips[0]
    return strip_patches(strip, backbone.renderer.config.patch_size, strip.num_text_patches)


def prompt_for(backbone: Backbone, modality: str, prompt: str | None, prompt_image) -> Prompt:
    if modality not in MODES:
        raise ValueError(f"modality must be one of {MODES} for task=generate, got {modality!r}")
    if modality == "text":
        if prompt_image is not None or not (prompt or "").strip():
            raise ValueError('modality=text continues a text: give prompt="..." (not prompt_image)')
        return text_prompt(prompt, backbone.renderer.tokenizer, backbone.bos_id)
    patches = strip_of(backbone, prompt, prompt_image)
    if modality == "pixel":
        return pixel_prompt(patches)
    return read_prompt(patches, backbone.bos_id, backbone.end_patch)


def run_generation(
    backbone: Backbone, modality: str, options: GenerateOptions, prompt=None, prompt_image=None
):
    """One prompt's continuation: (its prompt, the continuation, seconds taken)."""
    request = prompt_for(backbone, modality, prompt, prompt_image)
    started = time.perf_counter()
    model = for_cpu_decoding(backbone.model)
    if modality == "pixel":
        result = generate_patches(model, [request], options.max_new_patches, options.cache)[0]
    else:
        eos = backbone.renderer.tokenizer.eos_id
        result = generate_tokens(
            model, [request], options.max_new_tokens, options.sampling, eos, options.cache
        )[0]
    return request, result, time.perf_counter() - started


def decoded_text(backbone: Backbone, tokens: np.ndarray) -> str:
    """The text of generated tokens (an ending ``eos`` left out)."""
    eos = backbone.renderer.tokenizer.eos_id
    kept = tokens[:-1] if len(tokens) and tokens[-1] == eos else tokens
    return backbone.renderer.tokenizer.decode(kept)


def patches_image(patches: np.ndarray, patch_size: int) -> np.ndarray:
    """Patches [n, D] side by side as one strip picture [patch_size, n * patch_size, 3] (RGB, for
    the marks in colour: one-channel patches, gray or binary, shown grey)."""
    count, channels = len(patches), patches.shape[1] // patch_size**2
    strip = patches.reshape(count, patch_size, patch_size, channels).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(as_rgb(strip.reshape(patch_size, -1, channels)))


def continuation_picture(
    prompt: np.ndarray, new: np.ndarray, ended: bool, patch_size: int, scale: int = SCALE
) -> Image.Image:
    """The prompt's patches, then the model's (and its black end patch if it drew one), with a
    band of ``MARK`` under the continuation and a line where it begins."""
    shown = np.concatenate([prompt, new, np.zeros((int(ended), prompt.shape[1]), np.uint8)])
    strip = patches_image(shown, patch_size)
    band = np.full((max(2, patch_size // 4), strip.shape[1], 3), 255, np.uint8)
    band[:, len(prompt) * patch_size :] = MARK
    picture = np.concatenate([strip, band])
    picture[:, max(len(prompt) * patch_size - 1, 0)] = MARK
    image = Image.fromarray(picture)
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def reading_picture(backbone: Backbone, patches: np.ndarray, text: str, scale: int = SCALE) -> Image.Image:
    """The strip read, and under it the model's transcription drawn by the same renderer."""
    size = backbone.renderer.config.patch_size
    read = backbone.renderer.render(text).strips[0] if text.strip() else None
    width = max(len(patches), read.num_text_patches if read else 1) * size
    rows = [patches_image(patches, size), np.full((max(2, size // 4), width, 3), MARK, np.uint8)]
    if read is not None:
        rows.append(np.ascontiguousarray(as_rgb(read.pixels[:, : read.num_text_patches * size])))
    canvas = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    image = Image.fromarray(np.concatenate(canvas))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def write_generation(
    backbone: Backbone,
    modality: str,
    options: GenerateOptions,
    out_dir: Path,
    prompt: str | None = None,
    prompt_image: str | None = None,
) -> dict[str, Any]:
    """Generate once and write ``generation.json`` (and ``generation.png`` for pixel and read)."""
    request, result, seconds = run_generation(backbone, modality, options, prompt, prompt_image)
    out_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "modality": modality,
        "checkpoint": backbone.source,
        "prompt": prompt if prompt is not None else str(prompt_image),
        "prompt_positions": len(request),
        "text": decoded_text(backbone, result.tokens) if modality != "pixel" else None,
        "token_ids": result.tokens.tolist(),
        "new_patches": len(result.patches),
        "stopped": result.stopped,
        "seconds": seconds,
        "options": asdict(options),
    }
    size = backbone.renderer.config.patch_size
    if modality == "pixel":
        picture = continuation_picture(request.patches, result.patches, result.stopped == "end_patch", size)
    elif modality == "read":
        text_patches = request.patches[: len(request.patches) - int(backbone.end_patch)]
        picture = reading_picture(backbone, text_patches, record["text"])
    if modality != "text":
        picture.save(out_dir / "generation.png")
        record["picture"] = str(out_dir / "generation.png")
    (out_dir / "generation.json").write_text(json.dumps(record, indent=2, ensure_ascii=False))
    return record
