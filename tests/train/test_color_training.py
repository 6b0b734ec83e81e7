"""Colour modes in training and evaluation: the model's channels follow the shards', PIXAR's bce
patch loss on binary shards (refused on others), pixels generated in the right channels, and
fine-tuning an RGB checkpoint on gray inputs with its patch embedding averaged (PIXEL-GPT's)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SENTENCE

from pixeltext_render import RenderConfig
from pixeltext_render.job.corpora import default_corpus
from pixeltext_render.job.pipeline import RenderJob, run
from pixeltext_train.checkpoints import load_pretraining
from pixeltext_train.evaluate.backbone import load_backbone
from pixeltext_train.evaluate.finetune import FinetuneOptions, finetune, recolored
from pixeltext_train.evaluate.reconstruct import reconstruction_image
from pixeltext_train.evaluate.tasks import Example, Task
from pixeltext_train.generate import generate_patches, pixel_prompt, strip_patches_of
from pixeltext_train.losses import ink_bce, next_patch_errors, normalized_patch_mse
from pixeltext_train.model import ModelConfig, PixelTextModel, one_channel
from pixeltext_train.train import build, train

TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64}


@pytest.fixture(scope="module")
def colour_shards(tmp_path_factory) -> dict[str, Path]:
    """Twelve Wikipedia articles cut to 2,000 characters, byte tokens, rendered gray and binary."""
    folder = tmp_path_factory.mktemp("colour-train-corpus")
    with open(default_corpus(), encoding="utf-8") as lines:
        articles = [json.loads(line) for _, line in zip(range(12), lines, strict=False)]
    corpus = folder / "articles.jsonl"
    corpus.write_text("".join(json.dumps({"id": a["id"], "text": a["text"][:2000]}) + "\n" for a in articles))
    made = {}
    for color in ("gray", "binary"):
        made[color] = tmp_path_factory.mktemp(f"train-shards-{color}")
        job = RenderJob(
            (str(corpus),),
            str(made[color]),
            tokenizer="bytes",
            shard_samples=6,
            config=RenderConfig(color=color),
        )
        run(job, workers=1, progress=False)
    return made


@pytest.fixture(scope="module")
def runs(make_config, colour_shards, tmp_path_factory) -> dict[str, Path]:
    """A few pixel steps on binary shards with bce and on gray shards with mse: their last.ckpt."""
    made = {}
    for color, loss in (("binary", "bce"), ("gray", "mse")):
        run_dir = tmp_path_factory.mktemp(f"run-{color}")
        overrides = [f"data.shards={colour_shards[color]}", f"model.patch_loss={loss}"]
        overrides += ["model.patch_stats=false"] if loss == "bce" else []
        train(make_config("experiment=pixel", "trainer.max_steps=3", *overrides), run_dir)
        made[color] = run_dir / "checkpoints" / "last.ckpt"
    return made


def test_the_model_takes_the_shards_channels_and_trains_with_their_loss(runs):
    for color, loss in (("binary", "bce"), ("gray", "mse")):
        hyper = load_pretraining(runs[color])["hyper_parameters"]
        assert hyper["model"]["channels"] == 1 and hyper["model"]["patch_loss"] == loss
        assert hyper["render"]["config"]["color"] == color
        rows = (runs[color].parents[1] / "metrics.csv").read_text().splitlines()
        header = rows[0].split(",")
        losses = [float(v) for row in rows[1:] if (v := row.split(",")[header.index("train/patch_loss")])]
        assert losses and all(np.isfinite(losses))
        backbone = load_backbone(runs[color])
        assert backbone.model.embed_patches.projection.in_features == 16 * 16


def test_bce_is_refused_on_rgb_shards_and_with_the_stats_head(make_config):
    with pytest.raises(ValueError, match=r"model\.patch_loss=bce .* color=rgb"):
        build(make_config("model.patch_loss=bce", "model.patch_stats=false"))
    with pytest.raises(ValueError, match=r"set model\.patch_stats=false"):
        ModelConfig(vocab_size=8, max_positions=8, patch_loss="bce", patch_stats=True, **TINY)
    with pytest.raises(ValueError, match=r"model\.patch_loss must be one of"):
        ModelConfig(vocab_size=8, max_positions=8, patch_loss="l1", **TINY)


def test_mse_is_unchanged_and_bce_is_the_ink_bits_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    predicted = torch.randn(5, 768, generator=generator)
    pixels = torch.randint(0, 256, (5, 768), generator=generator, dtype=torch.uint8)
    hidden, patches = predicted[None], pixels[None]  # position i predicts patch i + 1
    where, identity = torch.tensor([[True, True, True, True, False]]), torch.nn.Identity()
    mse = next_patch_errors(hidden, identity, patches, where)
    assert torch.equal(mse, normalized_patch_mse(predicted[:4], pixels[1:]))  # the default, bit for bit
    bits = torch.where(pixels > 127, 0.0, 1.0)  # ink (1 - pixel / 255) above 0.5
    expected = F.binary_cross_entropy_with_logits(predicted, bits, reduction="none").mean(dim=-1)
    assert torch.allclose(ink_bce(predicted, pixels), expected)
    assert torch.equal(
        next_patch_errors(hidden, identity, patches, where, "bce"), ink_bce(predicted[:4], pixels[1:])
    )


def test_generation_and_reconstruction_draw_in_the_models_channels(runs):
    binary = load_backbone(runs["binary"])
    strip = binary.renderer.render(SENTENCE).strips[0]
    prompt = strip_patches_of(strip.pixels[:, : strip.num_text_patches * 16], 16, channels=1)
    assert prompt.shape[1] == 256
    drawn = generate_patches(binary.model, [pixel_prompt(prompt[:4])], 3)[0].patches
    assert drawn.shape[1] == 256 and set(np.unique(drawn)) <= {0, 255}  # bits: sigmoid > 0.5 is ink
    with pytest.raises(ValueError, match="3 channels"):
        strip_patches_of(np.zeros((16, 32, 3), np.uint8), 16, channels=1)
    for color in ("binary", "gray"):
        picture = reconstruction_image(load_backbone(runs[color]), SENTENCE, max_patches=8, scale=1)
        assert picture.mode == "L"


def test_one_channel_averages_the_patch_embedding_over_the_channels():
    torch.manual_seed(0)
    rgb = PixelTextModel(ModelConfig(vocab_size=8, max_positions=8, **TINY))
    gray = one_channel(rgb)
    assert gray.config.channels == 1 and gray.config.patch_dim == 256
    weight = rgb.embed_patches.projection.weight.detach().view(32, 256, 3)
    assert torch.equal(gray.embed_patches.projection.weight.detach(), weight.mean(dim=-1))
    assert torch.equal(gray.embed_patches.projection.bias, rgb.embed_patches.projection.bias)
    head = rgb.patch_head.weight.detach().view(256, 3, 32)
    assert torch.equal(gray.patch_head.weight.detach(), head.mean(dim=1))
    assert torch.equal(gray.embed_tokens.weight, rgb.embed_tokens.weight)
    # a grey patch seen by the averaged embedding is a third of what the RGB one made of it
    ink = torch.rand(1, 256)
    rgb_in = ink.repeat_interleave(3, dim=-1)
    bias = rgb.embed_patches.projection.bias
    assert torch.allclose(
        gray.embed_patches.projection(ink) - bias,
        (rgb.embed_patches.projection(rgb_in) - bias) / 3,
        atol=1e-6,
    )


def test_fine_tuning_an_rgb_checkpoint_on_gray_inputs(tiny_checkpoint, runs, tmp_path):
    backbone = load_backbone(tiny_checkpoint)
    assert backbone.renderer.config.color == "rgb" and backbone.model.config.channels == 3
    gray = recolored(backbone, "gray")
    assert gray.renderer.config.color == "gray" and gray.model.config.channels == 1
    weight = backbone.model.embed_patches.projection.weight.detach()
    assert torch.equal(
        gray.model.embed_patches.projection.weight.detach(), weight.view(weight.shape[0], -1, 3).mean(dim=-1)
    )
    assert backbone.model.config.channels == 3  # the backbone itself is untouched
    assert recolored(backbone, None) is backbone and recolored(backbone, "rgb") is backbone
    options = FinetuneOptions(
        modality="pixel", max_positions=32, batch_size=8, warmup_steps=1, max_steps=4, eval_every=2, workers=0
    )
    examples = [Example(text, None, label) for label, text in enumerate(["a cat and a dog", "one two three"])]
    task = Task(
        "two", False, ["animals", "numbers"], ["accuracy"], examples * 16, {"validation": examples * 4}
    )
    results = finetune(
        task, backbone, FinetuneOptions(**{**options.__dict__, "color": "gray"}), tmp_path, progress=False
    )
    assert results["color"] == "gray" and results["steps"] == 4
    with pytest.raises(ValueError, match=r"finetune\.color=rgb"):
        recolored(load_backbone(runs["gray"]), "rgb")
    with pytest.raises(ValueError, match=r"finetune\.color must be"):
        FinetuneOptions(color="grey")
