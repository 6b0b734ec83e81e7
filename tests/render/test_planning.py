"""The plan: chunks own consecutive shard numbers and take every part once, in file order;
documents spread over a chunk's shards in order; duplicates found from key hashes alone."""

from __future__ import annotations

import itertools
import json
import tempfile
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pixeltext_render.job.pipeline import _shard_within
from pixeltext_render.job.planning import (
    Chunk,
    ReadChunks,
    assign_chunks,
    duplicate_records,
    read_plan,
    write_plan,
)
from pixeltext_render.job.readers.base import CorpusFile, FilePart
from pixeltext_render.job.survey import KeyBatch, PartSurvey, key_digest

SURVEYS = st.lists(
    st.tuples(st.sampled_from("abcde"), st.integers(0, 5), st.integers(0, 30)),
    max_size=30,
    unique_by=lambda t: t[:2],
)


def part_survey(name: str, first_row: int, strips: int) -> PartSurvey:
    return PartSurvey(FilePart(CorpusFile(f"/c/{name}", name, 1), None, first_row), strips)


@given(surveys=SURVEYS, shard_samples=st.integers(1, 10), chunk_shards=st.integers(1, 4))
def test_chunks_take_every_part_once_in_file_order_and_own_consecutive_shards(
    surveys, shard_samples, chunk_shards
):
    parts = [part_survey(*s) for s in surveys]
    chunk_strips = shard_samples * chunk_shards
    chunks = assign_chunks(parts[::-1], shard_samples, chunk_strips)
    in_order = sorted(parts, key=lambda s: (s.part.file.name, s.part.first_row))
    assert [p for c in chunks for p in c.parts] == [s.part for s in in_order]
    assert [c.index for c in chunks] == list(range(len(chunks)))
    first = 0
    for chunk in chunks:
        assert chunk.first == first and chunk.shards == max(1, -(-chunk.strips // shard_samples))
        first += chunk.shards
        assert chunk.strips <= chunk_strips or len(chunk.parts) == 1  # full, or one large part
    for before, after in itertools.pairwise(chunks):  # a chunk closes only when full
        next_part = next(s for s in parts if s.part == after.parts[0])
        assert before.strips + next_part.strips > chunk_strips


@given(strips=st.lists(st.integers(1, 6), min_size=1, max_size=40), shards=st.integers(1, 8))
def test_documents_fill_a_chunks_shards_in_order_and_evenly(strips, shards):
    chunk = Chunk(0, 0, shards, sum(strips), ())
    before, targets = 0, []
    for cost in strips:
        targets.append(_shard_within(before, chunk))
        before += cost
    assert targets == sorted(targets) and targets[0] == 0 and targets[-1] < shards
    for shard in range(shards):  # no shard holds much more than its share of the strips
        held = sum(cost for cost, target in zip(strips, targets, strict=True) if target == shard)
        assert held <= sum(strips) / shards + max(strips)


RECORDS = st.lists(
    st.tuples(st.sampled_from(["a.jsonl", "b.jsonl", "c.txt"]), st.sampled_from("kmnpq")), max_size=40
)


@given(records=RECORDS, batch_size=st.integers(1, 7))
def test_duplicates_are_every_record_after_the_first_of_its_key_in_file_order(records, batch_size):
    numbered = {}  # position within each file, from 1
    rows = []
    for name, key in records:
        numbered[name] = numbered.get(name, 0) + 1
        rows.append((name, numbered[name], key))
    batches = [
        KeyBatch(
            f"/c/{name}",
            name,
            chunk[0][1] - 1,
            b"".join(key_digest(key) for _, _, key in chunk),
            array("I", (position - chunk[0][1] + 1 for _, position, _ in chunk)).tobytes(),
        )
        for name in numbered
        for rows_of_file in [[r for r in rows if r[0] == name]]
        for start in range(0, len(rows_of_file), batch_size)
        for chunk in [rows_of_file[start : start + batch_size]]
    ]
    seen, expected = set(), {}
    for name, position, key in sorted(rows):
        if key in seen:
            expected.setdefault(f"/c/{name}", []).append(position)
        seen.add(key)
    found = duplicate_records(batches[::-1]) if batches else {}
    assert {path: sorted(positions) for path, positions in found.items()} == expected


@given(surveys=SURVEYS, block_chunks=st.integers(1, 4), data=st.data())
def test_the_plan_in_blocks_gives_back_every_chunk_with_the_duplicates_its_parts_hold(
    surveys, block_chunks, data
):
    chunks = assign_chunks([part_survey(*s) for s in surveys], 2, 4)
    parts = [(part.file.path, part.first_row) for chunk in chunks for part in chunk.parts]
    duplicates: dict[str, list[int]] = {}
    for path, first_row in data.draw(st.lists(st.sampled_from(parts), max_size=10)) if parts else []:
        duplicates.setdefault(path, []).append(first_row + data.draw(st.integers(1, 3)))
    with tempfile.TemporaryDirectory() as out:
        write_plan(out, {"chunks": chunks[::-1], "duplicates": duplicates}, block_chunks)
        totals = read_plan(out)
        reader = ReadChunks(out, ["/c/*"])
        reader.setup()
        read = [chunk for block in range(totals["blocks"]) for chunk in reader.process(block)]
    assert totals["chunks"] == len(chunks) and totals["blocks"] == -(-len(chunks) // block_chunks)
    assert totals["shards"] == sum(c.shards for c in chunks)
    assert [(c.index, c.first, c.shards, c.strips, c.parts) for c in read] == [
        (c.index, c.first, c.shards, c.strips, c.parts) for c in chunks
    ]
    assert sorted(d for c in read for d in c.duplicates) == sorted(
        (path, p) for path, positions in duplicates.items() for p in set(positions)
    )
    starts: dict[str, list[tuple[int, int]]] = {}  # path -> (rows before a part, its chunk)
    for chunk in read:
        for part in chunk.parts:
            starts.setdefault(part.file.path, []).append((part.first_row, chunk.index))
    for chunk in read:  # a duplicate goes with the last part of its file that starts before it
        for path, position in chunk.duplicates:
            assert max(start for start in starts[path] if start[0] < position)[1] == chunk.index


def test_a_plan_in_the_earlier_one_file_format_is_an_error_that_says_what_to_do(tmp_path):
    (tmp_path / ".work").mkdir()
    (tmp_path / ".work" / "plan.json").write_text(json.dumps({"chunks": [], "shards": 0}))
    with pytest.raises(ValueError, match="earlier format; delete it and rerun"):
        read_plan(str(tmp_path))
