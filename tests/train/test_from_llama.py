"""``init_from=hf:FOLDER``: pre-training continues from a Hugging Face Llama text model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pixeltext_render.job.pipeline import RenderJob, run
from pixeltext_train.from_llama import read_llama_folder
from pixeltext_train.train import build, train

SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}


@pytest.fixture(scope="module")
def llama(tmp_path_factory, articles) -> Path:
    """A small random ``LlamaForCausalLM`` saved by ``save_pretrained``, with a byte-level BPE
    ``tokenizer.json`` trained on the articles (another shape than ``model=tiny``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("llama")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<s>", "</s>", "<pad>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=alphabet)
    tokenizer.train_from_iterator([a["text"] for a in articles], trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        intermediate_size=96,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        **SIZES,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama_shards(tmp_path_factory, articles, llama) -> Path:
    """The articles rendered with the folder's tokenizer."""
    corpus = tmp_path_factory.mktemp("llama-corpus") / "articles.jsonl"
    corpus.write_text("".join(json.dumps({"id": a["id"], "text": a["text"][:2000]}) + "\n" for a in articles))
    out = tmp_path_factory.mktemp("llama-shards")
    job = RenderJob((str(corpus),), str(out), tokenizer=f"hf:{llama / 'tokenizer.json'}", shard_samples=4)
    run(job, workers=1, progress=False)
    return out


def test_the_text_model_loads_exactly_and_a_pixel_text_run_trains_from_it(
    tmp_path, llama, llama_shards, make_config
):
    from transformers import LlamaForCausalLM

    start = [f"init_from=hf:{llama}", f"data.shards={llama_shards}", "experiment=pixel_text"]
    cfg = make_config(*start, "trainer.max_steps=2")
    folder = read_llama_folder(cfg.init_from)
    _, module = build(cfg, folder)
    assert module.config.hidden_size == SIZES["hidden_size"]  # the folder's shape, not model=tiny's
    assert folder.load_into(module.model) == ["embed_patches", "patch_head", "patch_stats_head"]
    reference = LlamaForCausalLM.from_pretrained(llama).eval()
    ids = torch.tensor([[0, *range(5, 40)], [0, *range(100, 135)]])  # any ids of the vocabulary
    with torch.no_grad():
        ours = module.model.lm_head(module.model.eval()(ids))
        theirs = reference(ids).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)

    # a run: it starts from the folder's weights (a learning rate too small to move them)
    trained = train(make_config(*start, "trainer.max_steps=2", "optimizer.lr=1e-12"), tmp_path / "run")
    state = trained.lightning_module.model.state_dict()
    assert trained.global_step == 2 and (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    for name in ("lm_head.weight", "model.layers.1.mlp.up_proj.weight", "model.embed_tokens.weight"):
        ours_name = name.removeprefix("model.")
        torch.testing.assert_close(state[ours_name], reference.state_dict()[name], rtol=0, atol=1e-6)


def test_a_folder_that_cannot_start_a_run_is_refused_with_a_sentence(
    tmp_path, llama, llama_shards, tiny_shards, make_config
):
    def refused(folder: Path, *overrides: str, shards: Path = llama_shards) -> str:
        cfg = make_config(f"init_from=hf:{folder}", f"data.shards={shards}", *overrides)
        with pytest.raises(ValueError) as error:
            train(cfg, tmp_path / "never")
        assert not (tmp_path / "never" / "checkpoints").exists()
        return str(error.value)

    def damaged(name: str, damage) -> Path:
        folder = tmp_path / name
        shutil.copytree(llama, folder)
        damage(folder)
        return folder

    def edit_config(folder: Path, **changes) -> None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))

    assert "not a folder" in refused(tmp_path / "nowhere")
    other = damaged("gpt2", lambda f: edit_config(f, architectures=["GPT2LMHeadModel"]))
    assert "not one this converter knows" in refused(other)
    assert "has no weights" in refused(damaged("no-weights", lambda f: (f / "model.safetensors").unlink()))
    wider = damaged("wider", lambda f: edit_config(f, hidden_size=48, head_dim=12))
    assert "do not match config.json" in refused(wider)
    no_tokenizer = damaged("no-tokenizer", lambda f: (f / "tokenizer.json").unlink())
    assert "no tokenizer.json or tokenizer.model" in refused(no_tokenizer)
    assert "--tokenizer hf:" in refused(llama, shards=tiny_shards)  # byte-token shards
    assert "max_position_embeddings (512)" in refused(llama, "model.max_positions=1024")
