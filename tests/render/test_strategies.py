"""Rendering strategies (``RenderConfig.strategy``): every guarantee of the renderer in each,
the property that defines each, and continuous exactly as before strategies existed."""

from __future__ import annotations

import hashlib
import json
from itertools import pairwise

import numpy as np
import pytest
from PIL import Image

from pixeltext_render import RenderConfig, Renderer
from pixeltext_render.bidi import has_rtl
from pixeltext_render.cli import main
from pixeltext_render.config import STRATEGIES, fingerprint
from pixeltext_render.reference import render_line_uncached
from pixeltext_render.text import grapheme_starts, normalize_text

P = 16
STRUCTURED = [s for s in STRATEGIES if s != "continuous"]
SPECIAL = {
    "emoji": "Emoji 😀👍🏽🇩🇪 and a family 👨‍👩‍👧‍👦 under a flag 🏳️‍🌈",
    "marks": "e\u0301 a\u0308 o\u0302\u0323 " * 4 + "a" + "\u0301" * 30,
    "mixed": "English then العربية 123 then עברית and back (مرحبا [שלום] world) 42.",
    "spaces": "  one\ntwo\tthree   four\n\n five ",
}
# Recorded before strategies existed (config only, so no font or engine enters it): a
# continuous config describes itself as it did, and old fingerprints still match.
DEFAULT_CONFIG_FINGERPRINT = "0e8a37b80e8db7db"
# Strips of GOLDEN (below) from the renderer before strategies existed, with these fonts and engines.
GOLDEN_RENDER_FINGERPRINT, GOLDEN_DIGEST = "cffa9ecfebe62a52", "3b5a1f382ea5702b"
GOLDEN = [
    "The quick brown fox jumps over the lazy dog.",
    "مرحبا بالعالم ١٢٣",
    "שלום עולם (42) and English",
    "中文文本测试，这是一个句子。",
    "ภาษาไทย ทดสอบ",
    "हिन्दी पाठ और বাংলা",
    "Emoji 😀👍🏽🇩🇪 👨‍👩‍👧‍👦",
    "e\u0301 a\u0308 o\u0302\u0323",
    "one\ntwo\tthree  four",
]


@pytest.fixture(scope="module")
def renderers() -> dict[str, Renderer]:
    """One per strategy, with byte tokens: a token per byte shows where each character went."""
    return {s: Renderer(RenderConfig(strategy=s), tokenizer="bytes") for s in STRATEGIES}


@pytest.fixture(scope="module")
def texts(sentences) -> dict[str, str]:
    scripts = ["en", "ar", "he", "zh_Hans", "th", "hi", "ja", "ko", "km", "bn"]
    return {language: sentences[language] for language in scripts} | SPECIAL


def units(renderer: Renderer, text: str):
    """``(shaped, placed)`` of ``text`` laid out as the first strip lays it out."""
    shaped = renderer._shape(text)
    return shaped, renderer._place(shaped, 0, len(text), renderer.layout.margin_left)


def ink_graphemes(renderer: Renderer, text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each grapheme cluster that is drawn with ink (not whitespace)."""
    shown = text.translate(renderer.display)
    return [(a, b) for a, b in pairwise(grapheme_starts(text)) if not shown[a:b].isspace()]


def strip_digest(strips) -> str:
    digest = hashlib.sha256()
    for s in strips:
        for a in (s.image, s.token_ids, s.token_patches, np.array([s.num_text_patches, s.missing_glyphs])):
            digest.update(str(a.shape).encode() + np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()[:16]


def test_strategy_is_checked_and_recorded_only_when_not_continuous(renderers):
    with pytest.raises(ValueError, match="strategy must be one of"):
        RenderConfig(strategy="zigzag")
    with pytest.raises(ValueError, match="even"):
        RenderConfig(strategy="mono", patch_size=15)
    assert "strategy" not in RenderConfig().to_dict()
    assert fingerprint(RenderConfig().to_dict()) == DEFAULT_CONFIG_FINGERPRINT
    assert RenderConfig.from_dict(RenderConfig().to_dict()) == RenderConfig(strategy="continuous")
    for strategy in STRUCTURED:
        config = RenderConfig(strategy=strategy)
        assert config.to_dict()["strategy"] == strategy and RenderConfig.from_dict(config.to_dict()) == config
    assert len({r.fingerprint for r in renderers.values()}) == len(STRATEGIES)


def test_continuous_is_byte_identical_to_before_strategies():
    renderer = Renderer(RenderConfig(max_patches=64), tokenizer="bytes")
    if renderer.fingerprint != GOLDEN_RENDER_FINGERPRINT:
        pytest.skip("other fonts or engines than those GOLDEN was recorded with")
    strips = [s for text in [*GOLDEN, " ".join(GOLDEN) * 4] for s in renderer.render(text).strips]
    strips.append(renderer.render_pair(GOLDEN[0], GOLDEN[1]))
    assert len(strips) == 15 and strip_digest(strips) == GOLDEN_DIGEST


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_guarantee_holds_in_every_strategy(renderers, texts, strategy):
    renderer = renderers[strategy]
    for name, text in texts.items():
        document = renderer.render(text)
        assert document.text == normalize_text(text).text
        assert "".join(s.text for s in document.strips) == document.text  # nothing dropped
        assert np.array_equal(document.token_ids, renderer.tokenizer.encode(document.text).ids)
        for strip in document.strips:
            n, patches = strip.num_text_patches, strip.token_patches
            assert strip.missing_glyphs == 0 and not strip.overflow, name
            assert (patches[:, 0] >= 0).all() and (patches[:, 1] <= n - 1).all(), name
            assert (patches[:, 0] <= patches[:, 1]).all(), name
            if not has_rtl(strip.text):
                assert (np.diff(patches, axis=0) >= 0).all(), name  # left to right, token by token
            assert (strip.pixels[:, n * P : (n + 1) * P] == 0).all()  # the end patch
            assert (strip.pixels[:, (n + 1) * P :] == 255).all()
            assert (strip.pixels[:, : n * P] < 128).any(axis=2).sum() > 3 * len(text.split()), name


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_long_text_splits_between_graphemes_and_tokens_in_every_strategy(articles, texts, strategy):
    renderer = Renderer(RenderConfig(strategy=strategy, max_patches=48))
    text = articles[0]["text"][:2500] + " ".join(texts.values())
    document = renderer.render(text)
    assert len(document.strips) > 10
    assert "".join(s.text for s in document.strips) == document.text
    assert np.array_equal(document.token_ids, renderer.tokenizer.encode(document.text).ids)
    starts = set(grapheme_starts(document.text))
    for strip in document.strips:
        assert strip.start in starts and not strip.overflow  # no glyph split between strips
        assert 0 < strip.num_text_patches <= 47  # (and the tokens concatenate: none is split)


@pytest.mark.parametrize("strategy", STRUCTURED)
def test_every_unit_is_in_whole_cells_of_its_grid(renderers, texts, strategy):
    renderer = renderers[strategy]
    cell = P // 2 if strategy == "mono" else P
    assert renderer.layout.cell == cell and renderer.layout.margin_left == 0
    for name, text in texts.items():
        shaped, placed = units(renderer, text)
        widths, origins = shaped.columns.width, placed.origins
        assert not (origins % cell).any() and not (widths % cell).any(), name
        lengths = np.diff(shaped.bounds)
        owner = np.repeat(np.arange(len(lengths)), lengths)  # each character's unit
        assert (placed.char_left >= origins[owner]).all(), name
        assert (placed.char_right <= (origins + widths)[owner]).all(), name
        drawn = [a for a, _ in ink_graphemes(renderer, text)]
        assert (widths[owner[drawn]] >= cell).all(), name  # a unit with ink has a cell of its own
        cells = {(o, o + w) for o, w in zip(origins.tolist(), widths.tolist(), strict=True) if w}
        assert len(cells) == np.count_nonzero(widths), name  # and no two units share one


@pytest.mark.parametrize("strategy", STRUCTURED)
def test_each_unit_is_drawn_as_the_slow_path_draws_its_characters(renderers, texts, strategy):
    """Nothing dropped or added: the strip is its units' characters, each unit drawn alone by
    the uncached reference and put at its place on the grid."""
    renderer = renderers[strategy]
    reference = Renderer(RenderConfig(margin_left=P), tokenizer="bytes")  # (ink left of the pen too)
    width = renderer.config.width
    for name in ["en", "hi", "zh_Hans", "th", "km", "marks", "he", "ar"]:
        text = texts[name]
        strip = renderer.render(text).strips[0]
        shaped, placed = units(renderer, text)
        expected = np.full((P, width + P), 255, np.uint8)  # column c is the strip's c - P
        for u, (a, b) in enumerate(pairwise(shaped.bounds)):
            if text[a:b].strip():
                content, rtl = text[a:b].rstrip(), bool(shaped.levels[u] & 1)
                alone = render_line_uncached(reference, content)[0][..., 0]
                x = placed.origins[u]  # right to left: against the unit's right edge
                x += shaped.columns.width[u] - renderer.shaper.piece(content, rtl).width if rtl else 0
                drawn = expected[:, x : x + width]
                np.minimum(drawn, alone[:, : drawn.shape[1]], out=drawn)
        n = strip.num_text_patches
        assert np.array_equal(strip.image[:, : n * P], expected[:, P : P + n * P]), name


@pytest.mark.parametrize("strategy", STRUCTURED)
def test_a_line_break_is_drawn_and_spaces_are_not(renderers, strategy):
    strip = renderers[strategy].render("one\ntwo three").strips[0]
    dark = lambda patches: (strip.pixels[:, patches[0] * P : (patches[1] + 1) * P] < 128).any()  # noqa: E731
    assert dark(strip.token_patches[3])  # the pilcrow
    if strategy != "mono":  # (where a space is a character in a cell)
        assert strip.token_patches[7, 0] == strip.token_patches[8, 0]  # the space: where "three" begins


@pytest.mark.parametrize("strategy", ["words", "bigrams"])
def test_the_same_word_renders_to_the_same_patches_wherever_it_falls(renderers, strategy):
    renderer = renderers[strategy]
    word = "quantization"
    seen = set()
    for prefix in ["a", "Some longer prefix of words", "x y z", "Mm, well"]:
        text = f"{prefix} {word} tail"
        strip = renderer.render(text).strips[0]
        at = text.index(word)  # ASCII: one byte token per character
        first, last = strip.token_patches[at, 0], strip.token_patches[at + len(word) - 1, 1]
        seen.add(strip.pixels[:, first * P : (last + 1) * P].tobytes())
        assert units(renderer, text)[1].char_left[at] == first * P  # from a patch boundary
    assert len(seen) == 1


def test_bigrams_put_at_most_two_characters_of_one_word_in_a_patch(renderers, texts):
    renderer = renderers["bigrams"]
    for name, text in texts.items():
        _, placed = units(renderer, text)
        words = np.cumsum([c.isspace() for c in text])  # which word each character is in
        held: dict[int, list[int]] = {}
        for a, _ in ink_graphemes(renderer, text):
            left, right = placed.char_left[a], max(placed.char_right[a], placed.char_left[a] + 1)
            for patch in range(left // P, (right - 1) // P + 1):
                held.setdefault(patch, []).append(a)
        for patch, starts in held.items():
            assert len(starts) <= 2 and len({words[a] for a in starts}) == 1, (name, patch)


def test_bigrams_give_a_pair_wider_than_a_patch_a_patch_each(renderers):
    renderer = renderers["bigrams"]
    shaped, _ = units(renderer, "中文 ok 👨‍👩‍👧‍👦")
    pieces = [shaped.text[a:b] for a, b in pairwise(shaped.bounds)]
    assert pieces == ["中", "文 ", "ok ", "👨‍👩‍👧‍👦"]  # (two ideographs are 26 pixels wide)
    assert shaped.columns.width.tolist() == [P, P, P, 2 * P]  # the family emoji is wider than a patch


def test_mono_puts_each_character_in_cells_of_half_a_patch(renderers, texts):
    renderer = renderers["mono"]
    for name, text in texts.items():
        shaped, placed = units(renderer, text)
        assert shaped.bounds.tolist() == grapheme_starts(text), name  # one grapheme per unit
        left = placed.char_left[shaped.bounds[:-1]]
        assert not (left % (P // 2)).any() or has_rtl(text), name  # from a cell's edge (left to right)
    text = "xb b  b "  # b in cells 1, 3 and 6: the right half of a patch and the left
    strip = renderer.render(text).strips[0]
    _, placed = units(renderer, text)
    assert placed.char_left[[1, 3, 6]].tolist() == [8, 24, 48]
    assert len({strip.pixels[:, x : x + P].tobytes() for x in (8, 24, 48)}) == 1  # the same b
    assert renderer.layout.piece("中", False).width == P  # wider than a cell: two cells


@pytest.mark.parametrize("strategy", STRUCTURED)
def test_right_to_left_text_reads_right_to_left_unit_by_unit(renderers, sentences, strategy):
    strip = renderers[strategy].render(sentences["he"]).strips[0]
    starts = strip.token_patches[:, 0]
    assert starts[0] == strip.num_text_patches - 1 and (np.diff(starts) <= 0).all()


@pytest.mark.parametrize("strategy", STRUCTURED)
def test_strategies_are_deterministic_whatever_the_cache(renderers, texts, strategy):
    cold = Renderer(RenderConfig(strategy=strategy, cache_size=0), tokenizer="bytes")
    text = " ".join(texts.values())
    first, again, uncached = (r.render(text).strips for r in (renderers[strategy], renderers[strategy], cold))
    assert strip_digest(first) == strip_digest(again) == strip_digest(uncached)
    assert renderers[strategy].fingerprint == cold.fingerprint


@pytest.mark.parametrize("strategy", STRUCTURED)
def test_pairs_start_the_second_text_on_the_patch_after_the_separator(renderers, strategy):
    strip = renderers[strategy].render_pair("A man plays a guitar.", "Someone makes music.")
    sep = strip.separator_patch
    assert (strip.pixels[:, sep * P : (sep + 1) * P] == 0).all()
    assert strip.token_patches[strip.pair_tokens_start, 0] == sep + 1
    assert (strip.token_patches[: strip.pair_tokens_start, 1] < sep).all()


def test_preview_draws_each_strategy(tmp_path, capsys):
    out, config = tmp_path / "strategies.png", tmp_path / "render.yaml"
    assert (
        main(["preview", "--text", "Same words, two ways.", *("--strategy", "words"), "--out", str(out)]) == 0
    )
    single = Image.open(out).height
    arguments = [f"--strategy={s}" for s in STRATEGIES]
    assert main(["preview", "--text", "Same words, four ways.", *arguments, "--out", str(out)]) == 0
    assert Image.open(out).height > 3 * single
    config.write_text("strategy: mono\n")
    assert main(["preview", "--text", "Mono from a config.", "--config", str(config), "--out", str(out)]) == 0
    summaries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["strips"] for s in summaries] == [1, 1, 1]
