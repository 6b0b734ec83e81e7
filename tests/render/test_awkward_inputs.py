"""Corpora that once hung, crashed or lost documents: every input file ends as documents in
shards or lines in the rejection parts, and nothing loops."""

from __future__ import annotations

import bz2
import functools
import gzip
import json
import lzma
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixeltext_render import RenderConfig, Renderer
from pixeltext_render.job.pipeline import RenderJob, run
from pixeltext_render.job.readers.base import ReadOptions
from pixeltext_render.job.shards import read_manifest, read_rejections, read_shard_index
from pixeltext_render.text import normalize_text


def rendered(out: Path) -> dict[str, dict]:
    """Document key -> the metadata of its first strip, over every shard."""
    names = [str(out / s["name"]) for s in read_shard_index(str(out))]
    found = {}
    for sample in wds.WebDataset(names, shardshuffle=False, empty_check=False):
        meta = json.loads(sample["json"])
        found.setdefault(meta["document"], meta)
    return found


def render_corpus(corpus: list[str], out: Path, **read) -> tuple[dict[str, dict], dict[str, str]]:
    run(RenderJob(tuple(corpus), str(out), ReadOptions(**read)), workers=1, progress=False)
    rejected = {r["source"]: r["reason"] for r in read_rejections(str(out))}
    return rendered(out), rejected


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


RECORDS = [{"id": f"r{i:03d}", "text": f"Record number {i} of a compressed file."} for i in range(400)]
COMPRESSORS = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zst": lambda data: zstandard.ZstdCompressor().compress(data),
    "deflate": zlib.compress,
}


def test_awkward_names_folders_and_compression_are_all_read(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "A").mkdir(parents=True)
    (corpus / "B").mkdir()
    (corpus / "A" / "same.txt").write_text("The first file of this name.")
    (corpus / "B" / "same.txt").write_text("The second file of this name.")
    (corpus / "A" / "data[1].jsonl").write_bytes(jsonl([{"id": "bracketed", "text": "A literal name."}]))
    (corpus / "A" / "unicode.jsonl.xz").write_bytes(lzma.compress(jsonl([{"id": "xz", "text": "Read."}])))
    (corpus / "A").joinpath(b"bad\xffname.txt".decode("utf-8", "surrogateescape")).write_text("Odd name.")
    folder = corpus / "nested"
    (folder / "deeper").mkdir(parents=True)
    (folder / "deeper" / "inside.jsonl").write_bytes(jsonl([{"id": "deep", "text": "Found in a folder."}]))
    patterns = [
        str(corpus / "A" / "same.txt"),
        str(corpus / "B" / "*.txt"),
        str(corpus / "A" / "data[1].jsonl"),
    ]
    patterns += [str(corpus / "A" / "*.xz"), str(corpus / "A" / "bad*"), str(folder)]
    documents, rejected = render_corpus(patterns, tmp_path / "out")
    assert rejected == {}
    sources = sorted(meta["source"] for meta in documents.values())
    assert sources == [
        "A/bad\\xffname.txt:1",
        "A/data[1].jsonl:1",
        "A/same.txt:1",
        "A/unicode.jsonl.xz:1",
        "B/same.txt:1",
        "nested/deeper/inside.jsonl:1",
    ]


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
@pytest.mark.parametrize("layout", ["jsonl", "lines", "whole"])
def test_a_truncated_compressed_file_keeps_what_came_before_and_says_what_was_lost(tmp_path, kind, layout):
    if layout == "jsonl":
        name, data, read = f"records.jsonl.{kind}", jsonl(RECORDS), {}
    else:
        name = f"text.txt.{kind}"
        data, read = "".join(r["text"] + "\n" for r in RECORDS).encode(), {"lines": layout == "lines"}
    whole = COMPRESSORS[kind](data)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(whole[: len(whole) * 2 // 3])
    documents, rejected = render_corpus([str(tmp_path / "in")], tmp_path / "out", **read)
    assert list(rejected) == [name] and "unreadable file" in rejected[name]
    if layout == "whole":
        assert documents == {}  # one document, cut: not rendered
        return
    positions = sorted(int(meta["source"].rsplit(":", 1)[1]) for meta in documents.values())
    assert positions == list(range(1, len(positions) + 1)) and len(positions) < len(RECORDS)
    where = f"after record {len(positions)}" if positions else "before any record"
    assert rejected[name].startswith(f"unreadable file {where}")


def test_every_record_is_accounted_for_when_records_are_odd(tmp_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    records = [{"id": f"d{i}", "text": f"Document {i}."} for i in range(1, 13)]
    records[1] = {"id": "bad\ud800", "text": "An id with a lone surrogate."}
    records[9] = {"id": "d9", "text": "The same id as line 9, so line 10 is the duplicate."}
    records[4] = {"id": "blank", "text": "     \u0000     "}
    (corpus / "odd.jsonl").write_bytes(b"\xef\xbb\xbf" + jsonl(records))
    (corpus / "bom-only.txt").write_bytes(b"\xef\xbb\xbf")
    pq.write_table(
        pa.table({"id": [f"p{i}" for i in range(50)], "text": [f"Row {i}." for i in range(50)]}),
        corpus / "groups.parquet",
        row_group_size=7,
    )
    documents, rejected = render_corpus([str(corpus)], tmp_path / "out")
    assert set(rejected) == {"odd.jsonl:5", "odd.jsonl:10", "bom-only.txt:1"}
    assert rejected["odd.jsonl:10"].startswith("duplicate document key")
    assert rejected["odd.jsonl:5"].startswith("empty text after normalisation")
    assert rejected["bom-only.txt:1"] == "empty text"
    assert documents["d9"]["source"] == "odd.jsonl:9" and documents["d1"]["source"] == "odd.jsonl:1"
    kept = {meta["source"] for meta in documents.values()}
    assert {f"odd.jsonl:{n}" for n in (1, 2, 3, 4, 6, 7, 8, 9, 11, 12)} <= kept
    assert {meta["source"] for key, meta in documents.items() if key.startswith("p")} == {
        f"groups.parquet:{n}" for n in range(1, 51)
    }
    totals = read_manifest(str(tmp_path / "out"))["totals"]
    assert totals["documents"] == len(documents) == 10 + 50 and totals["rejected"] == 3


def test_a_job_with_no_room_in_a_shard_is_refused():
    with pytest.raises(ValueError, match="shard_samples"):
        RenderJob(("x.txt",), "out", shard_samples=0)


AWKWARD = st.sampled_from(
    [
        "a", "Z", " ", "\n", "\t", "\u00a0", "\u200b", "\u200d", "\u200e", "\u202e", "\u2066",
        "\u0301", "\u0308", "\u064b", "\u0627", "\u05d0", "(", ")", "[", "]", "\u00e9", "\u4e2d",
        "\u0e01", "\u0915\u094d", "\U0001f600", "\U0001f3fb", "\ufe0f", "\x00", "\x07", "\r",
        "\ud800", "\ufffd", "\U000e0001", "\U0001f1fa",
    ]
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(AWKWARD, st.text(max_size=3)), min_size=0, max_size=300).map("".join))
def test_any_text_renders_to_strips_that_hold_exactly_it(text):
    """Whatever the characters, rendering ends, strips fit, and the strips' texts and tokens
    are the normalised text's."""
    renderer = _narrow()
    document = renderer.render(text)
    normalised = normalize_text(text).text
    assert "".join(s.text for s in document.strips) == normalised
    assert len(document.token_ids) == len(normalised.encode())
    for strip in document.strips:
        assert strip.num_text_patches <= renderer.config.max_patches - 1
        assert strip.pixels.shape == (16, 16 * renderer.config.max_patches, 3)


@functools.cache
def _narrow() -> Renderer:
    return Renderer(RenderConfig(max_patches=24), tokenizer="bytes")
