"""Generation: continue a text in tokens, continue a strip in pixels, or read a strip into text.

    prompts (each a row of patches, then tokens: the layout of training sequences)
    -> left-padded into one batch, each row's rotary positions starting at its first input
    -> one forward pass over the prompts into a ``KVCache`` (padding is never attended to)
    -> one position per step, every row at once:
         tokens (``text``, ``read``): the next token, greedy or sampled, fed back as a token
         patches (``pixel``):         the next patch, de-normalised into pixels, fed back as a patch
    -> per row: what it generated and why it stopped (``STOPS``)

The three modes differ only in their prompt (a text's tokens, ``pixel_prompt``, ``read_prompt``):
``read`` is the pair regimen's layout, a strip's patches, then ``bos``, and the model writes the
tokens of the text it sees. ``use_cache=False`` runs the whole forward pass at every step (the
reference the cache is tested and measured against).

From normalised patches to pixels (``patch_pixels``): the patch head predicts a patch minus its
mean, over its standard deviation, which by design drops both. A model with the ``patch_stats``
head predicts them too, and the pixels are ``mean + std * prediction``; it recognises the black
end patch as a predicted mean below ``END_PATCH_MEAN``. A model without it (the paper's) is
de-normalised with its prompt's own mean and spread (``prompt_statistics``), which measured as
close to the true pixels as the head does; its end patch cannot be told from any other
normalised patch, so it stops only at ``max_new_patches``. A model trained with
``patch_loss=bce`` (binary strips) predicts each pixel's ink logit instead: ink where its
sigmoid is above 0.5, drawn 0, else paper, 255 (``ink_pixels``); a patch drawn with a mean
below ``END_PATCH_MEAN`` is the end patch, as with the head.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pixeltext_train.losses import patch_statistics
from pixeltext_train.model import KVCache, Packing, PixelTextModel

STOPS = ("eos", "end_patch", "max_new", "max_positions")
END_PATCH_MEAN = 0.25  # a predicted mean brightness below this is the black end patch


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy at temperature 0, else sampled from the
    temperature-scaled distribution cut to its ``top_k`` tokens and its ``top_p`` mass."""

    temperature: float = 0.0
    top_k: int = 0  # 0: no cut
    top_p: float = 1.0  # 1: no cut
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [
            f"generate.{name} must be {rule}, got {value}"
            for name, value, ok, rule in (
                (
                    "temperature",
                    self.temperature,
                    math.isfinite(self.temperature) and self.temperature >= 0,
                    ">= 0",
                ),
                ("top_k", self.top_k, self.top_k >= 0, ">= 0 (0: off)"),
                ("top_p", self.top_p, 0 < self.top_p <= 1, "in (0, 1] (1: off)"),
            )
            if not ok
        ]
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class Prompt:
    """One row's inputs: ``patches`` (uint8 [k, patch_dim]) first, then ``tokens``."""

    tokens: np.ndarray
    patches: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.tokens) + (0 if self.patches is None else len(self.patches))


@dataclass
class Continuation:
    """What one row generated: new token ids, or new patches (uint8 [n, patch_dim])."""

    tokens: np.ndarray
    patches: np.ndarray
    stopped: str  # one of STOPS


# -- prompts -----------------------------------------------------------------------------


def strip_patches_of(image: np.ndarray, patch_size: int, channels: int = 3) -> np.ndarray:
    """A strip picture's text patches, each flattened (row, column, channel) [k, D]: up to its
    black end patch if it has one, else up to its last patch with ink. A grey picture [H, W]
    has its one value in each of the ``channels``; [H, W, C] must have them."""
    pixels = image if image.ndim == 3 else np.repeat(image[..., None], channels, axis=-1)
    height, width, given = pixels.shape
    if given != channels:
        raise ValueError(f"the model takes {channels}-channel patches; this picture has {given} channels")
    if height != patch_size:
        raise ValueError(f"a strip is {patch_size} pixels high; this image is {height}")
    if width % patch_size:  # (a crop: the rest of its last patch is paper)
        pad = patch_size - width % patch_size
        pixels = np.concatenate([pixels, np.full((height, pad, channels), 255, np.uint8)], axis=1)
    count = pixels.shape[1] // patch_size
    patches = pixels.reshape(height, count, patch_size, channels).transpose(1, 0, 2, 3).reshape(count, -1)
    black = np.flatnonzero((patches == 0).all(axis=1))
    if len(black):
        return np.ascontiguousarray(patches[: black[0]])
    inked = np.flatnonzero((patches != 255).any(axis=1))
    return np.ascontiguousarray(patches[: inked[-1] + 1 if len(inked) else 0])


def pixel_prompt(patches: np.ndarray) -> Prompt:
    """A strip's text patches, to be continued in pixels."""
    return Prompt(np.zeros(0, np.int64), patches)


def read_prompt(patches: np.ndarray, bos_id: int, end_patch: bool) -> Prompt:
    """A strip's text patches (and its black end patch, if the model was trained with it), then
    ``bos``: the model continues with the tokens of the text it sees."""
    if end_patch:
        patches = np.concatenate([patches, np.zeros((1, patches.shape[1]), np.uint8)])
    return Prompt(np.array([bos_id], np.int64), patches)


# -- choosing the next token or patch ----------------------------------------------------


def choose_tokens(logits: Tensor, sampling: Sampling, generator: torch.Generator | None) -> Tensor:
    """[B] the next token of each row from its logits [B, V]."""
    logits = logits.float()
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / sampling.temperature
    if sampling.top_k and sampling.top_k < logits.shape[-1]:
        kth = logits.topk(sampling.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if sampling.top_p < 1:
        ordered, order = logits.sort(dim=-1, descending=True)
        before = ordered.softmax(dim=-1).cumsum(dim=-1) - ordered.softmax(dim=-1)  # mass ahead of each
        ordered = ordered.masked_fill(before >= sampling.top_p, -math.inf)  # (the first always stays)
        logits = torch.full_like(logits, -math.inf).scatter(-1, order, ordered)
    probabilities = logits.softmax(dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)


def prompt_statistics(prompts: list[Prompt], device: torch.device) -> Tensor:
    """[B, 2] the mean brightness and standard deviation of each prompt's patches, averaged:
    how a model without the ``patch_stats`` head de-normalises the patches it draws after them."""
    rows = []
    for prompt in prompts:
        mean, std = patch_statistics(torch.from_numpy(prompt.patches).float() / 255.0)
        rows.append(torch.stack([mean.mean(), std.mean()]))
    return torch.stack(rows).to(device)


def ink_pixels(logits: Tensor) -> Tensor:
    """uint8 pixels of a ``patch_loss=bce`` prediction: ink (sigmoid above 0.5) 0, paper 255."""
    return torch.where(logits.float().sigmoid() > 0.5, 0, 255).to(torch.uint8)


def patch_pixels(model: PixelTextModel, hidden: Tensor, fallback: Tensor) -> tuple[Tensor, Tensor]:
    """The next patch of each row as uint8 pixels [B, D], and whether it is the end patch [B]:
    ink bits (``patch_loss=bce``); or de-normalised with the ``patch_stats`` head's mean and
    spread, or else with ``fallback`` [B, 2] (and then never the end patch, which a normalised
    prediction cannot show)."""
    if model.config.patch_loss == "bce":
        pixels = ink_pixels(model.patch_head(hidden))
        return pixels, pixels.float().mean(dim=-1) / 255 < END_PATCH_MEAN
    normalised = model.patch_head(hidden).float()
    if model.config.patch_stats:
        mean, std = model.patch_stats_head(hidden).float().unbind(-1)
        end = mean < END_PATCH_MEAN
    else:
        (mean, std), end = (
            fallback.unbind(-1),
            torch.zeros(len(hidden), dtype=torch.bool, device=hidden.device),
        )
    pixels = mean[:, None] + std.clamp(min=0)[:, None] * normalised
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8), end


def for_cpu_decoding(model: PixelTextModel) -> PixelTextModel:
    """A copy of ``model`` for decoding on the CPU, its linear maps laid out for oneDNN
    (``torch.utils.mkldnn``): decoding multiplies one row at a time, which MKL, PyTorch's default
    on the CPU, does on one thread (measured: model=small decodes 1.4 times faster this way).
    The copy is for inference only; ``model`` itself is untouched. Elsewhere: ``model``."""
    parameter = next(model.parameters())
    if (
        parameter.device.type != "cpu"
        or parameter.dtype != torch.float32
        or not torch.backends.mkldnn.is_available()
    ):
        return model
    with warnings.catch_warnings():
        # torch.utils.mkldnn defines its wrappers with torch.jit, which warns that it is deprecated.
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.utils import mkldnn

        return mkldnn.to_mkldnn(copy.deepcopy(model).eval())


# -- the loop ----------------------------------------------------------------------------


class _Rows:
    """The growing batch of one generation: left-padded prompts, then one input per step."""

    def __init__(
        self, model: PixelTextModel, prompts: list[Prompt], capacity: int, use_cache: bool, static: bool
    ):
        self.model = model
        self.device = next(model.parameters()).device
        width = max(len(p) for p in prompts)
        size, dim = len(prompts), model.config.patch_dim
        tokens = np.zeros((size, width), np.int64)
        patches = np.zeros((size, width, dim), np.uint8)
        is_patch = np.zeros((size, width), bool)
        for row, prompt in enumerate(prompts):
            at = width - len(prompt)
            k = 0 if prompt.patches is None else len(prompt.patches)
            if k:
                patches[row, at : at + k] = prompt.patches
                is_patch[row, at : at + k] = True
            tokens[row, at + k :] = prompt.tokens
        self.width, self.steps = width, 0
        self.lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        self.padded = bool((self.lengths < width).any())
        self.inputs = [torch.from_numpy(a).to(self.device) for a in (tokens, patches, is_patch)]
        start = width - self.lengths
        columns = torch.arange(width, device=self.device)
        self.positions = (columns[None, :] - start[:, None]).clamp(min=0)
        self.segments = torch.where(columns[None, :] >= start[:, None], 0, -1)
        self.cache = None
        if use_cache:
            dtype = model.embed_tokens.weight.dtype
            self.cache = KVCache(model.config, size, capacity, self.device, dtype, static)

    def first(self) -> Tensor:
        """The hidden state [B, H] after each prompt."""
        packing = Packing(self.positions, self.segments) if self.padded or self.cache else None
        return self.model(*self.inputs, packing=packing, cache=self.cache)[:, -1]

    def next(self, tokens: Tensor | None = None, patches: Tensor | None = None) -> Tensor:
        """Append one input per row, a token or a patch of pixels, and return the hidden state
        [B, H] after it."""
        size = len(self.lengths)
        position = (self.lengths + self.steps)[:, None]
        self.steps += 1
        is_patch = torch.full((size, 1), patches is not None, device=self.device)
        tokens = torch.zeros(size, dtype=torch.int64, device=self.device) if tokens is None else tokens
        if self.cache is not None:  # (a token step needs no patch input)
            pixels = None if patches is None else patches[:, None]
            packing = Packing(position, torch.zeros_like(position))
            return self.model(tokens[:, None], pixels, is_patch, packing=packing, cache=self.cache)[:, -1]
        if patches is None:
            patches = torch.zeros(size, self.model.config.patch_dim, dtype=torch.uint8, device=self.device)
        step = (tokens[:, None], patches[:, None], is_patch)
        self.inputs = [torch.cat([a, b], dim=1) for a, b in zip(self.inputs, step, strict=True)]
        self.positions = torch.cat([self.positions, position], dim=1)
        self.segments = torch.cat([self.segments, torch.zeros_like(position)], dim=1)
        packing = Packing(self.positions, self.segments) if self.padded else None
        return self.model(*self.inputs, packing=packing)[:, -1]


def _limits(model: PixelTextModel, prompts: list[Prompt], max_new: int) -> tuple[int, str]:
    """How many new positions may be generated, and the stop reason once they are."""
    if not prompts:
        raise ValueError("no prompt to continue")
    if min(len(p) for p in prompts) == 0:
        raise ValueError("an empty prompt: give at least one token or patch to continue")
    if max_new < 1:
        raise ValueError(f"the number of new tokens or patches must be at least 1, got {max_new}")
    longest, positions = max(len(p) for p in prompts), model.config.max_positions
    if longest > positions:
        raise ValueError(
            f"a prompt of {longest} positions is longer than the model's {positions}: shorten the prompt"
        )
    room = positions - longest + 1  # (the last position still predicts what follows it)
    return (max_new, "max_new") if max_new <= room else (room, "max_positions")


@torch.no_grad()
def _decode(
    model: PixelTextModel,
    prompts: list[Prompt],
    max_new: int,
    use_cache: bool,
    static: bool,
    choose,
    stop: str,
) -> tuple[Tensor, list[tuple[str, int]]]:
    """The shared loop: ``choose(hidden)`` gives each row's next output [B, ...] (a token id or a
    patch of pixels) and whether it ends the row [B]. Returns the outputs [B, n, ...] and each
    row's stop reason with the number of its outputs (an ending token is kept, an end patch not)."""
    limit, otherwise = _limits(model, prompts, max_new)
    model.eval()
    rows = _Rows(model, prompts, max(len(p) for p in prompts) + limit - 1, use_cache, static)
    outputs, stopped = [], [None] * len(prompts)
    hidden = rows.first()
    while True:
        value, ends = choose(hidden)
        outputs.append(value)
        for row, ended in enumerate(ends.tolist()):
            if stopped[row] is None and ended:
                stopped[row] = (stop, len(outputs) - (stop == "end_patch"))
        if all(stopped) or len(outputs) == limit:
            break
        hidden = rows.next(*((value, None) if value.dim() == 1 else (None, value)))
    return torch.stack(outputs, dim=1).cpu(), [s or (otherwise, len(outputs)) for s in stopped]


def generate_tokens(
    model: PixelTextModel,
    prompts: list[Prompt],
    max_new_tokens: int,
    sampling: Sampling = Sampling(),
    eos_id: int | None = None,
    use_cache: bool = True,
    static_cache: bool = False,
) -> list[Continuation]:
    """Continue each prompt with up to ``max_new_tokens`` tokens (``text`` and ``read``); a row
    stops at ``eos_id``, which is kept as its last token."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(sampling.seed) if sampling.temperature else None

    def choose(hidden: Tensor) -> tuple[Tensor, Tensor]:
        tokens = choose_tokens(model.lm_head(hidden), sampling, generator)
        return tokens, (tokens == eos_id) if eos_id is not None else torch.zeros_like(
            tokens, dtype=torch.bool
        )

    tokens, stopped = _decode(model, prompts, max_new_tokens, use_cache, static_cache, choose, "eos")
    empty = np.zeros((0, model.config.patch_dim), np.uint8)
    return [Continuation(tokens[row, :n].numpy(), empty, why) for row, (why, n) in enumerate(stopped)]


def generate_patches(
    model: PixelTextModel,
    prompts: list[Prompt],
    max_new_patches: int,
    use_cache: bool = True,
    static_cache: bool = False,
) -> list[Continuation]:
    """Continue each prompt with up to ``max_new_patches`` patches (``pixel``), each fed back as
    the next input; a row stops where the model predicts the end patch (not returned)."""
    if any(p.patches is None or not len(p.patches) for p in prompts):
        raise ValueError("a pixel prompt needs patches to continue")
    fallback = prompt_statistics(prompts, next(model.parameters()).device)
    patches, stopped = _decode(
        model,
        prompts,
        max_new_patches,
        use_cache,
        static_cache,
        lambda hidden: patch_pixels(model, hidden, fallback),
        "end_patch",
    )
    none = np.zeros(0, np.int64)
    return [Continuation(none, patches[row, :n].numpy(), why) for row, (why, n) in enumerate(stopped)]
