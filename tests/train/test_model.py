"""The decoder and its losses: shapes, causality, padding, the normalised MSE, HF parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from pixeltext_train.data.batches import Batch
from pixeltext_train.losses import normalized_patch_mse, patch_targets, token_targets
from pixeltext_train.model import ModelConfig, PixelTextModel
from pixeltext_train.module import PixelTextLM

from numerics import EFFECT, KERNEL, close

REPO = Path(__file__).resolve().parents[2]
TINY = {  # conf/model/tiny.yaml with a small vocabulary and context
    **OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "tiny.yaml")),
    "vocab_size": 300,
    "max_positions": 64,
}


def mixed_batch(length: int = 20, patches: int = 8, batch: int = 2, seed: int = 0) -> Batch:
    """Patches first, then bos and tokens (a pair), right-padded in the second row."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, 300, (batch, length), generator=g)
    pixels = torch.randint(0, 256, (batch, length, 768), generator=g, dtype=torch.uint8)
    is_patch = torch.zeros(batch, length, dtype=torch.bool)
    is_patch[:, :patches] = True
    tokens[:, patches] = 1
    pixels[~is_patch] = 0
    real = torch.ones(batch, length, dtype=torch.bool)
    real[1, length - 5 :] = False
    return Batch(tokens, pixels, is_patch, real, torch.tensor([2] * batch))


@pytest.fixture(scope="module")
def module() -> PixelTextLM:
    torch.manual_seed(0)
    return PixelTextLM(model=TINY, bos_id=1).eval()


def test_shapes_and_heads(module):
    batch = mixed_batch()
    hidden = module.model(batch.tokens, batch.patches, batch.is_patch)
    assert hidden.shape == (2, 20, 64)
    assert module.model.lm_head(hidden).shape == (2, 20, 300)
    assert module.model.patch_head(hidden).shape == (2, 20, 768)


def test_paper_size():
    paper = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "paper.yaml"))
    config = ModelConfig(**paper, vocab_size=32000)
    with torch.device("meta"):
        model = PixelTextModel(config)
    assert round(model.num_parameters(embeddings=False) / 1e6, 1) == 317.5


def test_masks_cover_exactly_the_real_next_positions():
    batch = mixed_batch()
    patches = patch_targets(batch.is_patch, batch.real)
    tokens = token_targets(batch.tokens, batch.is_patch, batch.real, bos_id=1)
    assert patches[0].tolist() == [True] * 7 + [False] * 13  # 8 patches: 7 next-patch targets
    # tokens: bos at 8 is not a target; 9..19 are, predicted from 8..18 (row 1 stops at its padding)
    assert tokens[0].nonzero().flatten().tolist() == list(range(8, 19))
    assert tokens[1].nonzero().flatten().tolist() == list(range(8, 14))


def test_causality_later_inputs_never_change_earlier_outputs(module):
    batch = mixed_batch()
    changed = Batch(batch.tokens.clone(), batch.patches.clone(), *batch[2:])
    changed.patches[:, 5] = 255 - changed.patches[:, 5]  # a later patch
    changed.tokens[:, 12] = 7  # a later token
    with torch.no_grad():
        a = module.model(batch.tokens, batch.patches, batch.is_patch)
        b = module.model(changed.tokens, changed.patches, changed.is_patch)
    torch.testing.assert_close(a[:, :5], b[:, :5], **KERNEL)
    assert (a[:, 5:] - b[:, 5:]).abs().max() > EFFECT  # what a leak from the future would move


def test_padding_never_changes_real_positions_or_the_loss(module):
    batch = mixed_batch()
    noisy = Batch(batch.tokens.clone(), batch.patches.clone(), *batch[2:])
    noisy.tokens[1, 15:] = 123  # padding content
    noisy.patches[1, 15:] = 77
    with torch.no_grad():
        a, b = module.losses(batch), module.losses(noisy)
        single = module.model(batch.tokens[1:, :15], batch.patches[1:, :15], batch.is_patch[1:, :15])
        padded = module.model(noisy.tokens[1:], noisy.patches[1:], noisy.is_patch[1:])
        # the control: a change at a real position moves the positions after it
        other = batch.tokens[1:, :15].clone()
        other[0, 10] = 5
        moved = module.model(other, batch.patches[1:, :15], batch.is_patch[1:, :15])
    assert close(a["loss"].item(), b["loss"].item())
    torch.testing.assert_close(single, padded[:, :15], **KERNEL)  # lengths 15 and 20: kernels differ
    assert (moved[:, 10:] - single[:, 10:]).abs().max() > EFFECT


def test_normalised_mse_matches_a_hand_computed_value():
    # a patch of alternating black and white pixels: mean 0.5, variance 0.25 -> normalised +-1
    target = torch.tensor([[0, 255] * 384], dtype=torch.uint8)
    normalised = np.array([[-0.5, 0.5] * 384]) / np.sqrt(0.25 + 1e-6)
    # (float32 means of 768 terms: rel 1e-5 covers their summation order)
    assert normalized_patch_mse(torch.zeros(1, 768), target).item() == pytest.approx(
        0.25 / (0.25 + 1e-6), rel=1e-5
    )
    assert normalized_patch_mse(torch.tensor(normalised, dtype=torch.float32), target).item() < 1e-10
    # a constant patch (white, or the black end patch) normalises to all zeros
    flat = torch.full((1, 768), 255, dtype=torch.uint8)
    assert normalized_patch_mse(torch.full((1, 768), 2.0), flat).item() == pytest.approx(4.0, rel=1e-5)


def test_text_path_matches_transformers_llama_and_exports_to_it(module, tmp_path):
    from transformers import LlamaForCausalLM

    from pixeltext_train.export import export_checkpoint

    checkpoint = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, checkpoint)
    llama = LlamaForCausalLM.from_pretrained(export_checkpoint(checkpoint, tmp_path / "hf")).eval()
    tokens = torch.randint(0, 300, (3, 50), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = module.model.lm_head(module.model(tokens))
        theirs = llama(tokens).logits
    torch.testing.assert_close(ours, theirs, **KERNEL)  # two implementations: same math, other kernels
    assert ours.std() > 100 * KERNEL["atol"]  # logits large enough for the comparison to mean something
    assert not (tmp_path / "hf" / "config.json").read_text().count("patch")


def test_each_sequences_own_loss_is_its_loss_alone(module):
    batch = mixed_batch(batch=3, seed=4)
    batch.is_patch[2] = False  # a text-only row: no patch term
    batch.patches[2] = 0
    with torch.no_grad():
        together = module.example_losses(batch)
        for row in range(3):
            alone = Batch(*(t[row : row + 1] for t in batch[:5]))
            out = module.losses(alone)
            assert close(together[row].item(), out["loss"].item())  # batch of 3 vs 1: other kernels
    assert close(together[2].item(), module.losses(Batch(*(t[2:3] for t in batch[:5])))["token_loss"].item())
    assert abs(together[0].item() - together[1].item()) > EFFECT  # the rows' losses are their own


def test_activation_checkpointing_gives_the_same_loss_and_gradients(module):
    batch = mixed_batch(seed=5)
    results = []
    for recompute in (False, True):
        module.train()
        module.model.config.activation_checkpointing = recompute
        module.zero_grad()
        loss = module.losses(batch)["loss"]
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters()}))
    module.model.config.activation_checkpointing = False
    module.eval()
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, **KERNEL)
    for name, gradient in grads_a.items():
        torch.testing.assert_close(gradient, grads_b[name], **KERNEL, msg=name)
