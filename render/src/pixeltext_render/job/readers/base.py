"""What the format readers share: the records a corpus is read into (``CorpusFile`` ->
``FilePart`` -> ``Document`` or ``Rejection``), the read options, the ``Storage`` files are
opened through, and the line reading of the line-based formats.

A format reader yields ``Record``s (position, line start, id, text or ``Invalid``); ``files``
turns them into documents and rejections.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, NamedTuple, Protocol

from pixeltext_render.job.readers.compression import open_decompressed

BOM = b"\xef\xbb\xbf"


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


class Invalid(NamedTuple):
    """What a reader yields instead of text for a record it cannot use."""

    reason: str


# A format reader's record: its position in the file (from 1), the byte (decompressed) its line
# starts at in a line-based file (0 in other files), its id (None: none), its text
Record = tuple[int, int, object, str | Invalid]


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


class Storage(Protocol):
    """Where corpus files are read from: the readers name no filesystem of their own."""

    def open(self, path: str) -> IO[bytes]:
        """The file's bytes as stored (the readers decompress them)."""

    def stat(self, path: str) -> tuple[int, float] | None:
        """The file's size in bytes and modification time (seconds since the epoch, 0 when the
        filesystem does not say), or None when there is no such file."""


class LocalFiles:
    """Files on this machine's disks."""

    def open(self, path: str) -> IO[bytes]:
        return open(path, "rb")

    def stat(self, path: str) -> tuple[int, float] | None:
        try:
            found = os.stat(path)
        except FileNotFoundError:
            return None
        return found.st_size, found.st_mtime


LOCAL_FILES = LocalFiles()


def open_file(corpus_file: CorpusFile, storage: Storage) -> IO[bytes]:
    """The file's bytes, decompressed by the suffix of its name."""
    return open_decompressed(storage.open(corpus_file.path), corpus_file.name)


def lines(stream: IO[bytes], limit: int, part: FilePart) -> Iterator[tuple[int, int, bytes | Invalid]]:
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
            raw = raw.removeprefix(BOM)
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


def field_text(record: dict, field: str) -> str | Invalid:
    """A record's text field, or why it has none to render."""
    if field not in record or record[field] is None:
        return Invalid(f"missing text field {field!r}")
    value = record[field]
    if not isinstance(value, str):
        return Invalid(f"text field {field!r} is {type(value).__name__}, not a string")
    return value
