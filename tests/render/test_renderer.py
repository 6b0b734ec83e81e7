"""The renderer: geometry, end patch, splitting, scripts, colour, determinism, edge cases."""

from __future__ import annotations

import threading
from itertools import pairwise

import numpy as np
import pytest

from pixeltext_render import RenderConfig, Renderer
from pixeltext_render import renderer as renderer_module
from pixeltext_render.fonts import FontError
from pixeltext_render.reference import render_line_uncached
from pixeltext_render.text import normalize_text

P = 16


def ink_columns(image: np.ndarray) -> np.ndarray:
    """Columns with any non-white pixel."""
    pixels = image if image.ndim == 3 else image[..., None]
    return np.flatnonzero((pixels < 255).any(axis=(0, 2)))


def test_geometry_default_is_the_papers(renderer):
    strip = renderer.render("Hello, world.").strips[0]
    assert strip.pixels.shape == (16, 16 * 1024, 3)
    assert strip.pixels.dtype == np.uint8
    assert renderer.config.width == 16384


def test_geometry_follows_the_config():
    small = Renderer(RenderConfig(patch_size=8, max_patches=64, font_size=7.0), tokenizer="bytes")
    strips = small.render("Patch geometry comes from the config. " * 6).strips
    assert len(strips) > 1
    for strip in strips:
        assert strip.pixels.shape == (8, 8 * 64, 3)
        assert 0 < strip.num_text_patches <= 63


def test_end_patch_is_black_after_the_text_and_the_rest_white(renderer):
    strip = renderer.render("The end-of-text patch follows the last text patch.").strips[0]
    n = strip.num_text_patches
    image = strip.pixels
    assert n > 0
    assert (image[:, n * P : (n + 1) * P] == 0).all()
    assert (image[:, (n + 1) * P :] == 255).all()
    ink = ink_columns(image[:, : n * P])
    assert len(ink) and ink[-1] < n * P
    # The end patch is the first patch boundary at least margin_right pixels after the ink.
    assert ink[-1] + 1 + renderer.config.margin_right > (n - 1) * P


def test_text_starts_after_the_left_margin(renderer):
    strip = renderer.render("Margin").strips[0]
    assert ink_columns(strip.image)[0] >= renderer.config.margin_left - 1


def test_render_is_deterministic_and_independent_of_cache_state(renderer, articles):
    text = articles[0]["text"][:6000]
    uncached = Renderer(RenderConfig(cache_size=0))
    first, again, cold = renderer.render(text), renderer.render(text), uncached.render(text)
    assert renderer.fingerprint == uncached.fingerprint
    for a, b, c in zip(first.strips, again.strips, cold.strips, strict=True):
        assert a.image.tobytes() == b.image.tobytes() == c.image.tobytes()
        assert np.array_equal(a.token_patches, c.token_patches)


def test_threads_sharing_a_cold_renderer_draw_what_one_thread_does(articles, sentences):
    """A Dask worker's threads share its process's renderer: glyphs first met at the same time
    in several threads are still each rasterised right."""
    texts = [a["text"][:3000] for a in articles] + list(sentences.values())

    def images(renderer: Renderer, text: str) -> list[bytes]:
        return [strip.image.tobytes() for strip in renderer.render(text).strips]

    alone = [images(Renderer(RenderConfig(cache_size=50)), text) for text in texts]
    shared = Renderer(RenderConfig(cache_size=50))  # (small: pieces are made again and again)
    drawn: dict[int, list[bytes]] = {}

    def draw(first: int) -> None:
        for index in range(first, 3 * len(texts), 4):
            drawn[index] = images(shared, texts[index % len(texts)])

    threads = [threading.Thread(target=draw, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(drawn) == 3 * len(texts)
    assert all(images == alone[index % len(texts)] for index, images in drawn.items())


@pytest.mark.parametrize("engine", ["freetype", "harfbuzz", "unicodedata", "regex", "zlib-ng"])
def test_fingerprint_changes_with_every_engine_version(monkeypatch, engine):
    """Whatever decides the pixels or the stored bytes is in the fingerprint."""
    before = Renderer(tokenizer="bytes").fingerprint
    versions = renderer_module.engine_versions()
    assert engine in versions
    monkeypatch.setattr(renderer_module, "engine_versions", lambda: {**versions, engine: "0.0-other"})
    assert Renderer(tokenizer="bytes").fingerprint != before


def test_fingerprint_changes_with_the_config(renderer):
    other = Renderer(RenderConfig(font_size=12.0))
    assert other.fingerprint != renderer.fingerprint
    described = renderer.describe()
    assert all(len(font["sha256"]) == 64 for font in described["fonts"])
    assert described["config"]["patch_size"] == 16


def test_long_document_splits_with_nothing_lost(renderer, articles):
    text = articles[0]["text"]
    document = renderer.render(text)
    assert len(document.strips) > 3
    assert "".join(s.text for s in document.strips) == normalize_text(text).text == document.text
    capacity = renderer.config.max_patches - 1
    for previous, strip in pairwise(document.strips):
        assert strip.start == previous.start + len(previous.text)
        # cut at a word: the new strip starts with the space that precedes a word
        assert strip.text[0].isspace() and not previous.text[-1].isspace()
        assert previous.num_text_patches > 0.9 * capacity  # strips are filled greedily
    assert all(0 < s.num_text_patches <= capacity for s in document.strips)
    ids = renderer.tokenizer.encode(document.text).ids
    assert np.array_equal(document.token_ids, ids)


def test_text_without_spaces_splits_between_graphemes(renderer, sentences):
    text = sentences["zh_Hans"] * 40  # ~1300 ideographs, no spaces
    document = renderer.render(text)
    assert len(document.strips) > 1
    assert "".join(s.text for s in document.strips) == text
    assert np.array_equal(document.token_ids, renderer.tokenizer.encode(text).ids)


@pytest.mark.parametrize(
    "language", ["ar", "hi", "th", "zh_Hans", "ru", "el", "he", "ja", "ko", "bn", "ka", "hy", "km", "ml"]
)
def test_scripts_render_with_no_missing_glyphs(renderer, sentences, language):
    strip = renderer.render(sentences[language]).strips[0]
    assert strip.missing_glyphs == 0
    dark = (strip.pixels[:, : strip.num_text_patches * P] < 128).any(axis=2).sum()
    assert dark > 5 * len(sentences[language])  # real ink, not a few stray pixels


def test_each_script_comes_from_its_own_font(renderer):
    chain = renderer.chain
    for char, font in [
        ("ب", "NotoSansArabic"),
        ("क", "NotoSansDevanagari"),
        ("ก", "NotoSansThai"),
        ("中", "NotoSansCJK"),
        ("Ж", "NotoSans["),
        ("Ω", "NotoSans["),
    ]:
        assert chain.fonts[chain.covering_font(ord(char))].path.name.startswith(font)


def test_colour_emoji_keep_their_colour(renderer):
    strip = renderer.render("Party 🎉 time 😀").strips[0]
    assert not strip.is_grey
    pixels = strip.pixels[:, : strip.num_text_patches * P].astype(int)
    chroma = pixels.max(axis=2) - pixels.min(axis=2)
    assert (chroma > 80).sum() > 20
    assert strip.missing_glyphs == 0


def test_plain_text_is_stored_grey_and_read_as_rgb(renderer):
    strip = renderer.render("Only black on white.").strips[0]
    assert strip.is_grey and strip.image.ndim == 2
    assert strip.pixels.shape[-1] == 3 and np.array_equal(strip.pixels[..., 0], strip.image)


def test_a_character_no_font_has_is_drawn_as_a_box_and_counted(renderer):
    without = renderer.render("a b").strips[0]
    strip = renderer.render("a \u0378 b \U0010fffd").strips[0]  # unassigned and private use
    assert strip.missing_glyphs == 2
    assert without.missing_glyphs == 0
    assert len(ink_columns(strip.image)) > len(ink_columns(without.image))


def test_fast_path_matches_the_uncached_slow_path(byte_renderer, articles, sentences):
    texts = [s.text for s in byte_renderer.render(articles[1]["text"]).strips[:4]]
    texts += [*sentences.values(), "Emoji 😀👍🏽🇩🇪 mixed العربية 123 and हिन्दी"]
    for text in texts:
        strip = byte_renderer.render(text).strips[0]
        slow, right = render_line_uncached(byte_renderer, text)
        cut = strip.num_text_patches * P
        assert np.array_equal(strip.pixels[:, :cut], slow[:, :cut]), text[:40]
        assert -(-(right + byte_renderer.config.margin_right) // P) == strip.num_text_patches


def test_right_to_left_text_runs_right_to_left(byte_renderer, sentences):
    strip = byte_renderer.render(sentences["he"]).strips[0]
    starts = strip.token_patches[:, 0]
    assert starts[0] == strip.num_text_patches - 1  # the first letter is at the right end
    assert (np.diff(starts) <= 0).all()


def test_line_breaks_and_tabs_follow_the_display_rule(renderer):
    document = renderer.render("one\ntwo\tthree")
    strip = document.strips[0]
    assert strip.text == "one\ntwo\tthree"  # the text keeps them; the drawing shows them
    spaced = renderer.render("one two three").strips[0]
    pilcrow = renderer.render("one\u00b6two\u2003three").strips[0]
    assert np.array_equal(strip.image, pilcrow.image)
    assert not np.array_equal(strip.image, spaced.image)


@pytest.mark.parametrize(
    ("text", "normalised", "changed"),
    [
        ("", "", 0),
        ("   ", "   ", 0),
        ("a\r\nb\rc", "a\nb\nc", 2),
        ("bell\x07 nul\x00 del\x7f", "bell nul del", 3),
        ("lone \ud800 surrogate", "lone \ufffd surrogate", 1),
    ],
)
def test_edge_cases_give_defined_results(renderer, text, normalised, changed):
    document = renderer.render(text)
    assert document.text == normalised and document.changed_chars == changed
    assert len(document.strips) >= 1
    assert "".join(s.text for s in document.strips) == normalised
    strip = document.strips[0]
    assert (strip.num_text_patches == 0) == (normalised == "")
    assert (strip.pixels[:, strip.num_text_patches * P : (strip.num_text_patches + 1) * P] == 0).all()


def test_a_megabyte_of_text_renders_completely(byte_renderer, articles):
    text = "\n\n".join(a["text"] for a in articles)
    text = (text * (1_000_000 // len(text) + 1))[:1_000_000]
    document = byte_renderer.render(text)
    assert "".join(s.text for s in document.strips) == text
    assert len(document.token_ids) == len(text.encode())
    assert not any(s.overflow for s in document.strips)


def test_a_word_longer_than_a_strip_is_split_between_graphemes():
    narrow = Renderer(RenderConfig(max_patches=16), tokenizer="bytes")
    word = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 3 + "é" * 20
    document = narrow.render(word)
    assert len(document.strips) > 1 and "".join(s.text for s in document.strips) == word
    assert not any(s.overflow for s in document.strips)
    assert not any(s.text.startswith("\u0301") for s in document.strips)


@pytest.mark.parametrize(
    "text",
    [
        "\U0001f600\u200d" * 1000,  # one grapheme (a ZWJ chain) far wider than a strip
        "a" + "\u0301" * 400,  # one letter under hundreds of combining marks
        "x" + "\U0001f600\u200d" * 300 + " tail",
    ],
)
@pytest.mark.parametrize("max_patches", [32, 1024])
def test_units_wider_than_a_strip_end_and_keep_every_character(text, max_patches):
    renderer = Renderer(RenderConfig(max_patches=max_patches), tokenizer="bytes")
    document = renderer.render(text)
    normalised = normalize_text(text).text
    assert "".join(s.text for s in document.strips) == normalised
    assert len(document.token_ids) == len(normalised.encode())
    for strip in document.strips:
        assert strip.pixels.shape == (P, max_patches * P, 3)
        assert strip.num_text_patches <= max_patches - 1


def test_pairs_render_with_a_black_separator(renderer):
    strip = renderer.render_pair("A man is playing a guitar.", "Someone plays music.")
    sep, end = strip.separator_patch, strip.num_text_patches
    assert 0 < sep < end and not strip.truncated
    assert (strip.pixels[:, sep * P : (sep + 1) * P] == 0).all()
    assert (strip.pixels[:, end * P : (end + 1) * P] == 0).all()
    first, second = (
        strip.token_patches[: strip.pair_tokens_start],
        strip.token_patches[strip.pair_tokens_start :],
    )
    assert (first[:, 1] < sep).all() and (second[:, 0] > sep).all()
    assert len(ink_columns(strip.image[:, (sep + 1) * P : end * P]))  # the second text is drawn


def test_pairs_too_long_drop_whole_tokens_of_the_longer_text(renderer, articles):
    long_text = articles[0]["text"][:8000]
    strip = renderer.render_pair("Short premise.", long_text)
    assert strip.truncated and strip.text == "Short premise."
    assert long_text.startswith(strip.text_pair) and len(strip.text_pair) < len(long_text)
    assert strip.num_text_patches <= renderer.config.max_patches - 1
    tokens = renderer.tokenizer.encode(strip.text_pair).ids
    assert np.array_equal(strip.token_ids[strip.pair_tokens_start :], tokens)


def test_bad_configs_and_fonts_give_clear_errors():
    with pytest.raises(ValueError, match="patch_size"):
        RenderConfig(patch_size=2)
    with pytest.raises(ValueError, match="unknown RenderConfig fields"):
        RenderConfig.from_dict({"patch_sise": 16})
    with pytest.raises(FontError, match="not found"):
        Renderer(RenderConfig(fonts=("NoSuchFont-Regular.ttf",)), tokenizer="bytes")


def test_config_round_trips_through_json():
    config = RenderConfig(font_size=12.0, text_color=[10, 20, 30])
    assert RenderConfig.from_dict(config.to_dict()) == config


def test_long_pairs_are_trimmed_to_whole_tokens_of_both_texts(renderer, articles):
    """Trimming a long text to fit does not depend on how long it is (no quadratic cliff)."""
    text = "\n".join(a["text"] for a in articles)
    long_text = (text * (200_000 // len(text) + 1))[:200_000]
    strip = renderer.render_pair(long_text, long_text)
    assert strip.truncated and strip.text and strip.text_pair
    assert long_text.startswith(strip.text) and long_text.startswith(strip.text_pair)
    assert strip.num_text_patches <= renderer.config.max_patches - 1
