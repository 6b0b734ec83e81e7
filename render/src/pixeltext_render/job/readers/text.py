"""Plain text: a file -> one ``Record`` holding it whole, or with ``--lines`` a part (a range of
lines) -> one ``Record`` per non-blank line; no id (keys come from the source)."""

from __future__ import annotations

from collections.abc import Iterator

from pixeltext_render.job.readers.base import (
    BOM,
    FilePart,
    Invalid,
    ReadOptions,
    Record,
    Storage,
    lines,
    open_file,
)
from pixeltext_render.job.readers.compression import compression_suffix


def read(part: FilePart, options: ReadOptions, storage: Storage) -> Iterator[Record]:
    limit = options.max_bytes
    if not options.lines and not compression_suffix(part.file.name) and part.file.size > limit:
        yield 1, 0, None, Invalid(f"too long: {part.file.size} bytes (limit {limit}, 4 x --max-chars)")
        return
    with open_file(part.file, storage) as stream:
        if not options.lines:
            data = stream.read(limit + 1)
            if len(data) > limit:
                yield 1, 0, None, Invalid(f"too long: over {limit} bytes (4 x --max-chars)")
            else:
                yield 1, 0, None, _decode(data.removeprefix(BOM))
            return
        for number, offset, raw in lines(stream, limit, part):
            if isinstance(raw, Invalid):
                yield number, offset, None, raw
                continue
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield number, offset, None, _decode(line)


def _decode(data: bytes) -> str | Invalid:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        return Invalid(f"invalid UTF-8 at byte {error.start}")
