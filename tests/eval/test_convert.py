"""Converting the paper's checkpoints: a small random checkpoint in the official layout (names
and shapes of ``ErniePixelForCausalLM``), its outputs from a reference forward pass written
from the official model's definition (convolution on brightness, LayerNorm, a Llama decoder:
``transformers``' ``LlamaModel``), against the converted pixeltext model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pixeltext_render.tokenizers import load_tokenizer
from pixeltext_train.convert import ConversionError, convert
from pixeltext_train.evaluate.backbone import RenderMismatch, load_backbone

HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE, PATCH = 32, 2, 4, 2, 64, 16


def official_folder(folder, weights: str = "safetensors", **overrides) -> dict[str, torch.Tensor]:
    """Write a random ErniePixelForCausalLM checkpoint folder; return its tensors."""
    tokenizer = load_tokenizer()
    vocab, head_dim = overrides.get("vocab_size", tokenizer.vocab_size), HIDDEN // HEADS
    config = {
        "architectures": ["ErniePixelForCausalLM"],
        "model_type": "ernie_pixel",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": vocab,
        "image_size": [16, 16384],
        "patch_size": PATCH,
        "num_channels": 3,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "norm_pix_loss": True,
        **overrides,
    }
    generator = torch.Generator().manual_seed(0)

    def rand(*shape, around: float = 0.0):
        return around + torch.randn(*shape, generator=generator) * 0.05

    tensors = {
        "model.embed_patches.patch_embeddings.projection.weight": rand(HIDDEN, 3, PATCH, PATCH),
        "model.embed_patches.patch_embeddings.projection.bias": rand(HIDDEN),
        "model.embed_patches.patch_embeddings.norm.weight": rand(HIDDEN, around=1.0),
        "model.embed_patches.patch_embeddings.norm.bias": rand(HIDDEN),
        "model.embed_tokens.weight": rand(vocab, HIDDEN),
        "model.norm.weight": rand(HIDDEN, around=1.0),
        "lm_token_head.weight": rand(vocab, HIDDEN),
        "lm_pixel_head.weight": rand(PATCH * PATCH * 3, HIDDEN),
    }
    for i in range(LAYERS):
        layer = f"model.layers.{i}."
        tensors |= {
            layer + "self_attn.q_proj.weight": rand(HEADS * head_dim, HIDDEN),
            layer + "self_attn.k_proj.weight": rand(KV_HEADS * head_dim, HIDDEN),
            layer + "self_attn.v_proj.weight": rand(KV_HEADS * head_dim, HIDDEN),
            layer + "self_attn.o_proj.weight": rand(HIDDEN, HEADS * head_dim),
            layer + "mlp.gate_proj.weight": rand(INTERMEDIATE, HIDDEN),
            layer + "mlp.up_proj.weight": rand(INTERMEDIATE, HIDDEN),
            layer + "mlp.down_proj.weight": rand(HIDDEN, INTERMEDIATE),
            layer + "input_layernorm.weight": rand(HIDDEN, around=1.0),
            layer + "post_attention_layernorm.weight": rand(HIDDEN, around=1.0),
        }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    if weights == "safetensors":
        save_file(tensors, folder / "model.safetensors")
    else:
        torch.save(tensors, folder / "pytorch_model.bin")
    shutil.copyfile(tokenizer.path, folder / "tokenizer.model")
    return tensors


@torch.no_grad()
def reference_forward(tensors, image: np.ndarray | None, ids: list[int] | None):
    """The official model's outputs: hidden states, patch predictions, token logits."""
    from transformers import LlamaConfig, LlamaModel

    vocab = tensors["model.embed_tokens.weight"].shape[0]
    llama = LlamaModel(
        LlamaConfig(
            vocab_size=vocab,
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            max_position_embeddings=256,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
        )
    ).eval()
    decoder = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    llama.load_state_dict({k: v for k, v in decoder.items() if not k.startswith("embed_patches.")})
    parts = []
    if image is not None:  # brightness in [0, 1], channel x row x column, conv stride 16, LayerNorm
        brightness = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        embed = "model.embed_patches.patch_embeddings."
        x = F.conv2d(
            brightness, tensors[embed + "projection.weight"], tensors[embed + "projection.bias"], stride=16
        )
        x = x.flatten(2).transpose(1, 2)
        parts.append(F.layer_norm(x, (HIDDEN,), tensors[embed + "norm.weight"], tensors[embed + "norm.bias"]))
    if ids is not None:
        parts.append(llama.embed_tokens(torch.tensor([ids])))
    hidden = llama(inputs_embeds=torch.cat(parts, dim=1)).last_hidden_state[0]
    return hidden, hidden @ tensors["lm_pixel_head.weight"].T, hidden @ tensors["lm_token_head.weight"].T


@torch.no_grad()
def converted_forward(model, image: np.ndarray | None, ids: list[int] | None):
    patches = np.zeros((0, PATCH * PATCH * 3), np.uint8)
    if image is not None:  # pixeltext's patches: row, column, channel within each patch
        count = image.shape[1] // PATCH
        patches = image.reshape(PATCH, count, PATCH, 3).transpose(1, 0, 2, 3).reshape(count, -1)
    ids = ids or []
    length = len(patches) + len(ids)
    tokens = torch.zeros(1, length, dtype=torch.long)
    tokens[0, len(patches) :] = torch.tensor(ids, dtype=torch.long)
    pixels = torch.zeros(1, length, PATCH * PATCH * 3, dtype=torch.uint8)
    pixels[0, : len(patches)] = torch.from_numpy(np.ascontiguousarray(patches))
    is_patch = torch.zeros(1, length, dtype=torch.bool)
    is_patch[0, : len(patches)] = True
    hidden = model(tokens, pixels, is_patch)[0]
    return hidden, model.patch_head(hidden), model.lm_head(hidden)


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_the_converted_model_computes_what_the_official_one_does(tmp_path, weights):
    tensors = official_folder(tmp_path / "official", weights)
    report = convert(tmp_path / "official", tmp_path / "pixelgpt.ckpt")
    assert report["parameters"] > 0 and any("PangoCairo" in d for d in report["render_differences"])
    with pytest.raises(RenderMismatch, match="allow_render_difference"):
        load_backbone(tmp_path / "pixelgpt.ckpt")
    backbone = load_backbone(tmp_path / "pixelgpt.ckpt", allow_render_difference=True)
    model = backbone.model.eval()
    assert backbone.end_patch  # the official pre-training feeds the end patch
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (PATCH, 7 * PATCH, 3), dtype=np.uint8)  # any pixels, colour too
    tokenizer = backbone.renderer.tokenizer
    ids = [tokenizer.bos_id, *tokenizer.encode("Pixels and tokens, one decoder.").ids.tolist()]
    for case in ((image, None), (None, ids), (image, ids)):  # pixel, text, pair
        expected = reference_forward(tensors, *case)
        got = converted_forward(model, *case)
        for want, have in zip(expected, got, strict=True):
            assert have.shape == want.shape
            torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4)


def test_a_folder_that_is_not_such_a_checkpoint_is_refused_and_nothing_is_written(tmp_path):
    out = tmp_path / "out" / "model.ckpt"
    cases = {
        "no config.json": lambda f: (f / "config.json").unlink(),
        "not one this converter knows": lambda f: (f / "config.json").write_text(
            json.dumps({"architectures": ["BertModel"]})
        ),
        "no weights": lambda f: (f / "model.safetensors").unlink(),
        "no tokenizer.model": lambda f: (f / "tokenizer.model").unlink(),
        "not a safetensors file": lambda f: (f / "model.safetensors").write_bytes(b"not safetensors at all"),
        "model.safetensors is not a safetensors": lambda f: (f / "model.safetensors").write_bytes(
            (10**12).to_bytes(8, "little") + b"{}"  # a header that claims a terabyte
        ),
        "num_heads=0": lambda f: _edit_config(f, num_attention_heads=0),
        "not JSON a converter can read": lambda f: (f / "config.json").write_text("[" * 100_000),
    }
    for expected, damage in cases.items():
        folder = tmp_path / expected.replace(" ", "-")
        official_folder(folder)
        damage(folder)
        with pytest.raises(ConversionError, match=expected):
            convert(folder, out)
    folder = tmp_path / "wider"
    official_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 48, "num_attention_heads": 4}))
    with pytest.raises(ConversionError, match="shape"):
        convert(folder, out)
    official_folder(tmp_path / "vocab", vocab_size=1000)
    with pytest.raises(ConversionError, match="pieces"):
        convert(tmp_path / "vocab", out)
    assert not (tmp_path / "out").exists()


def _edit_config(folder, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def test_the_converter_command_says_what_is_wrong_in_a_sentence(tmp_path):
    official_folder(tmp_path / "official")
    _edit_config(tmp_path / "official", num_attention_heads=0)
    done = subprocess.run(
        [  # the console script the package installs
            str(Path(sys.executable).with_name("pixeltext-convert")),
            str(tmp_path / "official"),
            str(tmp_path / "out.ckpt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        done.returncode == 1 and done.stderr.startswith("cannot convert: ") and "Traceback" not in done.stderr
    )
    assert not (tmp_path / "out.ckpt").exists()


def test_pre_training_continues_from_a_converted_checkpoint(tmp_path, articles, make_config):
    from pixeltext_render import RenderConfig
    from pixeltext_render.job.pipeline import RenderJob, run
    from pixeltext_train.checkpoints import load_pretraining
    from pixeltext_train.train import train

    tensors = official_folder(tmp_path / "official")
    convert(tmp_path / "official", tmp_path / "pixelgpt.ckpt")
    hyper = load_pretraining(tmp_path / "pixelgpt.ckpt")["hyper_parameters"]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": a["id"], "text": a["text"][:1500]}) + "\n" for a in articles))
    shards = tmp_path / "shards"
    config = RenderConfig.from_dict(hyper["render"]["config"])  # the converted checkpoint's renderer
    run(
        RenderJob((str(corpus),), str(shards), config=config, tokenizer=hyper["tokenizer"]["spec"]),
        progress=False,
    )
    sizes = {"hidden_size": HIDDEN, "num_layers": LAYERS, "num_heads": HEADS, "num_kv_heads": KV_HEADS}
    sizes |= {"intermediate_size": INTERMEDIATE, "max_positions": 256}
    model = [f"model.{key}={value}" for key, value in sizes.items()]
    common = [*model, f"data.shards={shards}", "data.end_patch=true"]
    for start in ("init_from", "ckpt_path"):  # ckpt_path of a converted checkpoint: its weights
        start_from = f"{start}={tmp_path / 'pixelgpt.ckpt'}"
        config = make_config(*common, start_from, "trainer.max_steps=1", "optimizer.lr=1e-12")
        state = train(config, tmp_path / start).lightning_module.model.state_dict()
        torch.testing.assert_close(
            state["lm_head.weight"], tensors["lm_token_head.weight"], rtol=0, atol=1e-6
        )
        torch.testing.assert_close(
            state["layers.1.mlp.up_proj.weight"], tensors["model.layers.1.mlp.up_proj.weight"]
        )
    common.append(f"init_from={tmp_path / 'pixelgpt.ckpt'}")
    with pytest.raises(ValueError, match=r"model\.hidden_size: 32 in the checkpoint, 64 here"):
        train(make_config(*common, "model.hidden_size=64", "trainer.max_steps=1"), tmp_path / "other")


def test_exports_load_in_transformers_with_pixeltexts_token_ids(
    tmp_path, tiny_checkpoint, articles, sentences
):
    """``export`` writes the tokenizer: AutoTokenizer gives the checkpoint's ids, pairs in
    Llama 2's template, for the paper's SentencePiece model (a converted checkpoint) and bytes."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from pixeltext_train.export import export_checkpoint

    official_folder(tmp_path / "official")
    convert(tmp_path / "official", tmp_path / "pixelgpt.ckpt")
    texts = [a["text"][:2000] for a in articles] + list(sentences.values()) + ["  a  b\tc\n", "😀🤖"]
    for checkpoint in (tmp_path / "pixelgpt.ckpt", tiny_checkpoint):
        out = export_checkpoint(checkpoint, tmp_path / f"hf-{checkpoint.stem}")
        hf = AutoTokenizer.from_pretrained(out)
        ours = load_backbone(checkpoint, allow_render_difference=True).renderer.tokenizer
        for text in texts:
            assert hf(text, add_special_tokens=False)["input_ids"] == ours.encode(text).ids.tolist()
        a, b = ours.encode(texts[0][:50]).ids.tolist(), ours.encode(texts[1][:50]).ids.tolist()
        assert hf(texts[0][:50], texts[1][:50])["input_ids"] == [ours.bos_id, *a, ours.bos_id, *b]
        assert LlamaForCausalLM.from_pretrained(out).config.vocab_size == ours.vocab_size
