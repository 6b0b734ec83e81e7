"""Reading corpora for the render job: Parquet, JSON Lines and plain text (each optionally
compressed), on any filesystem Beam knows (local paths, ``gs://``, ``s3://``, ``hdfs://``).

Files are matched inside the pipeline (the job's request never lists them). The job's first
pass reads each file once (``SurveyFile``): it estimates every document's strips, cuts a
line-based file into parts of about ``part_strips`` estimated strips at line starts (a Parquet
file is cut by row group; any other file is one part), and hashes every document's key so
that duplicate ids can be found without moving text. The second pass reads each part again
(``ParseFile``), where it is rendered. Every bad record or file becomes a ``Rejection`` in
the same stream as the documents: no tagged outputs, which some runners do not separate.

The plan names what the first pass saw: each file's size and modification time, and a digest
of each part's documents. The second pass reads a part only if its file still has that size
and time, and stops the job (``CorpusChanged``) when the part's documents do not give the same
digest: a file edited between the passes, or between a killed run and its rerun, is never
rendered as it is now under the plan made of it before.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import IO, NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pixeltext_render.job.compression import SUFFIXES, compression_suffix, open_decompressed
from pixeltext_render.job.grouping import GroupInto
from pixeltext_render.schema import is_safe_key, key_hash

_GLOB = re.compile(r"[*?\[{]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_BOM = b"\xef\xbb\xbf"
_BATCH_ROWS = 1024  # Parquet rows decoded at once
SPLIT_BYTES = 8 << 20  # a compressed file's parts hold at least this many bytes (decompressed)
KEY_BUCKETS = 64  # groups the first pass's key hashes are spread over to find duplicates
LAYOUT = -1  # the group that gathers every part's survey (the key buckets are 0, 1, ...)


@dataclass(frozen=True)
class Document:
    key: str  # stable: the id field when there is one, else a hash of source and position
    name: str  # the file, relative to the folder all corpus patterns share
    position: int  # line or row in the file, from 1
    text: str

    @property
    def source(self) -> str:
        return f"{self.name}:{self.position}"


@dataclass(frozen=True)
class Rejection:
    """A document (or file) that is not in the shards, and why."""

    key: str
    source: str
    reason: str


class CorpusChanged(RuntimeError):
    """A corpus file is not what the job's first pass planned: it changed since."""


class Invalid(NamedTuple):
    """What a reader yields instead of text for a record it cannot use."""

    reason: str


@dataclass(frozen=True)
class CorpusFile:
    path: str  # as the filesystem names it
    name: str  # relative to the corpus folder, printable (a name that is not UTF-8 is escaped)
    size: int  # bytes, as stored
    modified: float = 0.0  # seconds since the epoch, as the filesystem said (0: it did not say)


@dataclass(frozen=True)
class FilePart:
    """What one worker reads: a whole file, one row group of a Parquet file, or a range of
    lines of a line-based file."""

    file: CorpusFile
    row_group: int | None = None
    first_row: int = 0  # rows (or lines) of the file before this part
    start: int = 0  # line-based files: the byte (decompressed) the part's first line starts at
    end: int | None = None  # the byte after the part's last line; None: the end of the file
    digest: str = ""  # of the part's documents, as the first pass read them ("": not surveyed)


@dataclass(frozen=True)
class PartSurvey:
    """What the first pass learns of a part: where it is, and its documents' estimated strips."""

    part: FilePart
    strips: int


@dataclass(frozen=True)
class KeyBatch:
    """The keys of one part's documents that fall into one key bucket: 12-byte hashes, and
    each document's position in its file less the rows before the part (what finding
    duplicate ids needs, and no text: 16 bytes a document)."""

    path: str
    name: str
    first_row: int
    digests: bytes
    positions: bytes  # uint32, native order, each + first_row: the position


@dataclass(frozen=True)
class ReadOptions:
    format: str = "auto"
    text_field: str = "text"
    id_field: str | None = "id"
    lines: bool = False  # plain text: one document per line instead of per file
    max_chars: int = 5_000_000  # longer documents are rejected
    max_control_fraction: float = 0.1  # more control characters than this: binary, rejected

    def __post_init__(self) -> None:
        if self.max_chars < 1:
            raise ValueError(
                f"max_chars is {self.max_chars}: it must be at least 1 (every document would be rejected)"
            )
        if not 0 <= self.max_control_fraction <= 1:
            raise ValueError(f"max_control_fraction is {self.max_control_fraction}: it must be in [0, 1]")

    @property
    def max_bytes(self) -> int:
        """A record longer than this in UTF-8 is too long whatever it holds."""
        return 4 * self.max_chars


def _has_glob(pattern: str) -> bool:
    return _GLOB.search(pattern) is not None


def _matches_any(pattern: str) -> bool:
    return bool(FileSystems.match([pattern], limits=[1])[0].metadata_list)


def resolve_pattern(pattern: str) -> str:
    """The pattern to match for what a user named: a folder means every file under it, a file
    whose name holds glob characters (``data[1].jsonl``) means that file. Checked on the
    launcher, once per pattern, with two or three listing calls (each stops at the first file)."""
    if _has_glob(pattern):
        if FileSystems.exists(pattern):
            return glob.escape(pattern)
    elif not pattern.endswith("/") and FileSystems.exists(pattern):
        folder = pattern + "/**"
        return folder if _matches_any(folder) else pattern
    else:
        folder = pattern.rstrip("/") + "/**"
        if _matches_any(folder):
            return folder
    if not _matches_any(pattern):
        raise FileNotFoundError(f"corpus pattern {pattern!r} matches no file")
    return pattern


def corpus_folder(patterns: Iterable[str]) -> str:
    """The folder every pattern is under: file names are relative to it, so two files with the
    same name under different patterns keep different names (and keys)."""
    folders = [_GLOB.split(p, maxsplit=1)[0] for p in patterns]
    folders = [f[: f.rfind("/") + 1] for f in folders]
    common = folders[0] if folders else ""
    for folder in folders[1:]:
        while not folder.startswith(common):
            common = common[: common.rstrip("/").rfind("/") + 1]
    return common


def printable(name: str) -> str:
    """A file name as valid UTF-8: bytes that were not UTF-8 shown as ``\\xff``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def document_key(record_id: object, source: str) -> str:
    """The id when it is safe in a file name, a hash of it when not, else a hash of the source."""
    if record_id is None or record_id == "":
        return "src-" + hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    text = str(record_id)
    if is_safe_key(text):
        return text
    return "id-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def file_format(name: str, requested: str) -> str | None:
    if requested != "auto":
        return requested
    base = name.lower()
    suffix = compression_suffix(base)
    base = base.removesuffix(suffix) if suffix else base
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


class MatchCorpus(beam.PTransform):
    """Resolved patterns (``resolve_pattern``, on the launcher) -> every ``CorpusFile`` they
    match, each once; the workers do the matching."""

    def __init__(self, patterns: list[str]):
        super().__init__()
        self.patterns = patterns

    def expand(self, pipeline):
        patterns = self.patterns
        folder = corpus_folder(patterns)
        return (
            pipeline
            | "Patterns" >> beam.Create(patterns)
            | "Match" >> fileio.MatchAll()
            # (a name that is not UTF-8 holds surrogates, which Beam's string coder refuses)
            | "Path"
            >> beam.Map(
                lambda found: (
                    found.path.encode("utf-8", "surrogateescape"),
                    found.size_in_bytes,
                    found.last_updated_in_seconds,
                )
            )
            | "Once" >> beam.Distinct()
            | "File" >> beam.MapTuple(lambda path, size, modified: _corpus_file(path, size, modified, folder))
        )


def _corpus_file(encoded_path: bytes, size: int, modified: float, folder: str) -> CorpusFile:
    path = encoded_path.decode("utf-8", "surrogateescape")
    name = path[len(folder) :] if path.startswith(folder) else path
    return CorpusFile(path, printable(name.lstrip("/") or path), size, modified or 0.0)


def line_based(name: str, options: ReadOptions) -> bool:
    """Whether a file holds one record per line (and can be read in ranges of lines)."""
    kind = file_format(name, options.format)
    return kind == "jsonl" or (kind == "text" and options.lines)


def file_parts(corpus_file: CorpusFile, options: ReadOptions) -> Iterator[FilePart]:
    """The parts a file is read in before the first pass cuts it: each row group of a Parquet
    file, any other file whole. A Parquet file whose footer cannot be read is one part,
    rejected when it is read."""
    if file_format(corpus_file.name, options.format) == "parquet":
        try:
            with _open_parquet(corpus_file) as table:
                counts = [table.metadata.row_group(i).num_rows for i in range(table.num_row_groups)]
        except Exception:
            yield FilePart(corpus_file, 0)
            return
        first = 0
        for group, rows in enumerate(counts):
            yield FilePart(corpus_file, group, first)
            first += rows
        return
    yield FilePart(corpus_file)


class DocumentsDigest:
    """A digest of a sequence of documents (key, position, text): what a part must hold again
    when the second pass reads it."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)

    def add(self, document: Document) -> None:
        for field_ in (document.key.encode(), str(document.position).encode(), document.text.encode()):
            self._hash.update(len(field_).to_bytes(8, "little"))
            self._hash.update(field_)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def check_unchanged(corpus_file: CorpusFile) -> None:
    """Stop (``CorpusChanged``) unless the file has the size and modification time the plan
    recorded (a time of 0: the filesystem did not give one, only the size is compared)."""
    found = FileSystems.match([glob.escape(corpus_file.path)], limits=[1])[
        0
    ].metadata_list  # (a name, not a pattern)
    now = (found[0].size_in_bytes, found[0].last_updated_in_seconds or 0.0) if found else None
    if now is None or now[0] != corpus_file.size or (corpus_file.modified and now[1] != corpus_file.modified):
        what = "is gone" if now is None else f"is {now[0]} bytes, modified at {now[1]:.0f}"
        raise CorpusChanged(
            f"{corpus_file.name} changed after the job planned it ({corpus_file.size} bytes, modified at "
            f"{corpus_file.modified:.0f}; now it {what}). {CHANGED_ADVICE}"
        )


CHANGED_ADVICE = (
    "Nothing of it is rendered: restore the file, or render the corpus as it is now into a new --out"
)


def key_digest(key: str) -> bytes:
    """96 bits: two different keys share one with a chance of about 10^-12 in 400 M keys."""
    return hashlib.blake2b(key.encode(), digest_size=12).digest()


class SurveyFile(beam.DoFn):
    """A file -> ``(LAYOUT, PartSurvey)`` for each part it is cut into, and ``(bucket,
    KeyBatch)`` for its documents' keys (the first pass, one read of the file).

    A line-based file is cut before a document when the part so far holds documents estimated
    (``estimate(text)``) at ``part_strips`` strips with it; a compressed file only after at
    least ``SPLIT_BYTES`` decompressed bytes as well, because a part of it is reached by
    decompressing everything before it."""

    def __init__(self, options: ReadOptions, estimate: Callable[[str], int], part_strips: int):
        self.options, self.estimate, self.part_strips = options, estimate, part_strips

    def process(self, corpus_file: CorpusFile) -> Iterator[tuple[int, PartSurvey | KeyBatch]]:
        parse = ParseFile(self.options)
        cuttable = line_based(corpus_file.name, self.options)
        least_bytes = SPLIT_BYTES if compression_suffix(corpus_file.name) else 0
        for whole in file_parts(corpus_file, self.options):
            part, strips, keys, digest = whole, 0, [], DocumentsDigest()
            for offset, record in parse.located(whole):
                if not isinstance(record, Document):
                    continue
                cost = self.estimate(record.text)
                full = strips and strips + cost > self.part_strips and offset - part.start >= least_bytes
                if cuttable and full:
                    yield from _surveyed(replace(part, end=offset), strips, keys, digest)
                    part, strips, keys = FilePart(corpus_file, None, record.position - 1, offset), 0, []
                    digest = DocumentsDigest()
                strips += cost
                keys.append((key_digest(record.key), record.position))
                digest.add(record)
            yield from _surveyed(part, strips, keys, digest)


def _surveyed(part: FilePart, strips: int, keys: list[tuple[bytes, int]], digest: DocumentsDigest):
    part = replace(part, digest=digest.hexdigest())
    yield LAYOUT, PartSurvey(part, strips)
    buckets: dict[int, list[tuple[bytes, int]]] = {}
    for digest, position in keys:
        buckets.setdefault(int.from_bytes(digest[:4], "big") % KEY_BUCKETS, []).append((digest, position))
    for bucket, members in sorted(buckets.items()):
        digests = b"".join(digest for digest, _ in members)
        positions = array("I", (position - part.first_row for _, position in members)).tobytes()
        yield bucket, KeyBatch(part.file.path, part.file.name, part.first_row, digests, positions)


def _open_parquet(corpus_file: CorpusFile):
    import pyarrow.parquet as pq

    if compression_suffix(corpus_file.name):
        raise ValueError("a compressed Parquet file: Parquet compresses inside; give the .parquet file")
    stream = FileSystems.open(corpus_file.path, compression_type=CompressionTypes.UNCOMPRESSED)
    return pq.ParquetFile(stream)


class ParseFile:
    """A file part -> ``Document``s, and a ``Rejection`` for each bad record (or the unreadable
    rest of a file: the records before the damage are kept)."""

    def __init__(self, options: ReadOptions):
        self.options = options

    def process(self, part: FilePart) -> Iterator[Document | Rejection]:
        """The part's records; a part the first pass surveyed is checked to be what it was:
        its file's size and time before anything is read, its documents' digest at its end
        (``CorpusChanged``: the caller must drop what it made of the part)."""
        if part.digest:
            check_unchanged(part.file)
        digest = DocumentsDigest()
        for _, record in self.located(part):
            if isinstance(record, Document):
                digest.add(record)
            yield record
        if part.digest and digest.hexdigest() != part.digest:
            raise CorpusChanged(
                f"{part.file.name} changed after the job planned it: the documents read from rows "
                f"{part.first_row + 1} on are not those the first pass read. {CHANGED_ADVICE}"
            )

    def located(self, part: FilePart) -> Iterator[tuple[int, Document | Rejection]]:
        """Each record with the byte (decompressed) its line starts at in a line-based file
        (a part may start there), 0 in other files."""
        name = part.file.name
        kind = file_format(name, self.options.format)
        if kind is None:
            reason = (
                "unknown format: name the file .parquet/.jsonl/.txt (optionally "
                f"{'/'.join(SUFFIXES)}) or pass --format"
            )
            yield 0, Rejection(name, name, reason)
            return
        read = {"parquet": self._parquet, "jsonl": self._jsonl, "text": self._text}[kind]
        position = part.first_row
        try:
            for position, offset, record_id, text in read(part):
                yield offset, self._document(name, position, record_id, text)
        except Exception as error:  # a corrupt or truncated file: keep what was read
            where = f"after record {position}" if position else "before any record"
            yield 0, Rejection(name, name, f"unreadable file {where}, the rest is lost: {error!r}")

    def _document(self, name: str, position: int, record_id, text) -> Document | Rejection:
        source = f"{name}:{position}"
        try:
            key = document_key(record_id, source)
        except Exception as error:  # an id no string conversion survives
            key, text = document_key(None, source), Invalid(f"unusable id: {error!r}")
        if isinstance(text, Invalid):
            return Rejection(key, source, text.reason)
        problem = check_text(text, self.options)
        if problem:
            return Rejection(key, source, problem)
        return Document(key, name, position, text)

    def _jsonl(self, part: FilePart) -> Iterator:
        field, id_field = self.options.text_field, self.options.id_field
        with open_decompressed(part.file.path, part.file.name) as stream:
            for number, offset, raw in _lines(stream, self.options.max_bytes, part):
                if isinstance(raw, Invalid):
                    yield number, offset, None, raw
                    continue
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as error:
                    yield number, offset, None, Invalid(f"invalid UTF-8 at byte {error.start}")
                    continue
                except json.JSONDecodeError as error:
                    yield number, offset, None, Invalid(f"invalid JSON: {error.msg}")
                    continue
                if not isinstance(record, dict):
                    yield number, offset, None, Invalid("record is not a JSON object")
                    continue
                record_id = record.get(id_field) if id_field else None
                yield number, offset, record_id, _field_text(record, field)

    def _parquet(self, part: FilePart) -> Iterator:
        field, id_field = self.options.text_field, self.options.id_field
        with _open_parquet(part.file) as table:
            names = table.schema_arrow.names
            if field not in names:
                raise KeyError(f"no column {field!r} (columns: {names}); pass --text-field")
            columns = [field] + ([id_field] if id_field and id_field in names else [])
            number = part.first_row
            batches = table.iter_batches(_BATCH_ROWS, row_groups=[part.row_group], columns=columns)
            for batch in batches:
                data = batch.to_pydict()
                ids = data.get(id_field) if id_field and id_field in data else [None] * batch.num_rows
                for value, record_id in zip(data[field], ids, strict=True):
                    number += 1
                    yield number, 0, record_id, _field_text({field: value}, field)

    def _text(self, part: FilePart) -> Iterator:
        limit = self.options.max_bytes
        if not self.options.lines and not compression_suffix(part.file.name) and part.file.size > limit:
            yield 1, 0, None, Invalid(f"too long: {part.file.size} bytes (limit {limit}, 4 x --max-chars)")
            return
        with open_decompressed(part.file.path, part.file.name) as stream:
            if not self.options.lines:
                data = stream.read(limit + 1)
                if len(data) > limit:
                    yield 1, 0, None, Invalid(f"too long: over {limit} bytes (4 x --max-chars)")
                else:
                    yield 1, 0, None, _decode(data.removeprefix(_BOM))
                return
            for number, offset, raw in _lines(stream, limit, part):
                if isinstance(raw, Invalid):
                    yield number, offset, None, raw
                    continue
                line = raw.rstrip(b"\r\n")
                if line.strip():
                    yield number, offset, None, _decode(line)


def _lines(stream: IO[bytes], limit: int, part: FilePart) -> Iterator[tuple[int, int, bytes | Invalid]]:
    """The part's lines, numbered in the file, each with the byte it starts at (a BOM before
    the file's first line removed); a line over ``limit`` bytes is skipped without being held
    whole, and given as ``Invalid``."""
    _skip(stream, part.start)
    number, offset = part.first_row, part.start
    while part.end is None or offset < part.end:
        raw = stream.readline(limit + 1)
        if not raw:
            return
        number, start = number + 1, offset
        offset += len(raw)
        cut = len(raw) > limit and not raw.endswith(b"\n")  # (before the BOM goes: a cut line)
        if number == 1:
            raw = raw.removeprefix(_BOM)
        if cut:
            while (rest := stream.readline(1 << 20)) and not rest.endswith(b"\n"):
                offset += len(rest)
            offset += len(rest)
            yield number, start, Invalid(f"too long: over {limit} bytes (4 x --max-chars)")
            continue
        yield number, start, raw


def _skip(stream: IO[bytes], count: int) -> None:
    """Move ``count`` bytes into a stream just opened: a seek, or reading past them."""
    if not count:
        return
    if stream.seekable():
        stream.seek(count)
        return
    while count and (data := stream.read(min(count, 1 << 20))):
        count -= len(data)


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


class Spread(beam.PTransform):
    """Files -> the same files, regrouped into ``buckets`` groups (by a hash of each name):
    the reading is spread over workers, and over as many partitions."""

    def __init__(self, buckets: int):
        super().__init__()
        self.buckets = buckets

    def expand(self, files):
        buckets = self.buckets
        return (
            files
            | "Bucket" >> beam.Map(lambda found: (key_hash(found.name) % buckets, found))
            | "Group" >> GroupInto(buckets)
            | "Files" >> beam.FlatMap(lambda bucket: bucket[1])
        )


class SurveyCorpus(beam.PTransform):
    """Resolved corpus patterns -> the first pass's ``SurveyFile`` outputs, files spread over
    ``buckets`` groups (one per worker)."""

    def __init__(
        self,
        patterns: list[str],
        options: ReadOptions,
        estimate: Callable[[str], int],
        part_strips: int,
        buckets: int,
    ):
        super().__init__()
        self.patterns, self.options, self.estimate = patterns, options, estimate
        self.part_strips, self.buckets = part_strips, buckets

    def expand(self, pipeline):
        return (
            pipeline
            | "Match" >> MatchCorpus(self.patterns)
            | "Spread" >> Spread(self.buckets)
            | "Survey" >> beam.ParDo(SurveyFile(self.options, self.estimate, self.part_strips))
        )
