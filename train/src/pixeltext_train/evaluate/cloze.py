"""``task=cloze``: predict a passage's last word (LAMBADA's task), in text, in pixels, and read.

    passages (held-out text: never a pre-training or fine-tuning document)
      built in: the 1,097 film plot summaries of the shipped Rotten Tomatoes corpus (the reviews
      are the fine-tuning task, pre-training reads Wikipedia), each cut after its first sentences
      of at least ``MIN_WORDS`` words; or LAMBADA's own file (``data_dir=``)
    -> text:  greedy tokens after the context; right if the first word they spell is the target
    -> pixel: the context's strip continued for ``WORD_PATCHES`` patches, read by OCR; right if
              the first word read is the target; readable if it is an English word at all
    -> read:  each whole passage's strip transcribed by the model (``read`` mode): its
              character error rate
    -> the OCR's own errors on the same passages drawn by the renderer (its calibration), so a
       reader sees how much of a pixel score is the OCR's

Each accuracy comes with its standard error. The context of the pixel prompt ends where its last
word does: the model's first patch begins after up to a patch of blank paper, a wider gap than
a space (the protocol's one departure from the text it was trained on).
"""

from __future__ import annotations

import bz2
import csv
import json
import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pixeltext_render.assets import asset_path
from pixeltext_train.data.sequences import strip_patches
from pixeltext_train.evaluate.backbone import Backbone
from pixeltext_train.evaluate.generation import GenerateOptions, decoded_text, patches_image, text_prompt
from pixeltext_train.evaluate.ocr import character_error_rate, read_pixels
from pixeltext_train.generate import (
    Prompt,
    for_cpu_decoding,
    generate_patches,
    generate_tokens,
    pixel_prompt,
    read_prompt,
)

MIN_WORDS = 20  # a built-in passage: its first sentences with at least this many words
WORD_PATCHES = 10  # patches drawn after a pixel prompt (160 pixels, about 25 characters)
WORD_TOKENS = 6  # tokens generated after a text prompt
BATCH = 16
WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
LAMBADA_FILES = ("lambada_test.jsonl", "lambada_test_plain_text.txt")
WORD_LISTS = ("words/american-english", "words/british-english")


@dataclass(frozen=True)
class Passage:
    context: str
    target: str  # the word that ends the passage

    @property
    def text(self) -> str:
        return f"{self.context} {self.target}"


def last_word_passage(text: str) -> Passage | None:
    """The passage split before its last word (trailing punctuation dropped), or None if it
    does not end in a word of at least two letters."""
    text = " ".join(text.split())
    words = list(WORD.finditer(text))
    if not words or len(words[-1].group()) < 2 or text[words[-1].end() :].strip(" .,;:!?\"'”’)»") != "":
        return None
    context = text[: words[-1].start()].rstrip()
    return Passage(context, words[-1].group()) if context else None


def plot_passages() -> list[Passage]:
    """The built-in passages: each film plot's first sentences, at least ``MIN_WORDS`` words,
    whose last word is all letters."""
    passages = []
    with bz2.open(asset_path("corpora/rotten_tomatoes.csv.bz2"), "rt", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["category"] != "plot":
                continue
            kept: list[str] = []
            for sentence in SENTENCE_END.split(row["text"].split("\n")[0].strip()):
                kept.append(sentence)
                if len(" ".join(kept).split()) >= MIN_WORDS:
                    break
            passage = last_word_passage(" ".join(kept)) if len(" ".join(kept).split()) >= MIN_WORDS else None
            if passage is not None and passage.target.isalpha():  # (no "don't": OCR reads quotes apart)
                passages.append(passage)
    return passages


def lambada_passages(location: str | Path) -> list[Passage]:
    """LAMBADA's test passages from a local copy: ``lambada_test.jsonl`` (one ``{"text"}`` per
    line) or ``lambada_test_plain_text.txt`` (one passage per line), or a folder holding one."""
    path = Path(location)
    if path.is_dir():
        found = [path / name for name in LAMBADA_FILES if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(f"{path} holds none of LAMBADA's files ({', '.join(LAMBADA_FILES)})")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"no LAMBADA file at {path}")
    passages = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                try:
                    line = json.loads(line)["text"]
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"{path} line {number} is not a JSON object with a text") from None
            passage = last_word_passage(line)
            if passage is not None:
                passages.append(passage)
    return passages


@cache
def english_words() -> frozenset[str]:
    """Debian's American and British English word lists, lower-cased."""
    words: set[str] = set()
    for name in WORD_LISTS:
        words.update(
            line.strip().lower() for line in asset_path(name).read_text(encoding="utf-8").splitlines()
        )
    return frozenset(words)


def first_word(text: str) -> str:
    match = WORD.search(text)
    return match.group() if match else ""


def fitted(backbone: Backbone, passage: Passage) -> tuple[Passage, np.ndarray] | None:
    """The passage with its context cut from the left (at words) until its strip, with room for
    ``WORD_PATCHES``, and its tokens fit the model; and the context's strip patches."""
    positions, context = backbone.model.config.max_positions, passage.context
    renderer, size = backbone.renderer, backbone.renderer.config.patch_size
    while context:
        strip = renderer.render(context).strips[0]
        whole = renderer.render(f"{context} {passage.target}")
        tokens = len(whole.token_ids)
        if (
            len(whole.strips) == 1
            and strip.num_text_patches + WORD_PATCHES <= positions
            and whole.strips[0].num_text_patches + 1 + tokens + 2 <= positions
        ):
            return Passage(context, passage.target), strip_patches(strip, size, strip.num_text_patches)
        words = context.split(" ")
        context = " ".join(words[max(1, len(words) // 10) :])
    return None


def standard_error(rate: float, count: int) -> float:
    return math.sqrt(rate * (1 - rate) / count) if count else float("nan")


def cloze(
    backbone: Backbone, passages: list[Passage], options: GenerateOptions, limit: int, progress: bool = True
) -> dict[str, Any]:
    """Score ``backbone`` on up to ``limit`` passages that fit it (see the module docstring)."""
    chosen = []
    for passage in passages:
        fit = fitted(backbone, passage)
        if fit is not None:
            chosen.append(fit)
        if len(chosen) == limit:
            break
    if not chosen:
        raise ValueError("no passage fits the model's positions: use a model with more, or shorter passages")
    model, tokenizer = for_cpu_decoding(backbone.model), backbone.renderer.tokenizer
    size, eos = backbone.renderer.config.patch_size, tokenizer.eos_id
    rows: list[dict[str, Any]] = []
    batches = [chosen[i : i + BATCH] for i in range(0, len(chosen), BATCH)]
    for batch in tqdm(batches, desc="cloze", unit="batch", disable=not progress):
        texts = [text_prompt(p.context, tokenizer, backbone.bos_id) for p, _ in batch]
        said = generate_tokens(model, texts, WORD_TOKENS, options.sampling, eos, options.cache)
        drawn = generate_patches(
            model, [pixel_prompt(patches) for _, patches in batch], WORD_PATCHES, options.cache
        )
        wholes = [backbone.renderer.render(p.text).strips[0] for p, _ in batch]
        shown = [strip_patches(s, size, s.num_text_patches) for s in wholes]
        reads = _read(backbone, model, shown, [len(s.token_ids) for s in wholes], options)
        for (passage, _), text, pixels, strip, read in zip(batch, said, drawn, wholes, reads, strict=True):
            rows.append(
                {
                    "context": passage.context,
                    "target": passage.target,
                    "text": first_word(decoded_text(backbone, text.tokens)),
                    "pixel": first_word(read_pixels(patches_image(pixels.patches, size))),
                    "pixel_patches": len(pixels.patches),
                    "read": decoded_text(backbone, read.tokens),
                    "truth": strip.text,
                    "ocr_passage": read_pixels(
                        np.ascontiguousarray(strip.pixels[:, : strip.num_text_patches * size])
                    ),
                    "ocr_target": first_word(read_pixels(_drawn(backbone, passage.target))),
                }
            )
    return summary(rows)


def _read(backbone: Backbone, model, patches: list[np.ndarray], lengths: list[int], options: GenerateOptions):
    """The model's transcriptions of strips (``read`` mode), with room for twice their tokens."""
    prompts: list[Prompt] = [read_prompt(p, backbone.bos_id, backbone.end_patch) for p in patches]
    room = min(2 * max(lengths) + 8, model.config.max_positions - max(len(p) for p in prompts) + 1)
    eos = backbone.renderer.tokenizer.eos_id
    return generate_tokens(model, prompts, room, options.sampling, eos, options.cache)


def _drawn(backbone: Backbone, text: str) -> np.ndarray:
    strip = backbone.renderer.render(text).strips[0]
    return np.ascontiguousarray(
        strip.pixels[:, : strip.num_text_patches * backbone.renderer.config.patch_size]
    )


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The scores of scored passages, each accuracy with its standard error."""
    count = len(rows)
    words = english_words()

    def rate(hits: int) -> dict[str, float]:
        value = hits / count
        return {"value": value, "standard_error": standard_error(value, count)}

    return {
        "passages": count,
        "text_accuracy": rate(sum(r["text"] == r["target"] for r in rows)),
        "pixel_accuracy": rate(sum(r["pixel"] == r["target"] for r in rows)),
        "readable_rate": rate(sum(bool(r["pixel"]) and r["pixel"].lower() in words for r in rows)),
        "read_cer": character_error_rate([r["read"] for r in rows], [r["truth"] for r in rows]),
        "ocr_calibration": {
            "passage_cer": character_error_rate([r["ocr_passage"] for r in rows], [r["truth"] for r in rows]),
            "target_accuracy": rate(sum(r["ocr_target"] == r["target"] for r in rows)),
        },
        "examples": rows[:10],
    }
