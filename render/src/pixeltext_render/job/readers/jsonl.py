"""JSON Lines: a part (a range of lines) -> one ``Record`` per non-blank line, its text and id
from the record's fields, or ``Invalid`` for a line that is not a JSON object."""

from __future__ import annotations

import json
from collections.abc import Iterator

from pixeltext_render.job.readers.base import (
    FilePart,
    Invalid,
    ReadOptions,
    Record,
    Storage,
    field_text,
    lines,
    open_file,
)


def read(part: FilePart, options: ReadOptions, storage: Storage) -> Iterator[Record]:
    field, id_field = options.text_field, options.id_field
    with open_file(part.file, storage) as stream:
        for number, offset, raw in lines(stream, options.max_bytes, part):
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
            yield number, offset, record_id, field_text(record, field)
