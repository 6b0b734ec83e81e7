"""Reading corpora for the render job: Parquet, JSON Lines and plain text, on any filesystem
Beam knows (local paths, ``gs://``, ``s3://``, ``hdfs://``), with every bad record turned
into a counted rejection instead of a crash or a silent loss.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pixeltext_render.schema import is_safe_key

_COMPRESSED = (".gz", ".bz2", ".zst", ".zstd", ".deflate")
_GLOB = re.compile(r"[*?\[{]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
REJECTED_TAG = "rejected"


@dataclass(frozen=True)
class Document:
    key: str  # stable: the id field when there is one, else a hash of source and position
    source: str  # "<file relative to the pattern's folder>:<line or row>"
    text: str


@dataclass(frozen=True)
class Rejection:
    """A document (or file) that is not in the shards, and why."""

    key: str
    source: str
    reason: str


class Invalid(NamedTuple):
    """What a reader yields instead of text for a record it cannot use."""

    reason: str


@dataclass(frozen=True)
class CorpusFile:
    path: str  # as the filesystem names it
    name: str  # relative to the folder of the pattern that matched it


@dataclass(frozen=True)
class ReadOptions:
    format: str = "auto"
    text_field: str = "text"
    id_field: str | None = "id"
    lines: bool = False  # plain text: one document per line instead of per file
    max_chars: int = 5_000_000  # longer documents are rejected
    max_control_fraction: float = 0.1  # more control characters than this: binary, rejected


def pattern_folder(pattern: str) -> str:
    """The folder part of a pattern before any glob character (names are relative to it)."""
    head = _GLOB.split(pattern, maxsplit=1)[0]
    return head[: head.rfind("/") + 1]


def match_corpus(patterns: list[str]) -> list[CorpusFile]:
    """Every file the patterns match, sorted; an error that names a pattern matching nothing."""
    files: dict[str, CorpusFile] = {}
    for pattern in patterns:
        found = FileSystems.match([pattern])[0].metadata_list
        if not found:
            raise FileNotFoundError(f"corpus pattern {pattern!r} matches no file")
        folder = pattern_folder(pattern)
        for metadata in found:
            name = metadata.path[len(folder) :] if metadata.path.startswith(folder) else metadata.path
            files.setdefault(metadata.path, CorpusFile(metadata.path, name.lstrip("/") or metadata.path))
    return sorted(files.values(), key=lambda f: f.path)


def document_key(record_id: object, source: str) -> str:
    """The id when it is safe in a file name, a hash of it when not, else a hash of the source."""
    if record_id is None or record_id == "":
        return "src-" + hashlib.sha256(source.encode()).hexdigest()[:20]
    text = str(record_id)
    return text if is_safe_key(text) else "id-" + hashlib.sha256(text.encode()).hexdigest()[:20]


def file_format(name: str, requested: str) -> str | None:
    if requested != "auto":
        return requested
    base = name.lower()
    for suffix in _COMPRESSED:
        base = base.removesuffix(suffix)
    if base.endswith(".parquet"):
        return "parquet"
    if base.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if base.endswith(".txt"):
        return "text"
    return None


def check_text(text: str, options: ReadOptions) -> str | None:
    """Why a document's text cannot be rendered as it is, or None if it can."""
    if not text.strip():
        return "empty text"
    if len(text) > options.max_chars:
        return f"too long: {len(text)} characters (limit {options.max_chars}, --max-chars)"
    controls = len(_CONTROL.findall(text))
    if controls > options.max_control_fraction * len(text):
        return f"binary data: {controls / len(text):.0%} control characters"
    return None


class ParseFile(beam.DoFn):
    """A corpus file -> documents, and rejections (tagged ``rejected``) for what is bad."""

    def __init__(self, options: ReadOptions):
        self.options = options
        self.documents = Metrics.counter("pixeltext", "documents_read")
        self.rejected = Metrics.counter("pixeltext", "rejected")

    def process(self, corpus_file: CorpusFile) -> Iterator:
        kind = file_format(corpus_file.name, self.options.format)
        if kind is None:
            yield self._reject(
                corpus_file.name,
                corpus_file.name,
                "unknown format: name the file .parquet/.jsonl/.txt (optionally compressed) or pass --format",
            )
            return
        read = {"parquet": self._parquet, "jsonl": self._jsonl, "text": self._text}[kind]
        position = 0
        try:
            for position, record_id, text in read(corpus_file):
                yield from self._document(corpus_file, position, record_id, text)
        except Exception as error:  # a corrupt or truncated file: keep what was read
            where = f"after record {position}" if position else "before any record"
            yield self._reject(corpus_file.name, corpus_file.name, f"unreadable file {where}: {error!r}")

    def _document(self, corpus_file: CorpusFile, position: int, record_id, text) -> Iterator:
        source = f"{corpus_file.name}:{position}"
        key = document_key(record_id, source)
        if isinstance(text, Invalid):
            yield self._reject(key, source, text.reason)
            return
        problem = check_text(text, self.options)
        if problem:
            yield self._reject(key, source, problem)
            return
        self.documents.inc()
        yield Document(key, source, text)

    def _reject(self, key: str, source: str, reason: str):
        self.rejected.inc()
        return beam.pvalue.TaggedOutput(REJECTED_TAG, Rejection(key, source, reason))

    def _open(self, corpus_file: CorpusFile, compression=CompressionTypes.AUTO):
        return FileSystems.open(corpus_file.path, compression_type=compression)

    def _jsonl(self, corpus_file: CorpusFile) -> Iterator:
        field, id_field = self.options.text_field, self.options.id_field
        with self._open(corpus_file) as stream:
            for number, raw in enumerate(iter(stream.readline, b""), start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as error:
                    yield number, None, Invalid(f"invalid UTF-8 at byte {error.start}")
                    continue
                except json.JSONDecodeError as error:
                    yield number, None, Invalid(f"invalid JSON: {error.msg}")
                    continue
                if not isinstance(record, dict):
                    yield number, None, Invalid("record is not a JSON object")
                    continue
                record_id = record.get(id_field) if id_field else None
                yield number, record_id, _field_text(record, field)

    def _parquet(self, corpus_file: CorpusFile) -> Iterator:
        import pyarrow.parquet as pq

        field, id_field = self.options.text_field, self.options.id_field
        with self._open(corpus_file, CompressionTypes.UNCOMPRESSED) as stream:
            table = pq.ParquetFile(stream)
            names = table.schema_arrow.names
            if field not in names:
                raise KeyError(f"no column {field!r} (columns: {names}); pass --text-field")
            columns = [field] + ([id_field] if id_field and id_field in names else [])
            number = 0
            for batch in table.iter_batches(columns=columns):
                data = batch.to_pydict()
                ids = data.get(id_field) if id_field and id_field in data else [None] * batch.num_rows
                for value, record_id in zip(data[field], ids, strict=True):
                    number += 1
                    yield number, record_id, _field_text({field: value}, field)

    def _text(self, corpus_file: CorpusFile) -> Iterator:
        with self._open(corpus_file) as stream:
            if not self.options.lines:
                yield 1, None, _decode(stream.read())
                return
            for number, raw in enumerate(iter(stream.readline, b""), start=1):
                line = raw.rstrip(b"\r\n")
                if line.strip():
                    yield number, None, _decode(line)


def _decode(data: bytes) -> str | Invalid:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        return Invalid(f"invalid UTF-8 at byte {error.start}")


def _field_text(record: dict, field: str) -> str | Invalid:
    if field not in record or record[field] is None:
        return Invalid(f"missing text field {field!r}")
    value = record[field]
    if not isinstance(value, str):
        return Invalid(f"text field {field!r} is {type(value).__name__}, not a string")
    return value


class ReadCorpus(beam.PTransform):
    """Corpus files -> ``Document`` (main output) and ``Rejection`` (tagged ``rejected``)."""

    def __init__(self, files: list[CorpusFile], options: ReadOptions):
        super().__init__()
        self.files, self.options = files, options

    def expand(self, pipeline):
        return (
            pipeline
            | "Files" >> beam.Create(self.files)
            | "Spread" >> beam.Reshuffle()
            | "Parse" >> beam.ParDo(ParseFile(self.options)).with_outputs(REJECTED_TAG, main="documents")
        )
