"""The render job: Beam transforms, shards read back, determinism, bad input, resume."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import zstandard
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from pixeltext_render import RenderConfig, Renderer
from pixeltext_render.cli import main as cli_main
from pixeltext_render.format.sample import MEMBERS, decode_sample, encode_png
from pixeltext_render.format.tar import tar_bytes
from pixeltext_render.job import pipeline as render_pipeline
from pixeltext_render.job.corpora import default_corpus
from pixeltext_render.job.filesystems import resolve_pattern
from pixeltext_render.job.pipeline import (
    RenderJob,
    beam_options,
    build,
    build_plan,
    manifest_header,
    render_groups,
    run,
)
from pixeltext_render.job.planning import read_plan
from pixeltext_render.job.readers.base import ReadOptions
from pixeltext_render.job.readers.files import CorpusChanged, ParseFile, file_parts
from pixeltext_render.job.shards import (
    JobConflict,
    read_manifest,
    read_rejections,
    read_shard_index,
)
from pixeltext_render.job.survey import MatchCorpus

REPO = Path(__file__).resolve().parents[2]


def local_pipeline() -> BeamTestPipeline:
    return BeamTestPipeline(
        options=PipelineOptions(flags=[], runner="DirectRunner", direct_running_mode="in_memory")
    )


@pytest.fixture(scope="module")
def wiki() -> list[dict]:
    """The first 14 articles of the real default corpus, each cut to its first 5,000 characters."""
    with open(default_corpus(), encoding="utf-8") as lines:
        articles = [json.loads(line) for _, line in zip(range(14), lines, strict=False)]
    return [{"id": a["id"], "text": a["text"][:5000]} for a in articles]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, wiki) -> Path:
    """The articles as two JSON Lines files, one plain and one gzipped."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "part-a.jsonl").write_text("".join(json.dumps(a) + "\n" for a in wiki[:8]), encoding="utf-8")
    with gzip.open(folder / "part-b.jsonl.gz", "wt", encoding="utf-8") as out:
        out.writelines(json.dumps(a) + "\n" for a in wiki[8:])
    return folder


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path: what byte-identical output compares."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def job(corpus_folder: Path, out: Path, **options) -> RenderJob:
    read = options.pop("read", ReadOptions())
    return RenderJob((f"{corpus_folder}/*",), str(out), read, **options)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("shards")
    run(job(corpus, out, shard_samples=10), workers=1, progress=False)
    return out


def test_shards_read_back_with_webdataset(shards, wiki, renderer):
    manifest = read_manifest(str(shards))
    index = list(read_shard_index(str(shards)))
    names = [s["name"] for s in index]
    assert names == [f"shard-{i:06d}.tar" for i in range(manifest["index"]["shards"])] and len(names) > 1
    samples = [decode_sample(s) for s in wds.WebDataset([str(shards / n) for n in names], shardshuffle=False)]
    assert len(samples) == manifest["totals"]["strips"] == sum(s["samples"] for s in index)
    by_document: dict[str, list] = {}
    for sample in samples:
        assert sample.key == f"{sample.meta['document']}_{sample.meta['strip']:04d}"
        by_document.setdefault(sample.meta["document"], []).append(sample)
    assert set(by_document) == {a["id"] for a in wiki}
    for article in wiki:
        strips = sorted(by_document[article["id"]], key=lambda s: s.meta["strip"])
        assert [s.meta["strip"] for s in strips] == list(range(strips[0].meta["strips"]))
        assert "".join(s.text for s in strips) == article["text"]
        ids = np.concatenate([s.token_ids for s in strips])
        assert np.array_equal(ids, renderer.tokenizer.encode(article["text"]).ids)
        for s in strips:
            n = s.num_text_patches
            assert s.pixels.shape == (16, (n + 1) * 16, 3)
            assert (s.pixels[:, n * 16 :] == 0).all()  # the stored strip ends with its end patch
            assert s.token_patches.shape == (len(s.token_ids), 2) and s.token_patches.max() < n
    assert manifest["totals"]["documents"] == len(wiki) and manifest["totals"]["rejected"] == 0


def test_stored_pixels_are_the_rendered_pixels(shards, wiki, renderer):
    sample = decode_sample(next(iter(wds.WebDataset(str(shards / "shard-000000.tar"), shardshuffle=False))))
    article = next(a for a in wiki if a["id"] == sample.meta["document"])
    strip = renderer.render(article["text"]).strips[sample.meta["strip"]]
    width = sample.pixels.shape[1]
    assert np.array_equal(sample.pixels, strip.pixels[:, :width])
    assert (strip.pixels[:, width:] == 255).all()


def test_shards_are_plain_tar_files_with_the_documented_members(shards):
    with tarfile.open(shards / "shard-000000.tar") as archive:
        members = archive.getmembers()
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members)
    extensions = {m.name.split(".", 1)[1] for m in members}
    assert extensions == set(MEMBERS)
    keys = [m.name.split(".", 1)[0] for m in members]
    assert keys == sorted(keys)


def test_manifest_describes_renderer_tokenizer_and_files(shards):
    manifest = read_manifest(str(shards))
    assert manifest["render"]["fingerprint"] == Renderer().fingerprint
    assert manifest["tokenizer"]["vocab_size"] == 32000
    assert len(manifest["render"]["fonts"]) == len(RenderConfig().fonts)
    for shard in read_shard_index(str(shards)):
        data = (shards / shard["name"]).read_bytes()
        assert shard["bytes"] == len(data) and shard["sha256"] == hashlib.sha256(data).hexdigest()
    index = (shards / "shards.jsonl").read_bytes()
    assert manifest["index"]["sha256"] == hashlib.sha256(index).hexdigest()
    assert set(manifest["totals"]) >= {"documents", "strips", "characters", "tokens", "rejected"}


def test_same_bytes_with_one_or_two_workers_or_as_many_as_the_job_sizes(tmp_path, corpus, shards):
    for workers in (2, 0):  # two processes; the default: as the job sizes each pass (here: none)
        out = tmp_path / str(workers)
        run(job(corpus, out, shard_samples=10), workers=workers, progress=False)
        assert folder_bytes(out) == folder_bytes(shards)


def test_same_bytes_whether_a_group_holds_one_chunk_or_several(tmp_path, corpus, monkeypatch):
    outputs = {}
    for groups_per_worker in (1, 100):
        monkeypatch.setattr(render_pipeline, "GROUPS_PER_WORKER", groups_per_worker)
        out = tmp_path / str(groups_per_worker)
        run(job(corpus, out, shard_samples=2), workers=2, progress=False)
        outputs[groups_per_worker] = folder_bytes(out)
    assert read_plan(str(out))["chunks"] > 2  # so 2 groups held several chunks each
    assert outputs[1] == outputs[100]


def test_the_second_pass_has_groups_for_the_workers_not_for_the_corpus():
    """On Dask each group is a partition, and the whole graph's tasks are held at once."""
    for workers in (1, 2, 50):
        bound = workers * render_pipeline.GROUPS_PER_WORKER
        assert [render_groups(chunks, workers) for chunks in (1, 2, bound)] == [1, 2, bound]
        assert render_groups(bound + 1, workers) == render_groups(10**7, workers) == bound


def test_a_plan_that_names_a_file_outside_the_corpus_is_refused(tmp_path, corpus):
    """The plan lives in OUT, so it must not decide what is read: data never names a path."""
    out = tmp_path / "out"
    run(job(corpus, out, shard_samples=10), workers=1, progress=False)
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"id": "s", "text": "not part of the corpus"}) + "\n")
    block = out / ".work" / "plan-000000.jsonl"
    block.write_text(block.read_text().replace(str(corpus / "part-a.jsonl"), str(secret)))
    for finished in [out / "manifest.json", *out.glob("shard-*.tar"), *out.glob(".work/shard-*.json")]:
        finished.unlink()
    with pytest.raises(ValueError, match="no corpus pattern of this job matches"):
        run(job(corpus, out, shard_samples=10), workers=1, progress=False)
    assert not list(out.glob("shard-*.tar"))


def _five_documents(folder: Path, wiki) -> Path:
    path = folder / "docs.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in wiki[:5]), encoding="utf-8")
    return path


def _truncated(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:2]), encoding="utf-8")


def _appended(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines(keepends=True)[0]
    with path.open("a", encoding="utf-8") as stream:
        stream.write(first)  # a duplicate id the plan never saw


def _replaced_keeping_size_and_time(path: Path) -> None:
    """Other documents of the same size, the modification time put back: only the part's
    digest can tell."""
    stat = path.stat()
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join([lines[0]] * len(lines)), encoding="utf-8")
    with path.open("r+b") as stream:
        stream.truncate(stat.st_size)
        stream.seek(0, os.SEEK_END)
        stream.write(b" " * (stat.st_size - stream.tell()))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size


@pytest.mark.parametrize("change", [_truncated, _appended, _replaced_keeping_size_and_time])
def test_a_corpus_file_that_changes_after_the_plan_stops_the_job(tmp_path, wiki, change, monkeypatch):
    """Between the passes of one run, and between a killed run and its rerun: the second pass
    never renders bytes the plan did not survey, and says which file changed."""
    corpus_file = _five_documents(tmp_path, wiki)
    request = RenderJob((str(corpus_file),), str(tmp_path / "out"), shard_samples=2)
    planned = render_pipeline.read_plan

    def edit_after_planning(out):
        change(corpus_file)
        return planned(out)

    monkeypatch.setattr(render_pipeline, "read_plan", edit_after_planning)
    with pytest.raises(CorpusChanged, match=r"docs\.jsonl changed after the job planned it"):
        run(request, workers=1, progress=False)
    assert not list((tmp_path / "out").glob("shard-*.tar"))
    monkeypatch.setattr(render_pipeline, "read_plan", planned)
    with pytest.raises(CorpusChanged, match=r"docs\.jsonl"):  # the rerun, with the plan of before
        run(request, workers=1, progress=False)


def test_shards_written_before_a_change_is_seen_are_dropped(tmp_path, wiki, monkeypatch):
    """A change the size and time do not show is seen at the part's end, after some of its
    shards were written: they go, so that a rerun on the restored file renders them again."""
    corpus_file = _five_documents(tmp_path, wiki)
    original = corpus_file.read_bytes()
    out = tmp_path / "out"
    request = RenderJob((str(corpus_file),), str(out), shard_samples=2)
    planned = render_pipeline.read_plan

    def edit_after_planning(folder):
        _replaced_keeping_size_and_time(corpus_file)
        return planned(folder)

    monkeypatch.setattr(render_pipeline, "read_plan", edit_after_planning)
    with pytest.raises(CorpusChanged):
        run(request, workers=1, progress=False)
    assert not list(out.glob("shard-*.tar")) and not list(out.glob(".work/shard-*.json"))
    monkeypatch.setattr(render_pipeline, "read_plan", planned)
    stat = corpus_file.stat()
    corpus_file.write_bytes(original)
    os.utime(corpus_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    manifest = run(request, workers=1, progress=False)
    assert manifest["totals"]["documents"] == 5 and manifest["totals"]["rejected"] == 0


@pytest.mark.parametrize("out_name", ["out", "sub/out", ".hidden"])
def test_an_out_inside_the_corpus_folder_is_refused_before_anything_is_written(tmp_path, wiki, out_name):
    corpus_folder = tmp_path / "corpus"
    corpus_folder.mkdir()
    _five_documents(corpus_folder, wiki)
    out = corpus_folder / out_name
    for corpus, read in ((str(corpus_folder), ReadOptions()), (f"{corpus_folder}/**", ReadOptions("text"))):
        with pytest.raises(ValueError, match="inside the corpus"):
            run(RenderJob((corpus,), str(out), read), workers=1, progress=False)
        assert not out.exists()
    # a pattern that cannot reach OUT's files is fine
    manifest = run(RenderJob((f"{corpus_folder}/*.jsonl",), str(out)), workers=1, progress=False)
    assert manifest["totals"]["documents"] == 5 and manifest["totals"]["rejected"] == 0


def test_a_rerun_redoes_a_shard_that_is_not_what_its_record_says(tmp_path, corpus):
    out = tmp_path / "out"
    run(job(corpus, out, shard_samples=10), workers=1, progress=False)
    whole = folder_bytes(out)
    truncated, flipped = out / "shard-000000.tar", out / "shard-000001.tar"
    truncated.write_bytes(truncated.read_bytes()[:20_000])
    damaged = bytearray(flipped.read_bytes())
    damaged[len(damaged) // 2] ^= 1  # the same size, other bytes
    flipped.write_bytes(bytes(damaged))
    run(job(corpus, out, shard_samples=10), workers=1, progress=False)
    assert folder_bytes(out) == whole


def test_a_different_job_into_the_same_folder_is_refused(shards, corpus):
    with pytest.raises(JobConflict, match="shard_samples"):
        run(job(corpus, shards, shard_samples=11), workers=1, progress=False)


def test_a_rerun_on_another_cpu_architecture_is_refused(shards, corpus, monkeypatch):
    """zlib-ng's PNG bytes may differ between architectures: one OUT is finished on one."""
    monkeypatch.setattr("platform.machine", lambda: "other-architecture")
    with pytest.raises(JobConflict, match="machine"):
        run(job(corpus, shards), workers=1, progress=False)


def test_bad_records_are_rejected_and_good_ones_kept(tmp_path, wiki):
    folder = tmp_path / "dirty"
    folder.mkdir()
    lines = [
        json.dumps({"id": "good-1", "text": wiki[0]["text"]}).encode(),
        json.dumps({"id": "empty", "text": "  \n "}).encode(),
        b'{"id": "bad-utf8", "text": "caf\xe9 \xff"}',
        json.dumps({"id": "huge", "text": wiki[1]["text"] * 30}).encode(),
        json.dumps({"id": "junk", "text": bytes(range(1, 32)).decode() * 20 + "abc"}).encode(),
        json.dumps({"id": "no-field", "body": "text under another name"}).encode(),
        b'{"id": "truncated", "text": "no closing',
        json.dumps({"id": "good-2", "text": wiki[2]["text"]}).encode(),
    ]
    (folder / "records.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    pq.write_table(
        pa.table({"id": ["pq-1", "pq-2"], "text": [wiki[3]["text"], wiki[4]["text"]]}),
        folder / "good.parquet",
    )
    (folder / "broken.parquet").write_bytes(b"PAR1" + os.urandom(2000))
    out = tmp_path / "out"
    run(job(folder, out, read=ReadOptions(max_chars=100_000)), workers=1, progress=False)
    rejected = list(read_rejections(str(out)))
    by_source = {r["source"]: r["reason"] for r in rejected}
    assert set(by_source) == {f"records.jsonl:{n}" for n in (2, 3, 4, 5, 6, 7)} | {"broken.parquet"}
    assert by_source["records.jsonl:2"] == "empty text"
    assert by_source["records.jsonl:3"].startswith("invalid UTF-8")
    assert by_source["records.jsonl:4"].startswith("too long")
    assert by_source["records.jsonl:5"].startswith("binary data")
    assert by_source["records.jsonl:6"] == "missing text field 'text'"
    assert by_source["records.jsonl:7"].startswith("invalid JSON")
    assert by_source["broken.parquet"].startswith("unreadable file")
    documents = {
        json.loads(s["json"])["document"]
        for s in wds.WebDataset(str(out / "shard-000000.tar"), shardshuffle=False)
    }
    assert documents == {"good-1", "good-2", "pq-1", "pq-2"}
    assert read_manifest(str(out))["totals"]["rejected"] == 7


def test_what_normalisation_changed_is_in_each_sample_and_the_totals(tmp_path, wiki, renderer):
    texts = {
        "clean": wiki[0]["text"][:300],
        "bell": "ring\x07 the\x00 bell\x1b[0m when the soup is ready for all",  # controls: removed
        "windows": "line one\r\nline two\r\n" + wiki[1]["text"],  # line breaks: replaced; many strips
    }
    (tmp_path / "c.jsonl").write_text(
        "".join(json.dumps({"id": k, "text": t}) + "\n" for k, t in texts.items())
    )
    run(RenderJob((str(tmp_path / "c.jsonl"),), str(tmp_path / "out")), workers=1, progress=False)
    expected = {key: renderer.render(text).changed_chars for key, text in texts.items()}
    assert expected["clean"] == 0 and expected["bell"] == 3 and expected["windows"] >= 2
    samples = [json.loads(s["json"]) for s in wds.WebDataset(str(tmp_path / "out" / "shard-000000.tar"))]
    assert {m["document"] for m in samples} == set(texts)
    assert all(m["changed_chars"] == expected[m["document"]] for m in samples)
    assert max(m["strips"] for m in samples if m["document"] == "windows") > 1
    assert read_manifest(str(tmp_path / "out"))["totals"]["changed_chars"] == sum(expected.values())


class ReadFiles(beam.PTransform):
    """Files matched in the pipeline, each read whole (as the job's first pass reads them)."""

    def __init__(self, patterns: list[str], read: ReadOptions):
        super().__init__()
        self.patterns, self.read = patterns, read

    def expand(self, pipeline):
        parse = ParseFile(self.read)
        return (
            pipeline
            | MatchCorpus(self.patterns)
            | beam.FlatMap(lambda found: file_parts(found, self.read))
            | beam.FlatMap(parse.process)
        )


def test_every_input_format(tmp_path):
    folder = tmp_path / "formats"
    folder.mkdir()
    pq.write_table(
        pa.table({"doc_id": ["p1", "p2"], "body": ["Parquet one.", "Parquet two."]}), folder / "a.parquet"
    )
    (folder / "b.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress(b'{"doc_id": "z1", "body": "Zstandard line."}\n')
    )
    (folder / "c.txt").write_text("A whole file is one document.\nEven with two lines.", encoding="utf-8")
    read = ReadOptions(text_field="body", id_field="doc_id")
    with local_pipeline() as pipeline:
        records = pipeline | "Read" >> ReadFiles([resolve_pattern(str(folder))], read)
        assert_that(
            records | beam.Map(lambda d: (d.name, d.key[:4] if d.key.startswith("src-") else d.key)),
            equal_to([("a.parquet", "p1"), ("a.parquet", "p2"), ("b.jsonl.zst", "z1"), ("c.txt", "src-")]),
        )
    lines = tmp_path / "lines"
    lines.mkdir()
    (lines / "one-per-line.txt").write_text("first\n\nsecond\nthird\n", encoding="utf-8")
    with local_pipeline() as pipeline:
        read_lines = pipeline | ReadFiles([resolve_pattern(str(lines / "*.txt"))], ReadOptions(lines=True))
        assert_that(
            read_lines | beam.Map(lambda d: (d.source, d.text)),
            equal_to(
                [
                    ("one-per-line.txt:1", "first"),
                    ("one-per-line.txt:3", "second"),
                    ("one-per-line.txt:4", "third"),
                ]
            ),
        )


@pytest.mark.parametrize(
    "flags",
    [
        [
            "--runner=DataflowRunner",
            "--project=my-project",
            "--region=europe-west4",
            "--temp_location=gs://my-bucket/tmp",
            "--sdk_container_image=europe-docker.pkg.dev/my-project/pixeltext/render-worker:1",
        ],
        [
            "--runner=FlinkRunner",
            "--flink_master=localhost:8081",
            "--environment_type=DOCKER",
            "--environment_config=pixeltext-render-worker:1",
        ],
        [
            "--runner=SparkRunner",
            "--spark_master_url=spark://localhost:7077",
            "--environment_type=DOCKER",
            "--environment_config=pixeltext-render-worker:1",
        ],
        [
            "--runner=PortableRunner",
            "--job_endpoint=localhost:8099",
            "--environment_type=DOCKER",
            "--environment_config=pixeltext-render-worker:1",
        ],
    ],
)
def test_the_pipeline_graph_builds_for_cluster_runners(flags, corpus, tmp_path):
    runner = flags[0].split("=")[1]
    render_job = job(corpus, "gs://my-bucket/shards" if runner == "DataflowRunner" else tmp_path)
    survey = beam.Pipeline(options=beam_options(runner, 1, flags[1:]))
    build_plan(survey, render_job, list(render_job.corpus), workers=4)
    render = beam.Pipeline(options=beam_options(runner, 1, flags[1:]))
    header = manifest_header(render_job, Renderer())
    build(render, render_job, list(render_job.corpus), {"chunks": 3, "blocks": 1}, 4, header)
    for pipeline, stages in ((survey, {"Survey", "WritePlan"}), (render, {"RenderChunks", "Summary"})):
        proto = pipeline.to_runner_api()
        assert stages <= {t.unique_name for t in proto.components.transforms.values()}
        assert type(pipeline.runner).__name__ == runner


def test_the_worker_image_dockerfile_is_valid():
    lines = (REPO / "docker" / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    instructions = [
        line.split(None, 1) for line in lines if line.strip() and not line.lstrip().startswith("#")
    ]
    known = {"FROM", "WORKDIR", "COPY", "RUN", "ENV", "ARG", "ENTRYPOINT", "CMD", "LABEL", "USER"}
    assert all(kind in known for kind, _ in instructions)
    assert instructions[0][0] == "FROM"
    beam_pin = next(
        line
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line.startswith("apache-beam==")
    )
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert instructions[0][1] == f"apache/beam_python{python}_sdk:{beam_pin.split('==')[1]}"
    for kind, rest in instructions:
        if kind == "COPY":
            *sources, _ = rest.split()
            assert all((REPO / source).exists() for source in sources), rest
    commands = " ".join(rest for kind, rest in instructions if kind == "RUN")
    assert "pixeltext-render assets fetch" in commands and "-c constraints.txt" in commands


def test_png_and_tar_encodings_are_exact_and_deterministic():
    rng = np.random.default_rng(0)
    for image in (rng.integers(0, 256, (16, 300), np.uint8), rng.integers(0, 256, (16, 300, 3), np.uint8)):
        decoded = np.asarray(Image.open(__import__("io").BytesIO(encode_png(image))))
        assert np.array_equal(decoded, image)
    samples = [(f"k{i}", {m: bytes([i]) * (i + 1) for m in MEMBERS}) for i in range(5)]
    assert tar_bytes(samples) == tar_bytes(samples[::-1])


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_bytes(tmp_path, corpus):
    command = [
        sys.executable,
        "-m",
        "pixeltext_render.cli",
        "run",
        "--corpus",
        f"{corpus}/*",
        "--shard-samples",
        "2",
        "--workers",
        "1",
        "--quiet",
    ]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    subprocess.run([*command, "--out", str(whole)], check=True, capture_output=True)
    process = subprocess.Popen(
        [*command, "--out", str(resumed)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(list((resumed / ".work").glob("shard-*.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    written = len(list(resumed.glob("shard-*.tar")))
    total = len(list(whole.glob("shard-*.tar")))
    assert 3 <= written < total and not (resumed / "manifest.json").exists()
    subprocess.run([*command, "--out", str(resumed)], check=True, capture_output=True)
    assert sorted(p.name for p in resumed.iterdir()) == sorted(p.name for p in whole.iterdir())
    for path in (p for p in whole.rglob("*") if p.is_file()):
        relative = path.relative_to(whole)
        assert (resumed / relative).read_bytes() == path.read_bytes(), relative


@pytest.mark.slow
def test_make_render_with_no_corpus_renders_the_default_one(tmp_path):
    out = tmp_path / "default"
    result = subprocess.run(
        ["make", "-s", "render", f"OUT={out}", "WORKERS=2"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    noise = [line for line in result.stderr.splitlines() if "WARNING" in line or "INFO" in line]
    assert not noise, noise[:3]  # the progress bar on stderr, and nothing of Beam's worker processes
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("rendered 106 documents into") and "0 rejected" in summary
    assert read_manifest(str(out))["totals"]["documents"] == 106


@pytest.mark.parametrize(
    ("option", "value", "complaint"),
    [
        ("--workers", "-1", "argument --workers: must be at least 0, got -1"),
        ("--max-chars", "0", "argument --max-chars: must be at least 1, got 0"),
        ("--shard-samples", "many", "argument --shard-samples: 'many' is not a whole number"),
    ],
)
def test_an_out_of_range_number_is_refused_before_anything_is_written(
    tmp_path, corpus, capsys, option, value, complaint
):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stopped:
        cli_main(["run", "--corpus", f"{corpus}/*", "--out", str(out), option, value, "--quiet"])
    assert stopped.value.code == 2 and complaint in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ValueError, match="max_chars is 0"):
        ReadOptions(max_chars=0)
    with pytest.raises(ValueError, match="workers is -1"):
        run(RenderJob((f"{corpus}/*",), str(out)), workers=-1, progress=False)
    assert not out.exists()
