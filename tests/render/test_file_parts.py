"""Large line-based files are read in parts that start at lines the first pass found: the
parts together give exactly the records of the file read whole, and the job's output is the
same bytes however a file is split."""

from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixeltext_render import sources
from pixeltext_render.pipeline import RenderJob, run
from pixeltext_render.sources import CorpusFile, FilePart, ParseFile, ReadOptions, file_parts, line_splits

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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(LINES, max_size=40),
    bom=st.booleans(),
    end=st.sampled_from(["", "\n", "\r\n"]),
    suffix=st.sampled_from(sorted(COMPRESS)),
    every=st.one_of(st.just(1), st.integers(1, 200)),
    lines_mode=st.booleans(),
)
def test_a_file_read_in_parts_gives_the_records_of_the_file_read_whole(
    tmp_path, lines, bom, end, suffix, every, lines_mode
):
    kind = ".txt" if lines_mode else ".jsonl"
    options = ReadOptions(max_chars=40, lines=lines_mode)
    raw = (("\ufeff" if bom else "") + "\n".join(lines) + end).encode()
    file = corpus_file(tmp_path, "f" + kind + suffix, COMPRESS[suffix](raw))
    splits = line_splits(file, options, every)
    parts = list(file_parts(file, options, splits))
    assert len(parts) == len(splits) + 1
    if every == 1:  # every line starts a part
        assert len(parts) == max(raw.count(b"\n") + (0 if raw.endswith(b"\n") or not raw else 1), 1)
    assert read(parts, options) == read([FilePart(file)], options)


def test_a_damaged_compressed_file_split_in_parts_keeps_what_came_before(tmp_path):
    records = [json.dumps({"id": f"r{i}", "text": f"Record {i}."}) for i in range(200)]
    whole = gzip.compress(("\n".join(records) + "\n").encode())
    file = corpus_file(tmp_path, "cut.jsonl.gz", whole[: len(whole) * 2 // 3])
    parts = list(file_parts(file, OPTIONS, line_splits(file, OPTIONS, 500)))
    assert len(parts) > 3
    found = read(parts, OPTIONS)
    assert found == read([FilePart(file)], OPTIONS)
    assert isinstance(found[-1], sources.Rejection) and "the rest is lost" in found[-1].reason
    assert [r.key for r in found[:-1]] == [f"r{i}" for i in range(len(found) - 1)]


def test_the_job_writes_the_same_bytes_however_its_files_are_split(tmp_path, articles, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    paragraphs = [p[:600] for a in articles for p in a["text"].split("\n") if len(p) > 100][:30]
    lines = [json.dumps({"text": p}) for p in paragraphs]  # no ids: keys follow from line numbers
    lines[7] = "{not json"
    (corpus / "a.jsonl").write_text("\n".join(lines) + "\n")
    (corpus / "b.jsonl.gz").write_bytes(gzip.compress("\n".join(lines[::-1]).encode()))

    def render(out: Path) -> dict[str, bytes]:
        run(RenderJob((str(corpus),), str(out), shard_samples=5), workers=1, progress=False)
        files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "plan.json")
        return {str(p.relative_to(out)): p.read_bytes() for p in files}

    whole = render(tmp_path / "whole")
    monkeypatch.setattr(sources, "SPLIT_BYTES", 4000)
    split = render(tmp_path / "split")
    plan = json.loads((tmp_path / "split" / ".parts" / "plan.json").read_text())
    assert sorted(Path(p).name for p in plan["splits"]) == ["a.jsonl", "b.jsonl.gz"]
    assert all(len(splits) >= 2 for splits in plan["splits"].values())
    assert split == whole
