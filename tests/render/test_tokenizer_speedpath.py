"""The SentencePiece tokenizer's fast path (word by word, cached, spans counted in characters)
and the renderer's token-to-patch reduction give exactly what the plain computations give:
SentencePiece on the whole text, spans from its pieces' bytes, patches character by character."""

from __future__ import annotations

import io
import itertools
import json
from bisect import bisect_left, bisect_right
from pathlib import Path

import numpy as np
import pytest
import sentencepiece
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixeltext_render import Renderer, load_tokenizer
from pixeltext_render import tokenizers as tokenizers_module
from pixeltext_render.job.corpora import default_corpus, django_catalogue, django_languages
from pixeltext_render.renderer import _Placed
from pixeltext_render.text import normalize_text
from pixeltext_render.tokenizers import SentencePieceTokenizer

SPACE = "\u2581"


class WholeText:
    """The reference: SentencePiece's ids of the whole text, spans from its pieces' bytes (a
    partial character counting whole), in plain Python; SentencePiece's own offsets where the
    pieces do not add up to the text (unknown pieces, a literal "\u2581")."""

    def __init__(self, tokenizer: SentencePieceTokenizer):
        self.sp = sp = tokenizer._sp
        self.bytes = [
            1 if sp.is_byte(i) else 0 if sp.is_control(i) or sp.is_unknown(i) else len(piece.encode())
            for i, piece in enumerate(sp.id_to_piece(i).replace(SPACE, " ") for i in range(sp.vocab_size()))
        ]
        self.prefix = sum(self.bytes[i] for i in sp.encode("a")) - 1  # the dummy prefix's bytes

    def __call__(self, text: str) -> tuple[list[int], list[list[int]]]:
        ids = self.sp.encode(text)
        starts = list(
            itertools.accumulate((len(c.encode("utf-8", "surrogatepass")) for c in text), initial=0)
        )
        if sum(self.bytes[i] for i in ids) == starts[-1] + self.prefix:
            ends = list(itertools.accumulate((self.bytes[i] for i in ids), initial=-self.prefix))[1:]
            byte_spans = [
                (max(end - self.bytes[i], 0), max(end, 0)) for i, end in zip(ids, ends, strict=True)
            ]
        else:
            pieces = self.sp.encode(text, out_type="proto").pieces
            ids, byte_spans = [p.id for p in pieces], [(p.begin, p.end) for p in pieces]
        spans = []
        for begin, end in byte_spans:
            first = bisect_right(starts, begin) - 1
            spans.append([first, max(bisect_left(starts, end), first)])
        return ids, spans


def assert_same(tokenizer: SentencePieceTokenizer, reference: WholeText, text: str) -> None:
    encoding = tokenizer.encode(text)
    ids, spans = reference(text)
    assert tokenizer._ids(text).tolist() == reference.sp.encode(text), text  # (a literal "\u2581" too)
    assert encoding.ids.dtype == np.int32 and encoding.spans.dtype == np.int32
    assert encoding.ids.tolist() == ids, text
    assert encoding.spans.reshape(-1, 2).tolist() == spans, text


@pytest.fixture(scope="module")
def default_model() -> tuple[SentencePieceTokenizer, WholeText]:
    tokenizer = load_tokenizer("sentencepiece")
    assert tokenizer._plain  # the default model takes the fast path
    return tokenizer, WholeText(tokenizer)


@pytest.fixture(scope="module")
def words(sentences) -> list[str]:
    """Words of every script the suite renders (Arabic, Hebrew, CJK, Thai, Devanagari, ...)."""
    return sorted({word for sentence in sentences.values() for word in sentence.split()})


AWKWARD = [
    " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "\u00a0", "\u3000", "\u2009", "\u200b", "\u200d", "\u200e",
    "\u202e", "\u0301", "\u0308", "e\u0301", "\u00e9", "A\u030a", "\u00c5", "\u1100\u1161", "\uac00",
    "\ufb01", "\u2460", "\uff26", "\u0133", "\u00a8", "\u2126", SPACE, SPACE * 2, " " + SPACE, SPACE + " ",
    "<s>", "</s>", "<unk>", "<0x41>", "\ue000", "\U0010fffd", "\U00020000", "\U0002a6d6", "\uffff",
    "\U0001f600", "\U0001f3fd", "\U0001f469\u200d\U0001f4bb", "\U0001f1eb\U0001f1f7", "\ufe0f",
    "\U000e0001", "\ufffd", "\x00", "\x07", "\x7f", "1,024", "2025", "a", "Z", ".", "(", ")", "'",
    "\u0627\u0644", "\u05e9\u05dc", "\u0e01\u0e32", "\u0915\u094d\u0937", "\u4e2d\u6587", "\u3042",
]  # fmt: skip
# Any text but lone surrogates (which SentencePiece cannot take at all, before as now)
ANY_CHARACTERS = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)


def texts(words: list[str]) -> st.SearchStrategy[str]:
    """Texts of the covered scripts, awkward characters, whitespace runs and anything else."""
    runs = st.integers(1, 40).map(lambda n: " " * n)
    fragment = st.one_of(st.sampled_from(words), st.sampled_from(AWKWARD), runs, ANY_CHARACTERS)
    return st.lists(fragment, max_size=80).map("".join)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_ids_and_spans_are_the_whole_text_ones_on_any_text(default_model, words, data):
    tokenizer, reference = default_model
    text = data.draw(texts(words))
    assert_same(tokenizer, reference, text)  # words new or cached
    assert_same(tokenizer, reference, text)  # every word cached now
    assert_same(tokenizer, reference, normalize_text(text).text)  # what the renderer passes


def test_ids_and_spans_are_the_whole_text_ones_on_real_corpora(default_model):
    tokenizer, reference = default_model
    with open(default_corpus(), encoding="utf-8") as lines:
        articles = [json.loads(line)["text"] for line in itertools.islice(lines, 8)]
    messages = [
        message
        for language in django_languages()
        for message in django_catalogue(language).values()
        if isinstance(message, str)
    ]
    for text in [*articles, *messages, "\n".join(messages)]:
        assert_same(tokenizer, reference, normalize_text(text).text)


def test_a_full_word_cache_is_emptied_with_the_same_ids(default_model, words, monkeypatch):
    tokenizer, reference = default_model
    monkeypatch.setattr(tokenizers_module, "_CACHED_WORDS", 16)
    monkeypatch.setattr(tokenizers_module, "_CACHED_CHARS", 200)
    for start in range(0, len(words), 20):
        sentence = words[start : start + 20]
        assert_same(tokenizer, reference, " ".join(sentence))
        assert len(tokenizer._word_ids) <= max(16, len(sentence))


def train_model(folder: Path, **options) -> SentencePieceTokenizer:
    """A small BPE trained here on Django's messages (a few scripts, indented, spaced)."""
    messages = [
        message
        for language in ("ru", "ja", "ar", "hi", "el")
        for message in django_catalogue(language).values()
        if isinstance(message, str) and message
    ]
    lines = [*messages, *("    " + m for m in messages[::7]), *("a  b   c " + m for m in messages[::11])]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=1000,
        character_coverage=0.98,  # some characters left out of the vocabulary
        minloglevel=2,
        **({"byte_fallback": True} | options),
    )
    path = folder / "model.model"
    path.write_bytes(model.getvalue())
    return SentencePieceTokenizer(path, f"sentencepiece:{path}")


PLAIN = {"normalization_rule_name": "identity", "remove_extra_whitespaces": False}


@pytest.mark.parametrize(
    ("options", "plain"),
    [
        (PLAIN | {"allow_whitespace_only_pieces": True}, True),
        (PLAIN | {"user_defined_symbols": ["%(name)s", "<br>", "\u2581\u2581x"]}, True),
        (PLAIN | {"byte_fallback": False}, True),  # unknown pieces: SentencePiece's offsets
        (PLAIN | {"split_by_whitespace": False}, False),  # pieces across spaces
        (PLAIN | {"user_defined_symbols": ["x\u2581"]}, False),  # one across a space
        (PLAIN | {"normalization_rule_name": "nmt_nfkc"}, False),
        ({"normalization_rule_name": "identity"}, False),  # extra whitespace removed
        (PLAIN | {"add_dummy_prefix": False}, False),
        (PLAIN | {"treat_whitespace_as_suffix": True}, False),
    ],
)
def test_other_models_take_the_fast_path_only_where_it_is_exact(tmp_path, words, options, plain):
    tokenizer = train_model(tmp_path, **options)
    assert tokenizer._plain == plain
    reference = WholeText(tokenizer)

    @settings(max_examples=60, deadline=None)
    @given(texts(words))
    def check(text):
        assert_same(tokenizer, reference, text)
        assert_same(tokenizer, reference, text)

    check()


def token_patches_one_by_one(placed: _Placed, spans: np.ndarray, used: int, patch: int) -> list[list[int]]:
    """Each token's first and last patch from its characters, one character at a time."""
    left, right, count = placed.char_left.tolist(), placed.char_right.tolist(), len(placed.char_left)
    patches = []
    for begin, end in spans.tolist():
        begin = min(max(begin, 0), count)
        chars = range(begin, min(max(end, begin), count)) or [min(begin, count - 1)]
        low = min(left[c] // patch for c in chars)
        high = max((max(right[c], left[c] + 1) - 1) // patch for c in chars)
        patches.append([min(max(low, 0), max(used - 1, 0)), min(max(high, 0), max(used - 1, 0))])
    return patches


@settings(max_examples=300, deadline=None)
@given(
    lefts=st.lists(st.integers(-40, 2000), min_size=1, max_size=60),
    widths=st.lists(st.integers(-3, 40), min_size=60, max_size=60),
    spans=st.lists(st.tuples(st.integers(-3, 65), st.integers(-3, 65)), max_size=40),
    used=st.integers(0, 140),
)
def test_token_patches_are_those_of_their_characters(byte_renderer, lefts, widths, spans, used):
    """Any extents (overlapping, out of order as bidi places them, of no width) and spans
    (empty, reversed, past either end)."""
    left = np.array(lefts, np.int64)
    right = left + np.array(widths[: len(lefts)], np.int64)
    placed = _Placed(np.zeros(0, np.int64), None, left, right, 0, 0)
    spans = np.array(spans, np.int32).reshape(-1, 2)
    patches = byte_renderer._token_patches(placed, spans, used)
    assert patches.dtype == np.int32 and patches.shape == (len(spans), 2)
    patch = byte_renderer.config.patch_size
    assert patches.tolist() == token_patches_one_by_one(placed, spans, used, patch)


def test_renderer_tokens_are_the_tokenizers(renderer, articles, sentences):
    """The strips' tokens concatenate to the whole text's, for the default tokenizer."""
    reference = WholeText(renderer.tokenizer)
    for text in [articles[0]["text"], *sentences.values()]:
        document = renderer.render(text)
        assert document.token_ids.tolist() == reference(document.text)[0]


def test_a_fresh_renderer_tokenises_as_a_warm_one(articles):
    text = articles[1]["text"]
    warm = Renderer()
    warm.render(articles[2]["text"])
    first, second = warm.render(text), Renderer().render(text)
    for a, b in zip(first.strips, second.strips, strict=True):
        assert np.array_equal(a.token_ids, b.token_ids) and np.array_equal(a.token_patches, b.token_patches)
