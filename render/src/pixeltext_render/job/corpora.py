"""The project's sample corpora, read from the assets ``make install`` fetches.

- English Wikipedia: 106 articles of a real dump (inside the gensim wheel), wiki markup
  removed with mwparserfromhell; the default corpus of the render job.
- Django's message catalogues: the same ~1,500 interface messages translated by people into
  two dozen languages and scripts; the multilingual corpus of tests and benchmarks.
"""

from __future__ import annotations

import bz2
import gettext
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import mwparserfromhell

from pixeltext_render.assets import ASSETS, asset_path, assets_dir

WIKIPEDIA_SAMPLE = "corpora/enwiki-sample.xml.bz2"
DEFAULT_CORPUS = "corpora/enwiki-sample.jsonl"
_DJANGO_PREFIX = "corpora/django-messages/"
_DROPPED_TAGS = {"ref", "table", "gallery", "math", "timeline", "references", "score", "syntaxhighlight"}
_DROPPED_LINKS = ("file:", "image:", "category:", "media:")
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_wikitext(markup: str) -> str:
    """Plain article text: templates, references, tables, files and categories removed."""
    code = mwparserfromhell.parse(markup)
    kept = mwparserfromhell.wikicode.Wikicode([node for node in code.nodes if _is_prose(node)])
    text = kept.strip_code(normalize=True, collapse=True)
    lines = (line.strip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _is_prose(node) -> bool:
    nodes = mwparserfromhell.nodes
    if isinstance(node, nodes.Template):
        return False
    if isinstance(node, nodes.Tag):
        return str(node.tag).lower() not in _DROPPED_TAGS
    if isinstance(node, nodes.Wikilink):
        return not str(node.title).strip().lower().startswith(_DROPPED_LINKS)
    return True


def wikipedia_articles(path: Path | None = None) -> Iterator[dict[str, str]]:
    """``{"id", "title", "text"}`` for each article (redirects and other namespaces skipped)."""
    path = path or asset_path(WIKIPEDIA_SAMPLE)
    with bz2.open(path) as stream:
        for _, element in ET.iterparse(stream):
            if not element.tag.endswith("}page"):
                continue
            namespace = element.tag[: -len("page")]
            markup = element.findtext(f"{namespace}revision/{namespace}text") or ""
            if element.findtext(f"{namespace}ns") == "0" and not markup.lower().startswith("#redirect"):
                yield {
                    "id": element.findtext(f"{namespace}id") or "",
                    "title": element.findtext(f"{namespace}title") or "",
                    "text": clean_wikitext(markup),
                }
            element.clear()


def default_corpus() -> Path:
    """The render job's default corpus: the cleaned Wikipedia sample as JSON Lines
    (``{"id", "title", "text"}`` per article), made from the fetched dump the first time."""
    path = assets_dir() / DEFAULT_CORPUS
    if not path.is_file():
        partial = path.with_name(path.name + ".partial")
        with open(partial, "w", encoding="utf-8") as out:
            for article in wikipedia_articles():
                out.write(json.dumps(article, ensure_ascii=False) + "\n")
        partial.replace(path)
    return path


def django_languages() -> list[str]:
    return sorted(name[len(_DJANGO_PREFIX) : -3] for name in ASSETS if name.startswith(_DJANGO_PREFIX))


def django_catalogue(language: str) -> dict[str | tuple[str, int], str]:
    """One language's catalogue: source message (or (message, plural form)) -> translation."""
    with open(asset_path(f"{_DJANGO_PREFIX}{language}.mo"), "rb") as handle:
        return dict(gettext.GNUTranslations(handle)._catalog)  # the parsed .mo file


def django_messages(language: str) -> list[str]:
    """The translated messages of one language, in order of their source text."""
    catalogue = django_catalogue(language)
    messages = []
    for key in sorted(catalogue, key=str):
        source = key[0] if isinstance(key, tuple) else key
        text = catalogue[key]
        if source and text and text != source:
            messages.append(text)
    return messages
