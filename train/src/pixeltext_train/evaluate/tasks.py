"""Language-understanding tasks: GLUE and XNLI in their official layouts, any labelled file
(``task=custom``), and the built-in Rotten Tomatoes task.

A task is its examples per split (``train`` and one or more scored splits, the first of which
guides early stopping), the kind of output (classes or a score) and the metrics it reports.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import weakref
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixeltext_render.assets import asset_path

csv.field_size_limit(sys.maxsize)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredImage:
    """A strip as the paper's rendered datasets hold it (``evaluate.rendered``), kept encoded as
    the row gives it (a few kilobytes) and decoded only when shown, so that tasks stay small."""

    data: str  # base64 of the image file's bytes
    text_patches: int  # patches before the black end patch (the row's ``num_patches``)


@dataclass(frozen=True)
class Example:
    text: str
    pair: str | None
    label: int | float
    image: StoredImage | None = None  # the pixels to show instead of rendering ``text`` and ``pair``


@dataclass
class Task:
    name: str
    regression: bool
    labels: list[str]  # class names (index = class); empty for regression
    metrics: list[str]  # the first is the one early stopping watches
    train: Sequence[Example]  # a list, or an ExampleStore (on disk) for files of any size
    evaluations: dict[str, Sequence[Example]]  # scored splits; the first guides early stopping
    skipped: int = 0  # rows without a usable text or label
    skip_reasons: dict[str, int] = field(default_factory=dict)  # why, and how many rows each
    averages: dict[str, list[str]] = field(default_factory=dict)  # e.g. XNLI: mean over languages

    @property
    def num_outputs(self) -> int:
        return 1 if self.regression else len(self.labels)

    @property
    def pairs(self) -> bool:
        return any(example.pair is not None for example in self.train)


# -- examples on disk -----------------------------------------------------------------------
# XNLI's translate-train-all setting trains on 5.9 M pairs and MNLI on 393 k: held as Python
# strings they take gigabytes. An ExampleStore writes each example to a temporary file as it is
# read (one JSON array per line, ASCII) and keeps only where each one ends (8 bytes per
# example). Reads are positional (os.pread), so forked DataLoader workers read the inherited
# file at the same time; a spawned worker reopens it by path. The file is removed when the
# store that made it is collected.


def _remove(descriptor: int, path: str) -> None:
    os.close(descriptor)
    os.unlink(path)


class ExampleStore(Sequence[Example]):
    """A task's examples in a temporary file, read back one at a time (see above)."""

    def __init__(self, examples: Iterable[Example] = ()):
        self._descriptor, self.path = tempfile.mkstemp(prefix="pixeltext-examples-", suffix=".jsonl")
        self._ends = array("q")
        self._size = 0
        self._cleanup = weakref.finalize(self, _remove, self._descriptor, self.path)
        self.extend(examples)

    def append(self, example: Example) -> None:
        fields = [example.text, example.pair, example.label]
        if example.image is not None:
            fields += [example.image.data, example.image.text_patches]
        line = json.dumps(fields) + "\n"  # ASCII: any text
        data = line.encode("ascii")
        os.pwrite(self._descriptor, data, self._size)
        self._size += len(data)
        self._ends.append(self._size)

    def extend(self, examples: Iterable[Example]) -> None:
        for example in examples:
            self.append(example)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"example {index} of {len(self)}")
        start = self._ends[index - 1] if index else 0
        text, pair, label, *image = json.loads(os.pread(self._descriptor, self._ends[index] - start, start))
        return Example(text, pair, label, StoredImage(*image) if image else None)

    def __getstate__(self) -> dict[str, Any]:  # a spawned worker: the path, not the descriptor
        return {"path": self.path, "_ends": self._ends, "_size": self._size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._descriptor = os.open(self.path, os.O_RDONLY)
        self._cleanup = weakref.finalize(self, os.close, self._descriptor)  # the maker removes it


class TaskError(ValueError):
    """A task cannot be loaded as asked; the message says what is missing."""


# -- built-in: Rotten Tomatoes -------------------------------------------------------------


def rotten_tomatoes() -> Task:
    """Reviews labelled fresh (1) or rotten (0), plots dropped; split 80/10/10 by a hash of the
    movie, so that no movie's reviews are on both sides of a split."""
    splits: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    with bz2.open(asset_path("corpora/rotten_tomatoes.csv.bz2"), "rt", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["category"] == "plot":
                continue
            bucket = int(hashlib.sha256(row["movie_name"].encode()).hexdigest(), 16) % 10
            split = "test" if bucket == 0 else "validation" if bucket == 1 else "train"
            splits[split].append(Example(row["text"], None, int(row["category"] == "fresh")))
    return Task(
        "rotten_tomatoes",
        False,
        ["rotten", "fresh"],
        ["accuracy", "f1"],
        splits["train"],
        {"validation": splits["validation"], "test": splits["test"]},
    )


# -- GLUE ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlueSpec:
    text: str | int
    pair: str | int | None
    label: str | int
    labels: list[str]  # empty: regression
    metrics: list[str]
    dev: tuple[str, ...] = ("dev",)
    header: bool = True


GLUE = {
    "cola": GlueSpec(3, None, 1, ["0", "1"], ["mcc", "accuracy"], header=False),
    "sst2": GlueSpec("sentence", None, "label", ["0", "1"], ["accuracy"]),
    "mrpc": GlueSpec("#1 String", "#2 String", "Quality", ["0", "1"], ["f1", "accuracy"]),
    "qqp": GlueSpec("question1", "question2", "is_duplicate", ["0", "1"], ["f1", "accuracy"]),
    "stsb": GlueSpec("sentence1", "sentence2", "score", [], ["pearson", "spearman"]),
    "mnli": GlueSpec(
        "sentence1",
        "sentence2",
        "gold_label",
        ["contradiction", "entailment", "neutral"],
        ["accuracy"],
        dev=("dev_matched", "dev_mismatched"),
    ),
    "qnli": GlueSpec("question", "sentence", "label", ["entailment", "not_entailment"], ["accuracy"]),
    "rte": GlueSpec("sentence1", "sentence2", "label", ["entailment", "not_entailment"], ["accuracy"]),
    "wnli": GlueSpec("sentence1", "sentence2", "label", ["0", "1"], ["accuracy"]),
}
GLUE_FOLDERS = {
    "cola": "CoLA",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "qqp": "QQP",
    "stsb": "STS-B",
    "mnli": "MNLI",
    "qnli": "QNLI",
    "rte": "RTE",
    "wnli": "WNLI",
}


def _read_tsv(path: Path, header: bool) -> Iterator:
    """GLUE's TSV files, row by row: tab separated, no quoting (quotes are part of the text)."""
    with open(path, encoding="utf-8", newline="") as handle:
        yield from (csv.DictReader if header else csv.reader)(handle, delimiter="\t", quoting=csv.QUOTE_NONE)


def _glue_split(path: Path, spec: GlueSpec) -> tuple[ExampleStore, int]:
    examples, skipped = ExampleStore(), 0
    for row in _read_tsv(path, spec.header):
        try:
            text, label = row[spec.text], row[spec.label]
            pair = row[spec.pair] if spec.pair is not None else None
            value: int | float = float(label) if not spec.labels else spec.labels.index(label.strip())
        except (KeyError, IndexError, ValueError, TypeError, AttributeError):
            skipped += 1  # GLUE has a few malformed rows (QQP: short rows read as None) and unlabelled ones
            continue
        examples.append(Example(text, pair, value))
    return examples, skipped


def glue(name: str, folder: str | Path) -> Task:
    """A GLUE task from its official folder (``train.tsv``, ``dev.tsv``; MNLI's two dev sets).

    GLUE's test sets are unlabelled, so the dev sets are what is scored."""
    spec, folder = GLUE[name], Path(folder)
    if (folder / GLUE_FOLDERS[name]).is_dir():
        folder = folder / GLUE_FOLDERS[name]
    needed = ["train", *spec.dev]
    missing = [f"{split}.tsv" for split in needed if not (folder / f"{split}.tsv").is_file()]
    if missing:
        raise TaskError(
            f"GLUE {name}: {folder} lacks {', '.join(missing)} (pass data_dir=<GLUE>/{GLUE_FOLDERS[name]})"
        )
    train, skipped = _glue_split(folder / "train.tsv", spec)
    evaluations = {}
    for split in spec.dev:
        evaluations[split.replace("dev", "validation")], more = _glue_split(folder / f"{split}.tsv", spec)
        skipped += more
    reasons = {"malformed or unlabelled row": skipped} if skipped else {}
    return Task(name, not spec.labels, spec.labels, spec.metrics, train, evaluations, skipped, reasons)


# -- XNLI ----------------------------------------------------------------------------------

XNLI_LANGUAGES = ["en", "ar", "bg", "de", "el", "fr", "hi", "ru", "es", "sw", "th", "tr", "ur", "vi", "zh"]
NLI_LABELS = ["entailment", "neutral", "contradiction"]
_LABEL_ALIASES = {"contradictory": "contradiction", "0": "entailment", "1": "neutral", "2": "contradiction"}


def _nli_label(value) -> int:
    name = _LABEL_ALIASES.get(str(value).strip(), str(value).strip())
    return NLI_LABELS.index(name)


def _find(folder: Path, name: str) -> Path | None:
    direct = folder / name
    return direct if direct.is_file() else next(iter(sorted(folder.rglob(name))), None)


def _nli_rows(path: Path, reasons: Counter) -> Iterator[dict]:
    """A file's rows as dicts, one at a time; a JSON line that does not parse is counted in
    ``reasons``."""
    if path.suffix != ".jsonl":
        yield from _read_tsv(path, header=True)
        return
    with open(path, encoding="utf-8") as handle:
        yield from json_objects(handle, reasons)


def json_objects(lines: Iterable[str | bytes], reasons: Counter) -> Iterator[dict]:
    """The JSON Lines lines that are objects; the others (not JSON, not UTF-8, nested past what a
    parser follows, not an object) are counted in ``reasons``. Blank lines are no rows."""
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
            reasons["line that is not JSON"] += 1
            continue
        if isinstance(row, dict):
            yield row
        else:
            reasons["line that is not a JSON object"] += 1


def _nli_examples(rows: Iterable[dict], fields: tuple[str, str, str], reasons: Counter) -> Iterator[Example]:
    """Examples of the rows with both texts and a known label; the others are counted in
    ``reasons`` (XNLI's files have a few short or unlabelled rows, as GLUE's do)."""
    premise, hypothesis, label = fields
    for row in rows:
        texts = row.get(premise), row.get(hypothesis)
        if not all(isinstance(text, str) and text.strip() for text in texts):
            reasons["missing premise or hypothesis"] += 1
            continue
        try:
            yield Example(texts[0], texts[1], _nli_label(row.get(label)))
        except ValueError:
            reasons["missing or unknown label"] += 1


def xnli_languages(setting: str, languages: list[str] | None) -> tuple[list[str], list[str]]:
    """``(languages trained on, languages scored)`` in an XNLI setting (scored: all 15 by default)."""
    if setting not in ("english", "translate-train-all"):
        raise TaskError(f"xnli_setting must be english or translate-train-all, got {setting!r}")
    languages = languages or XNLI_LANGUAGES
    return (["en"] if setting == "english" else languages), languages


def xnli(folder: str | Path, setting: str = "english", languages: list[str] | None = None) -> Task:
    """XNLI: train on English MultiNLI or on its machine translations into all 15 languages
    (``setting=translate-train-all``), score each language's dev and test sets.

    Official TSV layout: ``xnli.dev.tsv`` and ``xnli.test.tsv`` (XNLI-1.0) and
    ``multinli.train.<lang>.tsv`` (XNLI-MT-1.0), anywhere under ``folder``. JSON Lines layout:
    ``<split>-<lang>.jsonl`` (split train, validation, test) with premise, hypothesis, label."""
    folder = Path(folder)
    train_languages, languages = xnli_languages(setting, languages)
    train = ExampleStore()
    evaluations: dict[str, list[Example]] = {}
    reasons: Counter = Counter()
    official, jsonl = ("premise", "hypo", "label"), ("premise", "hypothesis", "label")
    if _find(folder, "xnli.dev.tsv"):
        for language in train_languages:
            path = _find(folder, f"multinli.train.{language}.tsv")
            if path is None:
                raise TaskError(f"XNLI: no multinli.train.{language}.tsv under {folder} (XNLI-MT-1.0)")
            train.extend(_nli_examples(_nli_rows(path, reasons), official, reasons))
        for split, name in (("validation", "xnli.dev.tsv"), ("test", "xnli.test.tsv")):
            path = _find(folder, name)
            rows = list(_read_tsv(path, header=True)) if path else []
            for language in languages:
                chosen = [r for r in rows if r.get("language") == language]
                fields = ("sentence1", "sentence2", "gold_label")
                evaluations[f"{split}/{language}"] = list(_nli_examples(chosen, fields, reasons))
    else:
        for language in train_languages:
            path = _find(folder, f"train-{language}.jsonl")
            if path is None:
                raise TaskError(f"XNLI: {folder} has neither xnli.dev.tsv nor train-{language}.jsonl")
            train.extend(_nli_examples(_nli_rows(path, reasons), jsonl, reasons))
        for split in ("validation", "test"):
            for language in languages:
                path = _find(folder, f"{split}-{language}.jsonl")
                if path:
                    rows = _nli_rows(path, reasons)
                    evaluations[f"{split}/{language}"] = list(_nli_examples(rows, jsonl, reasons))
    return xnli_task(train, evaluations, reasons)


def xnli_task(train: Sequence[Example], evaluations: dict[str, Sequence[Example]], reasons: Counter) -> Task:
    """XNLI from its examples: ``evaluations`` named ``validation/<lang>`` and ``test/<lang>``,
    the English dev set first (it guides early stopping), averaged over languages per split (what
    XNLI reports); rows skipped are counted in ``reasons``."""
    evaluations = {name: rows for name, rows in evaluations.items() if rows}
    ordered = dict(sorted(evaluations.items(), key=lambda item: (item[0] != "validation/en", item[0])))
    averages = {
        split: [name for name in ordered if name.startswith(f"{split}/")] for split in ("validation", "test")
    }
    return Task(
        "xnli",
        False,
        NLI_LABELS,
        ["accuracy"],
        train,
        ordered,
        skipped=sum(reasons.values()),
        skip_reasons=dict(reasons),
        averages={k: v for k, v in averages.items() if v},
    )


# -- any labelled file ---------------------------------------------------------------------

_EXTRA = "\x00extra"  # where csv.DictReader puts the cells of a row longer than its header
_SHOWN_SKIPS = 5  # rows named in the log per file; the rest are only counted


def _records(path: Path) -> Iterator[tuple[int, dict | str]]:
    """``(row number, record)`` for each row of a table file, or ``(row number, why it cannot be
    read)``: CSV, TSV (tab separated, no quoting: quotes are text, as in GLUE), JSON Lines, Parquet.
    A row that is not valid UTF-8 is a row that cannot be read; a file that is not a table of
    text at all, or whose header names a column twice, is an error naming it."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow
        import pyarrow.parquet as pq

        try:
            _refuse_repeated_columns(path, pq.read_schema(path).names)
            table = pq.read_table(path)
        except pyarrow.ArrowException as error:
            raise TaskError(f"custom task: {path} is not a Parquet file ({error})") from None
        yield from enumerate(table.to_pylist(), start=1)
        return
    if suffix not in (".jsonl", ".json", ".csv", ".tsv"):
        raise TaskError(f"{path}: use a .csv, .tsv, .jsonl or .parquet file")
    with open(path, "rb") as handle:
        if b"\x00" in handle.read(2**16):
            raise TaskError(
                f"custom task: {path} is not a text file (it holds NUL bytes: a spreadsheet, an "
                f"archive or a binary renamed {suffix}?); save it as {suffix[1:].upper()} text"
            )
    # Undecodable bytes are kept as lone surrogates (surrogateescape) and their row skipped.
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        if suffix in (".jsonl", ".json"):
            for number, line in enumerate(handle, start=1):
                if _undecodable(line):
                    yield number, NOT_UTF8
                elif line.strip():
                    yield number, _json_record(line)
            return
        tabs = suffix == ".tsv"
        reader = csv.DictReader(
            handle,
            delimiter="\t" if tabs else ",",
            quoting=csv.QUOTE_NONE if tabs else csv.QUOTE_MINIMAL,
            restkey=_EXTRA,
        )
        _refuse_repeated_columns(path, reader.fieldnames or [])
        width = len(reader.fieldnames or [])
        for record in reader:
            cells = width + len(record.get(_EXTRA, ())) - sum(v is None for v in record.values())
            if any(isinstance(v, str) and _undecodable(v) for v in record.values()):
                yield reader.line_num, NOT_UTF8
            elif cells != width:
                yield reader.line_num, f"{cells} cells, the header has {width}"
            else:
                yield reader.line_num, record


NOT_UTF8 = "not valid UTF-8"


def _undecodable(text: str) -> bool:
    return any("\udc80" <= character <= "\udcff" for character in text)


def _refuse_repeated_columns(path: Path, columns: Sequence[str]) -> None:
    repeated = sorted(name for name, count in Counter(columns).items() if count > 1)
    if repeated:
        raise TaskError(
            f"custom task: {path} names the column {', '.join(map(repr, repeated))} more than once; "
            "rename the copies so that each column has its own name"
        )


def _json_record(line: str) -> dict | str:
    """One JSON Lines row as an object, or why it is not one (a key given twice included:
    JSON readers keep the last copy, which hides which was meant)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict:
        keys = [key for key, _ in pairs]
        repeated = next((key for key in keys if keys.count(key) > 1), None)
        if repeated is not None:
            raise ValueError(f"the key {repeated!r} given twice")
        return dict(pairs)

    try:
        record = json.loads(line, object_pairs_hook=unique)
    except json.JSONDecodeError as error:
        return f"invalid JSON ({error.msg})"
    except ValueError as error:
        return str(error)
    return record if isinstance(record, dict) else f"a JSON {type(record).__name__}, not an object"


def _label(value: object) -> int | float | str | None:
    """A label made comparable: None when missing (null, empty, NaN), a number when it reads as
    one (so 1, "1" and 1.0 are one class), else the stripped text."""
    if value is None or isinstance(value, bool):
        return None if value is None else str(value).lower()
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text or None
    if math.isnan(number):
        return None
    return int(number) if number.is_integer() else number


def _not_a_value(record: dict, columns: Iterable[str | None]) -> str | None:
    """Why a row's text or label cell is unusable as one: a list or an object (JSON, Parquet)."""
    for column in columns:
        value = record.get(column) if column else None
        if isinstance(value, list | tuple | dict):
            return f"{column} is {'an object' if isinstance(value, dict) else 'a list'}, not a value"
    return None


def _text(value: object) -> str | None:
    return None if value is None or not str(value).strip() else str(value)


@dataclass
class _Row:
    file: str
    row: int
    text: str
    pair: str | None
    label: int | float | str


def _read_rows(
    path: Path, split: str, text: str, text_pair: str | None, label: str, reasons: Counter[str]
) -> list[_Row]:
    """The usable rows of one file; the others are counted in ``reasons`` (the first few logged)."""
    if not path.is_file():
        raise TaskError(f"custom task: {split}={path} is not a file")
    rows, columns, shown = [], set(), 0
    for number, record in _records(path):
        problem = record if isinstance(record, str) else None
        if problem is None:
            columns |= set(record)
            problem = _not_a_value(record, (text, text_pair, label))
        if problem is None:
            first, second, value = (
                _text(record.get(text)),
                _text(record.get(text_pair)),
                _label(record.get(label)),
            )
            problem = "no label" if value is None else "no text" if first is None else None
            if problem is None and text_pair and second is None:
                problem = "no second text"
        if problem:
            reasons[problem] += 1
            if shown < _SHOWN_SKIPS:
                log.warning("custom task: skipping %s row %d: %s", path, number, problem)
                shown += 1
            continue
        rows.append(_Row(str(path), number, first, second if text_pair else None, value))
    missing = [c for c in (text, label, text_pair) if c and columns and c not in columns]
    if missing:
        raise TaskError(f"custom task: {path} has no column {missing}; it has {sorted(columns)}")
    if not rows:
        raise TaskError(
            f"custom task: {path} has no usable row (skipped: {dict(reasons) or 'none, it is empty'})"
        )
    return rows


def custom(
    train: str, validation: str, text: str, label: str, text_pair: str | None = None, test: str | None = None
) -> Task:
    """Classification or regression from any CSV, TSV, JSON Lines or Parquet files. Labels
    that are all numbers and not all whole make a regression; anything else, classes (those of
    ``train``). Rows without a usable text or label are skipped and counted, by reason, and the
    first few named in the log; what cannot make a task (a file without the columns, a class
    only the scored splits have, a single class) is an error naming the file and row."""
    paths = {"train": train, "validation": validation, **({"test": test} if test else {})}
    rows: dict[str, list[_Row]] = {}
    reasons: Counter[str] = Counter()
    for split, name in paths.items():
        rows[split] = _read_rows(Path(name), split, text, text_pair, label, reasons)
    labels = [r.label for split in rows.values() for r in split]
    regression = all(not isinstance(v, str) for v in labels) and not all(isinstance(v, int) for v in labels)
    names = [] if regression else sorted({str(r.label) for r in rows["train"]}, key=_sort_key)
    if not regression and len(names) < 2:
        raise TaskError(f"custom task: {train} has a single class ({names[0]!r}); a classifier needs two")
    for split in rows.values():
        unseen = next((r for r in split if not regression and str(r.label) not in names), None)
        if unseen:
            raise TaskError(
                f"custom task: {unseen.file} row {unseen.row}: label {unseen.label!r} does not occur in "
                f"{train} (its classes: {', '.join(names)}); the model could never predict it"
            )

    def examples(split: list[_Row]) -> list[Example]:
        return [
            Example(r.text, r.pair, float(r.label) if regression else names.index(str(r.label)))
            for r in split
        ]

    metrics = (
        ["pearson", "spearman"] if regression else (["accuracy", "f1"] if len(names) == 2 else ["accuracy"])
    )
    evaluations = {split: examples(rows[split]) for split in ("validation", "test") if split in rows}
    return Task(
        "custom",
        regression,
        names,
        metrics,
        examples(rows["train"]),
        evaluations,
        sum(reasons.values()),
        skip_reasons=dict(reasons),
    )


def _sort_key(value: str):
    """Numbers in numeric order, then text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def load_task(name: str, options) -> Task:
    """The task ``name`` with its options (``data_dir``, ``xnli_setting``, ``train``...)."""
    if name == "rotten_tomatoes":
        return rotten_tomatoes()
    if name in GLUE:
        if not options.get("data_dir"):
            raise TaskError(f"task={name} needs data_dir=<the GLUE {GLUE_FOLDERS[name]} folder>")
        return glue(name, options["data_dir"])
    if name == "xnli":
        if not options.get("data_dir"):
            raise TaskError("task=xnli needs data_dir=<folder with XNLI-1.0 and XNLI-MT-1.0, or JSON Lines>")
        return xnli(options["data_dir"], options.get("xnli_setting", "english"), options.get("languages"))
    if name == "custom":
        needed = [k for k in ("train", "validation", "text", "label") if not options.get(k)]
        if needed:
            raise TaskError(f"task=custom needs {', '.join(f'{k}=...' for k in needed)}")
        return custom(
            options["train"],
            options["validation"],
            options["text"],
            options["label"],
            options.get("text_pair"),
            options.get("test"),
        )
    known = ["rotten_tomatoes", *GLUE, "xnli", "custom", "reconstruct", "intrinsic"]
    raise TaskError(f"unknown task {name!r}; known: {', '.join(known)}")
