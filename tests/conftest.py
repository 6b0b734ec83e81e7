"""Shared fixtures: real renderers over the fonts and tokenizer ``make install`` fetched."""

from __future__ import annotations

import itertools

import pytest

from pixeltext_render import Renderer
from pixeltext_render.corpora import django_catalogue, wikipedia_articles

# A real sentence, translated by people, that every language of the sample catalogues has.
SENTENCE = "Upload a valid image. The file you uploaded was either not an image or a corrupted image."


@pytest.fixture(scope="session")
def renderer() -> Renderer:
    """The default renderer: paper geometry, Noto fallback chain, SentencePiece tokens."""
    return Renderer()


@pytest.fixture(scope="session")
def byte_renderer() -> Renderer:
    return Renderer(tokenizer="bytes")


@pytest.fixture(scope="session")
def articles() -> list[dict[str, str]]:
    """A few real English Wikipedia articles (cleaned)."""
    return list(itertools.islice(wikipedia_articles(), 3))


@pytest.fixture(scope="session")
def sentences() -> dict[str, str]:
    """The same real sentence in many languages and scripts (Django's translators' work)."""
    languages = ["ar", "bn", "el", "he", "hi", "ja", "ko", "ru", "th", "zh_Hans", "ka", "hy", "km", "ml"]
    return {lang: django_catalogue(lang)[SENTENCE] for lang in languages} | {"en": SENTENCE}
