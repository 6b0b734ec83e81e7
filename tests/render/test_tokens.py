"""Tokens aligned to patches, for the three kinds of tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers, trainers

from pixeltext_render import Renderer, load_tokenizer
from pixeltext_render.job.corpora import django_catalogue


@pytest.fixture(scope="module")
def hf_tokenizer_file(tmp_path_factory) -> str:
    """A real Hugging Face byte-level BPE, trained here on Django's English messages."""
    english = [key for key in django_catalogue("de") if isinstance(key, str) and key]
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(english, trainer)
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    tokenizer.save(str(path))
    return f"hf:{path}"


@pytest.fixture(scope="module", params=["bytes", "sentencepiece", "hf"])
def tokenized_renderer(request, hf_tokenizer_file) -> Renderer:
    spec = hf_tokenizer_file if request.param == "hf" else request.param
    return Renderer(tokenizer=spec)


def check_alignment(strip, left_to_right: bool = True) -> None:
    patches = strip.token_patches
    assert patches.shape == (len(strip.token_ids), 2)
    assert (patches[:, 0] >= 0).all() and (patches[:, 1] <= strip.num_text_patches - 1).all()
    assert (patches[:, 0] <= patches[:, 1]).all()
    if left_to_right:
        assert (np.diff(patches[:, 0]) >= 0).all() and (np.diff(patches[:, 1]) >= 0).all()


def test_alignment_invariants_on_a_long_document(tokenized_renderer, articles):
    document = tokenized_renderer.render(articles[2]["text"])
    assert len(document.strips) > 1
    for strip in document.strips:
        check_alignment(strip)
    assert tokenized_renderer.tokenizer.decode(document.token_ids) == document.text


def test_alignment_invariants_in_other_scripts(tokenized_renderer, sentences):
    for language in ["ru", "el", "hi", "th", "zh_Hans", "ja", "ko", "bn"]:
        strip = tokenized_renderer.render(sentences[language]).strips[0]
        check_alignment(strip)
        assert tokenized_renderer.tokenizer.decode(strip.token_ids) == sentences[language]


def test_each_token_covers_the_patches_of_its_characters(byte_renderer):
    text = "aaaaaaaaaa WWWWWWWWWW iiiiiiiiii"
    strip = byte_renderer.render(text).strips[0]
    wide = strip.token_patches[11:21]  # the W's, one byte token each
    narrow = strip.token_patches[22:32]
    span = lambda p: p[-1, 1] - p[0, 0] + 1  # noqa: E731
    assert span(wide) > span(narrow)  # ten W's take more patches than ten i's
    assert strip.token_patches[0, 0] == 0 and strip.token_patches[-1, 1] == strip.num_text_patches - 1


def test_multibyte_characters_keep_their_bytes_together(byte_renderer, articles):
    text = ("naïve café 😀 " * 400) + articles[0]["text"][:2000]
    document = byte_renderer.render(text)
    for strip in document.strips:
        assert len(strip.text.encode()) == len(strip.token_ids)  # no character split between strips
    assert bytes(document.token_ids.astype(np.uint8)).decode() == text


def test_sentencepiece_is_the_32k_llama2_design(renderer):
    tokenizer = renderer.tokenizer
    assert tokenizer.vocab_size == 32000 and tokenizer.bos_id == 1 and tokenizer.eos_id == 2
    encoding = tokenizer.encode("Hello world\n😀")
    assert tokenizer.decode(encoding.ids) == "Hello world\n😀"
    assert encoding.spans.tolist()[:2] == [[0, 5], [5, 11]]


def test_unknown_tokenizer_spec_is_refused():
    with pytest.raises(ValueError, match="unknown tokenizer"):
        load_tokenizer("wordpiece")
    with pytest.raises(FileNotFoundError):
        load_tokenizer("sentencepiece:/nonexistent/tokenizer.model")
