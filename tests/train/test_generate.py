"""Generation: the cached forward pass is the full one, the loop is Hugging Face's for text, and a
model that memorised a few strips continues them in text and pixels and reads them back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixeltext_train.data.batches import collate
from pixeltext_train.data.sequences import SequenceSpec, make_sequence, strip_patches
from pixeltext_train.generate import (
    Prompt,
    Sampling,
    choose_tokens,
    for_cpu_decoding,
    generate_patches,
    generate_tokens,
    patch_pixels,
    pixel_prompt,
    prompt_statistics,
    read_prompt,
    strip_patches_of,
)
from pixeltext_train.losses import normalize_patches
from pixeltext_train.model import KVCache, ModelConfig, Packing, PixelTextModel
from pixeltext_train.module import PixelTextLM

from numerics import EFFECT, KERNEL

TINY = dict(vocab_size=300, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=176)
LENGTHS = (9, 4, 13)  # prompts of different lengths in one batch


def tiny_model(seed: int = 0, **overrides) -> PixelTextModel:
    torch.manual_seed(seed)
    return PixelTextModel(ModelConfig(**TINY, max_positions=64, **overrides)).eval()


def mixed_prompts(seed: int = 0) -> list[Prompt]:
    """A pair-like row (patches, then tokens), a text row and a pixel row, of LENGTHS."""
    rng = np.random.default_rng(seed)
    patches = lambda n: rng.integers(0, 256, (n, 768), dtype=np.uint8)  # noqa: E731
    tokens = lambda n: rng.integers(3, 300, n).astype(np.int64)  # noqa: E731
    return [Prompt(tokens(4), patches(5)), Prompt(tokens(4)), Prompt(np.zeros(0, np.int64), patches(13))]


def alone(model: PixelTextModel, prompt: Prompt, fed: list) -> torch.Tensor:
    """The full forward pass over one row alone (no padding, no cache): hidden states [L, H]
    after its prompt and each fed input (a token id, or a patch of pixels)."""
    patches = [] if prompt.patches is None else list(prompt.patches)
    kinds = [True] * len(patches) + [False] * len(prompt.tokens)
    ids = [0] * len(patches) + prompt.tokens.tolist()
    for value in fed:
        is_patch = isinstance(value, np.ndarray)
        kinds.append(is_patch)
        ids.append(0 if is_patch else int(value))
        patches.append(value) if is_patch else None
    pixels = np.zeros((len(ids), 768), np.uint8)
    pixels[np.flatnonzero(kinds)] = np.array(patches).reshape(-1, 768) if patches else pixels[:0]
    with torch.no_grad():
        return model(torch.tensor([ids]), torch.from_numpy(pixels)[None], torch.tensor([kinds]))[0]


def test_the_cache_gives_the_full_forward_pass_at_every_step_for_rows_of_different_lengths():
    model, prompts = tiny_model(), mixed_prompts()
    rng = np.random.default_rng(1)
    steps = [
        rng.integers(0, 256, (3, 768), dtype=np.uint8) if s % 2 else rng.integers(3, 300, 3) for s in range(6)
    ]
    width = max(LENGTHS)
    tokens, pixels = (
        torch.zeros(3, width, dtype=torch.long),
        torch.full((3, width, 768), 77, dtype=torch.uint8),
    )
    is_patch = torch.zeros(3, width, dtype=torch.bool)
    positions, segments = torch.zeros(3, width, dtype=torch.long), torch.full((3, width), -1)
    for row, prompt in enumerate(prompts):
        at, k = width - len(prompt), 0 if prompt.patches is None else len(prompt.patches)
        pixels[row, at : at + k] = torch.from_numpy(prompt.patches) if k else 0
        is_patch[row, at : at + k] = True
        tokens[row, at + k :] = torch.from_numpy(prompt.tokens)
        tokens[row, :at] = 123  # padding: any content
        positions[row, at:] = torch.arange(len(prompt))
        segments[row, at:] = 0
    for static in (False, True):
        cache = KVCache(model.config, 3, width + len(steps), static=static)
        with torch.no_grad():
            cached = [model(tokens, pixels, is_patch, Packing(positions, segments), cache)]
            for s, value in enumerate(steps):
                position = torch.tensor(LENGTHS)[:, None] + s
                patch = isinstance(value[0], np.ndarray)
                step = (
                    torch.zeros(3, 1, dtype=torch.long) if patch else torch.from_numpy(value)[:, None],
                    torch.from_numpy(value)[:, None] if patch else None,
                    torch.full((3, 1), patch),
                )
                cached.append(model(*step, Packing(position, torch.zeros_like(position)), cache))
        for row, prompt in enumerate(prompts):
            full = alone(model, prompt, [value[row] for value in steps])
            torch.testing.assert_close(cached[0][row, width - len(prompt) :], full[: len(prompt)], **KERNEL)
            for s in range(len(steps)):
                torch.testing.assert_close(cached[s + 1][row, 0], full[len(prompt) + s], **KERNEL)
    # the control: another input moves what follows it by more than the tolerance
    assert (alone(model, prompts[1], [5])[-1] - alone(model, prompts[1], [6])[-1]).abs().max() > EFFECT


@pytest.mark.parametrize("use_cache", [True, False])
def test_each_generated_token_and_patch_is_what_the_full_forward_pass_predicts(use_cache):
    model = tiny_model(patch_stats=True)
    with torch.no_grad():  # sharper logits than a fresh model's, so that greedy choices are clear
        model.lm_head.weight.mul_(30)
    prompts = mixed_prompts(2)
    for prompt, result in zip(prompts, generate_tokens(model, prompts, 8, use_cache=use_cache), strict=True):
        assert result.stopped == "max_new" and len(result.tokens) == 8
        logits = model.lm_head(alone(model, prompt, list(result.tokens[:-1]))[len(prompt) - 1 :])
        top = logits.topk(2, dim=-1).values
        clear = (top[:, 0] - top[:, 1]) > 2 * KERNEL["atol"] * top.abs().max()  # no near-tie
        assert clear.any()
        assert (logits.argmax(dim=-1)[clear].numpy() == result.tokens[clear.numpy()]).all()
    with torch.no_grad():  # a mean above the end-patch threshold: the rows run to max_new
        model.patch_stats_head.bias.copy_(torch.tensor([0.8, 0.3]))
    pictured = [prompts[0], prompts[2]]  # (rows with patches: a pixel prompt)
    for prompt, result in zip(
        pictured, generate_patches(model, pictured, 5, use_cache=use_cache), strict=True
    ):
        assert result.stopped == "max_new" and result.patches.shape == (5, 768)
        hidden = alone(model, prompt, list(result.patches[:-1]))[len(prompt) - 1 :]
        expected, _ = patch_pixels(model, hidden, torch.zeros(len(hidden), 2))  # (the head decides)
        assert np.abs(expected.numpy().astype(int) - result.patches.astype(int)).max() <= 1  # (rounding)


def test_greedy_text_is_transformers_generate_token_for_token(tmp_path):
    from transformers import LlamaForCausalLM

    from pixeltext_train.export import export_checkpoint

    torch.manual_seed(3)
    module = PixelTextLM(model={**TINY, "max_positions": 64}, bos_id=1).eval()
    with torch.no_grad():
        module.model.lm_head.weight.mul_(30)
    checkpoint = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, checkpoint)
    llama = LlamaForCausalLM.from_pretrained(export_checkpoint(checkpoint, tmp_path / "hf")).eval()
    prompt = np.random.default_rng(4).integers(3, 300, 12)
    ours = generate_tokens(module.model, [Prompt(prompt)], 20)[0].tokens
    with torch.no_grad():
        theirs = llama.generate(
            torch.from_numpy(prompt)[None],
            max_new_tokens=20,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )[0, len(prompt) :]
    assert ours.tolist() == theirs.tolist()
    assert len(set(ours.tolist())) > 3  # not one token repeated


def test_the_cpu_decoding_copy_computes_what_the_model_does():
    model = tiny_model(patch_stats=True)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    copy = for_cpu_decoding(model)
    assert isinstance(model.lm_head, torch.nn.Linear) and model.lm_head.weight.requires_grad  # untouched
    prompts = mixed_prompts(3)
    with torch.no_grad():
        tokens, patches, is_patch = torch.tensor([[0] * 5 + prompts[0].tokens.tolist()]), None, None
        patches = torch.zeros(1, 9, 768, dtype=torch.uint8)
        patches[0, :5] = torch.from_numpy(prompts[0].patches)
        is_patch = torch.tensor([[True] * 5 + [False] * 4])
        ours, theirs = (m.lm_head(m(tokens, patches, is_patch)) for m in (model, copy))
    torch.testing.assert_close(ours, theirs, **KERNEL)  # (another library's kernels)
    assert [r.tokens.tolist() for r in generate_tokens(copy, prompts, 6)] == [
        r.tokens.tolist() for r in generate_tokens(model, prompts, 6)
    ]


def test_sampling_follows_its_options():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(2000, 1)
    generator = torch.Generator().manual_seed(0)
    assert (choose_tokens(logits, Sampling(), generator) == 0).all()  # greedy
    top2 = choose_tokens(logits, Sampling(temperature=1.0, top_k=2), generator)
    assert set(top2.tolist()) == {0, 1}
    nucleus = choose_tokens(logits, Sampling(temperature=1.0, top_p=0.8), generator)  # 0.64 + 0.24 > 0.8
    assert set(nucleus.tolist()) == {0, 1}
    spread = choose_tokens(logits, Sampling(temperature=1.0), generator)
    share = (spread == 0).float().mean().item()
    assert abs(share - torch.softmax(logits[0], 0)[0].item()) < 0.05  # 2000 draws: 4.7 standard errors
    model, prompts = tiny_model(), mixed_prompts()
    runs = [generate_tokens(model, prompts, 6, Sampling(temperature=1.0, seed=s)) for s in (5, 5, 6)]
    assert [r.tokens.tolist() for r in runs[0]] == [r.tokens.tolist() for r in runs[1]]  # one seed
    assert [r.tokens.tolist() for r in runs[0]] != [r.tokens.tolist() for r in runs[2]]
    for bad in ({"temperature": -1.0}, {"temperature": float("nan")}, {"top_p": 0.0}, {"top_k": -2}):
        with pytest.raises(ValueError, match="generate"):
            Sampling(**bad)


def test_rows_stop_at_eos_and_at_the_models_positions():
    model = tiny_model()
    with torch.no_grad():  # all logits 0: greedy decoding says token 0 (the first of the ties)
        model.norm.weight.zero_()
    grown = generate_tokens(model, mixed_prompts(), 10, eos_id=0)
    assert all(r.stopped == "eos" and r.tokens.tolist() == [0] for r in grown)
    assert all(
        r.stopped == "max_new" and len(r.tokens) == 10 for r in generate_tokens(model, mixed_prompts(), 10)
    )
    long = generate_tokens(model, [Prompt(np.arange(3, 63))], 10)[0]  # 60 of 64 positions
    assert long.stopped == "max_positions" and len(long.tokens) == 5  # the last position predicts too
    for prompts, match in (
        ([Prompt(np.arange(3, 68))], "longer than the model's 64"),
        ([Prompt(np.zeros(0, np.int64))], "empty prompt"),
        ([], "no prompt"),
    ):
        with pytest.raises(ValueError, match=match):
            generate_tokens(model, prompts, 4)


def test_a_strip_picture_gives_its_text_patches():
    rng = np.random.default_rng(0)
    ink = rng.integers(0, 200, (16, 48, 3), dtype=np.uint8)
    strip = np.concatenate(
        [ink, np.zeros((16, 16, 3), np.uint8), np.full((16, 64, 3), 255, np.uint8)], axis=1
    )
    assert strip_patches_of(strip, 16).shape == (3, 768)  # up to the black end patch
    assert strip_patches_of(np.concatenate([ink, np.full((16, 40, 3), 255, np.uint8)], axis=1), 16).shape == (
        3,
        768,
    )
    assert strip_patches_of(ink[:, :40], 16).shape == (3, 768)  # a crop is completed with paper
    with pytest.raises(ValueError, match="16 pixels high; this image is 20"):
        strip_patches_of(np.zeros((20, 64, 3), np.uint8), 16)


def test_without_the_statistics_head_patches_take_their_prompts_statistics():
    rng = np.random.default_rng(0)
    inked = np.where(rng.random((6, 768)) < 0.2, 0, 255).astype(np.uint8)  # ink on paper
    stats = prompt_statistics([pixel_prompt(inked)], torch.device("cpu"))[0]
    pixels = torch.from_numpy(inked).float() / 255
    assert abs(stats[0].item() - pixels.mean(dim=1).mean().item()) < 1e-6
    model = tiny_model()  # no patch_stats head
    hidden = torch.randn(2, 64)
    drawn, end = patch_pixels(model, hidden, stats.repeat(2, 1))
    expected = (stats[0] + stats[1] * model.patch_head(hidden)).clamp(0, 1) * 255
    assert (drawn.int() - expected.round().int()).abs().max() <= 1 and not end.any()
    made = generate_patches(model, [pixel_prompt(inked)], 7)[0]
    assert made.stopped == "max_new" and len(made.patches) == 7  # it cannot tell an end patch


MEMORISED = (
    "The quick brown fox jumps over the lazy dog.",
    "A red balloon drifts above the quiet harbour.",
    "Seven musicians played jazz until midnight.",
)


@pytest.fixture(scope="module")
def memorised(renderer):
    """A tiny pixel_text model (with the patch statistics head and end patches) trained until it
    knows three strips: their pixel, text and pair sequences."""
    tokenizer = renderer.tokenizer
    spec = SequenceSpec(96, 16, tokenizer.bos_id, 0, end_patch=True, eos_id=tokenizer.eos_id)
    strips = [renderer.render(text).strips[0] for text in MEMORISED]
    sequences = [(kind, *make_sequence(s, kind, spec)) for s in strips for kind in ("pixel", "text", "pair")]
    batch = collate(sequences, spec)
    torch.manual_seed(0)
    config = {**TINY, "vocab_size": tokenizer.vocab_size, "max_positions": 96, "patch_stats": True}
    module = PixelTextLM(model=config, bos_id=tokenizer.bos_id)
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(500):  # (300 leave some seeds short of a free-running continuation)
        loss = module.losses(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return module.model.eval(), strips


def normalised_error(drawn: np.ndarray, truth: np.ndarray) -> float:
    a, b = (normalize_patches(torch.from_numpy(x).float() / 255) for x in (drawn, truth))
    return (a - b).pow(2).mean().item()


def test_a_model_that_memorised_strips_continues_them_and_reads_them(memorised, renderer):
    model, strips = memorised
    tokenizer = renderer.tokenizer
    fresh = PixelTextModel(
        ModelConfig(**{**TINY, "vocab_size": tokenizer.vocab_size}, max_positions=96)
    ).eval()
    errors, baseline = [], []
    for strip in strips:
        ids, patches = strip.token_ids, strip_patches(strip, 16, strip.num_text_patches)
        text = generate_tokens(model, [Prompt(np.array([tokenizer.bos_id, *ids[:3]]))], 40, eos_id=None)[0]
        assert text.tokens[: len(ids) - 3].tolist() == ids[3:].tolist()  # the memorised text
        read = generate_tokens(
            model, [read_prompt(patches, tokenizer.bos_id, True)], 40, eos_id=tokenizer.eos_id
        )
        assert read[0].stopped == "eos" and read[0].tokens.tolist() == [*ids.tolist(), tokenizer.eos_id]
        half = len(patches) // 2
        rest = patches[half:]
        drawn = generate_patches(model, [pixel_prompt(patches[:half])], len(rest) + 4)[0]
        assert drawn.stopped == "end_patch" and len(drawn.patches) == len(rest)  # it ends where the text does
        errors.append(normalised_error(drawn.patches, rest))
        other = generate_patches(fresh, [pixel_prompt(patches[:half])], len(rest))[0]
        baseline.append(normalised_error(other.patches, rest))
    assert np.mean(errors) < 0.2 * np.mean(baseline), (errors, baseline)
