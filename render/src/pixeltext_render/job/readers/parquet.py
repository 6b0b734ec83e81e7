"""Parquet: a file -> its row groups (the parts it is read in); a part (one row group) -> one
``Record`` per row, its text and id from the named columns. pyarrow reads the file through the
caller's ``Storage``; a compressed Parquet file is refused (Parquet compresses inside)."""

from __future__ import annotations

from collections.abc import Iterator

from pixeltext_render.job.readers.base import CorpusFile, FilePart, ReadOptions, Record, Storage, field_text
from pixeltext_render.job.readers.compression import compression_suffix

_BATCH_ROWS = 1024  # rows decoded at once


def _open(corpus_file: CorpusFile, storage: Storage):
    import pyarrow.parquet as pq

    if compression_suffix(corpus_file.name):
        raise ValueError("a compressed Parquet file: Parquet compresses inside; give the .parquet file")
    return pq.ParquetFile(storage.open(corpus_file.path))


def row_group_rows(corpus_file: CorpusFile, storage: Storage) -> list[int]:
    """The rows of each row group, from the file's footer."""
    with _open(corpus_file, storage) as table:
        return [table.metadata.row_group(i).num_rows for i in range(table.num_row_groups)]


def read(part: FilePart, options: ReadOptions, storage: Storage) -> Iterator[Record]:
    field, id_field = options.text_field, options.id_field
    with _open(part.file, storage) as table:
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
                yield number, 0, record_id, field_text({field: value}, field)
