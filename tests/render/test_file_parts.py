"""The first pass cuts files into parts at lines it reads once: the parts together give exactly
the records of the file read whole, every document's key is hashed once, and the job keeps the
first record of a duplicated id in file order however the corpus is cut into chunks."""

from __future__ import annotations

import bz2
import gzip
import json
import sys
from pathlib import Path

import pytest
import webdataset as wds
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixeltext_render.job import survey as first_pass
from pixeltext_render.job.pipeline import RenderJob, run
from pixeltext_render.job.readers.base import CorpusFile, Document, FilePart, ReadOptions, Rejection
from pixeltext_render.job.readers.files import ParseFile
from pixeltext_render.job.shards import read_rejections, read_shard_index
from pixeltext_render.job.survey import ALL_SURVEYS, KeyBatch, PartSurvey, SurveyFile, key_digest

COMPRESS = {"": bytes, ".gz": gzip.compress, ".bz2": bz2.compress, ".zst": zstandard.compress}
OPTIONS = ReadOptions(max_chars=40)  # records over 160 bytes are "too long"

LINES = st.one_of(
    st.builds(lambda i, t: json.dumps({"id": f"d{i}", "text": t}), st.integers(0, 5), st.text(max_size=30)),
    st.builds(lambda t: json.dumps({"text": t}), st.text(min_size=1, max_size=60)),
    st.sampled_from(["", "   ", "{broken", "[1, 2]", '{"id": "x"}', "x" * 300, "\r"]),
)


def corpus_file(folder: Path, name: str, data: bytes) -> CorpusFile:
    path = folder / name
    path.write_bytes(data)
    return CorpusFile(str(path), name, len(data))


def read(parts: list[FilePart], options: ReadOptions) -> list:
    parse = ParseFile(options)
    return [record for part in parts for record in parse.process(part)]


def survey(
    file: CorpusFile, options: ReadOptions, part_strips: int
) -> tuple[list[PartSurvey], list[KeyBatch]]:
    """The first pass over one file, every document estimated at one strip per 10 characters."""
    found = list(SurveyFile(options, lambda text: 1 + len(text) // 10, part_strips).process(file))
    parts = [s for group, s in found if group == ALL_SURVEYS]
    return parts, [batch for group, batch in found if group != ALL_SURVEYS]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(LINES, max_size=40),
    bom=st.booleans(),
    end=st.sampled_from(["", "\n", "\r\n"]),
    suffix=st.sampled_from(sorted(COMPRESS)),
    part_strips=st.integers(1, 12),
    least_bytes=st.sampled_from([0, 50]),
    lines_mode=st.booleans(),
)
def test_a_file_cut_in_parts_gives_the_records_of_the_file_read_whole(
    tmp_path, lines, bom, end, suffix, part_strips, least_bytes, lines_mode
):
    kind = ".txt" if lines_mode else ".jsonl"
    options = ReadOptions(max_chars=40, lines=lines_mode)
    raw = (("\ufeff" if bom else "") + "\n".join(lines) + end).encode()
    file = corpus_file(tmp_path, "f" + kind + suffix, COMPRESS[suffix](raw))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(first_pass, "SPLIT_BYTES", least_bytes)
        parts, batches = survey(file, options, part_strips)
    whole = read([FilePart(file)], options)
    assert read([s.part for s in parts], options) == whole
    documents = [r for r in whole if isinstance(r, Document)]
    estimates = [1 + len(d.text) // 10 for d in documents]
    assert sum(s.strips for s in parts) == sum(estimates)
    held = [[r for r in read([s.part], options) if isinstance(r, Document)] for s in parts]
    for survey_, next_documents in zip(parts, held[1:], strict=False):  # cut only where full
        assert next_documents and survey_.strips + 1 + len(next_documents[0].text) // 10 > part_strips
    if suffix and least_bytes:  # a compressed file's parts hold at least SPLIT_BYTES
        assert all(s.part.end is None or s.part.end - s.part.start >= least_bytes for s in parts)
    else:  # a part over its strips holds one document
        assert all(s.strips <= part_strips or len(docs) == 1 for s, docs in zip(parts, held, strict=True))
    hashed = sorted(
        (
            batch.digests[i * 12 : (i + 1) * 12],
            batch.first_row + int.from_bytes(batch.positions[i * 4 : i * 4 + 4], sys.byteorder),
        )
        for batch in batches
        for i in range(len(batch.positions) // 4)
    )
    assert hashed == sorted((key_digest(d.key), d.position) for d in documents)


def test_a_damaged_compressed_file_cut_in_parts_keeps_what_came_before(tmp_path, monkeypatch):
    records = [json.dumps({"id": f"r{i}", "text": f"Record {i}."}) for i in range(200)]
    whole = gzip.compress(("\n".join(records) + "\n").encode())
    file = corpus_file(tmp_path, "cut.jsonl.gz", whole[: len(whole) * 2 // 3])
    monkeypatch.setattr(first_pass, "SPLIT_BYTES", 500)
    parts, _ = survey(file, OPTIONS, part_strips=5)
    assert len(parts) > 3
    found = read([s.part for s in parts], OPTIONS)
    assert found == read([FilePart(file)], OPTIONS)
    assert isinstance(found[-1], Rejection) and "the rest is lost" in found[-1].reason
    assert [r.key for r in found[:-1]] == [f"r{i}" for i in range(len(found) - 1)]


def test_duplicate_ids_keep_the_first_record_in_file_order_across_chunks(tmp_path, articles, monkeypatch):
    """Three files cut into many one-shard chunks; ids repeat within and across files: the first
    record of an id in (file name, line) order is rendered, every later one is rejected, and the
    shards hold the documents in file order."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    paragraphs = [p[:300] for a in articles for p in a["text"].split("\n") if len(p) > 100][:24]
    ids = [f"p{i % 9}" for i in range(24)]  # p0..p8 repeat
    files = {"c.jsonl": range(0, 8), "a.jsonl.gz": range(8, 16), "b.jsonl": range(16, 24)}
    for name, rows in files.items():
        data = "".join(json.dumps({"id": ids[i], "text": paragraphs[i]}) + "\n" for i in rows).encode()
        (corpus / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    monkeypatch.setattr(first_pass, "SPLIT_BYTES", 0)
    run(RenderJob((str(corpus),), str(tmp_path / "out"), shard_samples=1), workers=1, progress=False)
    order = [(name, line) for name in sorted(files) for line in range(1, 9)]
    rows = [i for name in sorted(files) for i in files[name]]
    first = {}
    for (name, line), i in zip(order, rows, strict=True):
        first.setdefault(ids[i], f"{name}:{line}")
    shard_of = {}  # source -> index of the shard holding it
    index = list(read_shard_index(str(tmp_path / "out")))
    assert len(index) > 3
    for number, shard in enumerate(index):
        for sample in wds.WebDataset(
            str(tmp_path / "out" / shard["name"]), shardshuffle=False, empty_check=False
        ):
            meta = json.loads(sample["json"])
            assert shard_of.setdefault(meta["source"], number) == number
    assert sorted(shard_of) == sorted(first.values())
    in_file_order = sorted(shard_of, key=lambda source: order.index(tuple_of(source)))
    assert [shard_of[s] for s in in_file_order] == sorted(shard_of.values())
    rejected = {r["source"]: r["reason"] for r in read_rejections(str(tmp_path / "out"))}
    assert set(rejected) == {f"{n}:{line}" for n, line in order} - set(first.values())
    assert all(reason.startswith("duplicate document key") for reason in rejected.values())


def tuple_of(source: str) -> tuple[str, int]:
    name, line = source.rsplit(":", 1)
    return name, int(line)
