"""Corpus files -> parts -> documents: the reader each file's format needs, the parts a file is
read in, every record's key and checks (a ``Rejection`` for each bad record or file, in the
same stream as the documents: no tagged outputs, which some runners do not separate), and
whether a file is still what the job's plan saw of it.

The plan names each file's size and modification time, and a digest of each part's
documents. A part read again is read only if its file still has that size and time, and
stops the job (``CorpusChanged``) when its documents do not give the same digest: a file
edited between the passes, or between a killed run and its rerun, is never rendered as it is
now under the plan made of it before.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator

from pixeltext_render.format.sample import is_safe_key
from pixeltext_render.job.readers import jsonl, parquet
from pixeltext_render.job.readers import text as plain_text
from pixeltext_render.job.readers.base import (
    LOCAL_FILES,
    CorpusFile,
    Document,
    FilePart,
    Invalid,
    ReadOptions,
    Record,
    Rejection,
    Storage,
)
from pixeltext_render.job.readers.compression import SUFFIXES, compression_suffix

GLOB = re.compile(r"[*?\[{]")  # what makes a corpus pattern more than a name
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
READERS: dict[str, Callable[[FilePart, ReadOptions, Storage], Iterator[Record]]] = {
    "parquet": parquet.read,
    "jsonl": jsonl.read,
    "text": plain_text.read,
}
CHANGED_ADVICE = (
    "Nothing of it is rendered: restore the file, or render the corpus as it is now into a new --out"
)


class CorpusChanged(RuntimeError):
    """A corpus file is not what the job's first pass planned: it changed since."""


def corpus_folder(patterns: Iterable[str]) -> str:
    """The folder every pattern is under: file names are relative to it, so two files with the
    same name under different patterns keep different names (and keys)."""
    folders = [GLOB.split(p, maxsplit=1)[0] for p in patterns]
    folders = [f[: f.rfind("/") + 1] for f in folders]
    common = folders[0] if folders else ""
    for folder in folders[1:]:
        while not folder.startswith(common):
            common = common[: common.rstrip("/").rfind("/") + 1]
    return common


def printable(name: str) -> str:
    """A file name as valid UTF-8: bytes that were not UTF-8 shown as ``\\xff``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def corpus_file(path: str, size: int, modified: float | None, folder: str) -> CorpusFile:
    """A file a listing found, named relative to the corpus ``folder``."""
    name = path[len(folder) :] if path.startswith(folder) else path
    return CorpusFile(path, printable(name.lstrip("/") or path), size, modified or 0.0)


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


def line_based(name: str, options: ReadOptions) -> bool:
    """Whether a file holds one record per line (and can be read in ranges of lines)."""
    kind = file_format(name, options.format)
    return kind == "jsonl" or (kind == "text" and options.lines)


def file_parts(
    corpus_file: CorpusFile, options: ReadOptions, storage: Storage = LOCAL_FILES
) -> Iterator[FilePart]:
    """The parts a file is read in before the first pass cuts it: each row group of a Parquet
    file, any other file whole. A Parquet file whose footer cannot be read is one part,
    rejected when it is read."""
    if file_format(corpus_file.name, options.format) == "parquet":
        try:
            counts = parquet.row_group_rows(corpus_file, storage)
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


def check_unchanged(corpus_file: CorpusFile, storage: Storage) -> None:
    """Stop (``CorpusChanged``) unless the file has the size and modification time the plan
    recorded (a time of 0: the filesystem did not give one, only the size is compared)."""
    now = storage.stat(corpus_file.path)
    if now is None or now[0] != corpus_file.size or (corpus_file.modified and now[1] != corpus_file.modified):
        what = "is gone" if now is None else f"is {now[0]} bytes, modified at {now[1]:.0f}"
        raise CorpusChanged(
            f"{corpus_file.name} changed after the job planned it ({corpus_file.size} bytes, modified at "
            f"{corpus_file.modified:.0f}; now it {what}). {CHANGED_ADVICE}"
        )


class ParseFile:
    """A file part -> ``Document``s, and a ``Rejection`` for each bad record (or the unreadable
    rest of a file: the records before the damage are kept), read through ``storage``."""

    def __init__(self, options: ReadOptions, storage: Storage = LOCAL_FILES):
        self.options, self.storage = options, storage

    def process(self, part: FilePart) -> Iterator[Document | Rejection]:
        """The part's records; a part the first pass surveyed is checked to be what it was:
        its file's size and time before anything is read, its documents' digest at its end
        (``CorpusChanged``: the caller must drop what it made of the part)."""
        if part.digest:
            check_unchanged(part.file, self.storage)
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
        position = part.first_row
        try:
            for position, offset, record_id, text in READERS[kind](part, self.options, self.storage):
                yield offset, self._document(name, position, record_id, text)
        except Exception as error:  # a corrupt or truncated file: keep what was read
            where = f"after record {position}" if position else "before any record"
            yield 0, Rejection(name, name, f"unreadable file {where}, the rest is lost: {error!r}")

    def _document(
        self, name: str, position: int, record_id: object, text: str | Invalid
    ) -> Document | Rejection:
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
