"""The render job: an Apache Beam pipeline from corpus files to WebDataset shards.

    SurveyCorpus    (first pass) patterns -> files (matched by the workers) -> each read
                    once: cut into parts, documents' strips estimated, keys hashed
    WritePlan       parts -> chunks that own consecutive shard numbers; key hashes ->
                    duplicate records; both -> the plan (``planning``)
    RenderChunks    (second pass) chunks spread over a few groups per worker (not for one
                    worker in this process, ``in_process``); each chunk read, its documents
                    rendered in file order and written into its shards, one shard at a
                    time, each with its record (counts and rejections)
    WriteSummary    finished shards in blocks -> index lines and rejections -> shards.jsonl, manifest.json

No text crosses a shuffle: only file parts, 16 bytes per document (key hash, position) in the
first pass, and shard records do. Each shard depends on nothing but the plan and its own
documents, so the output is the same whatever the runner or the number of workers, a worker's
memory does not grow with the corpus, and a rerun skips shards that are already complete.

The graph of each pass is one chain to one final sink, every output comes from ``process``
(none from ``finish_bundle``), with no tagged outputs and no metrics: Beam's DaskRunner
computes only the last sink, drops ``finish_bundle`` outputs, and neither separates tags nor
reports metrics.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import math
import os
import platform
import re
import shlex
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner.fn_runner import ExtendedProvisionInfo, FnApiRunner
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.transforms.environments import SubprocessSDKEnvironment

from pixeltext_render.config import RenderConfig
from pixeltext_render.format.folder import BLOCK_SHARDS, OUTPUT_NAMES, plan_name, shard_name
from pixeltext_render.format.folder import manifest_header as folder_header
from pixeltext_render.format.sample import encode_strip, sample_key
from pixeltext_render.format.tar import tar_bytes
from pixeltext_render.job.dask_cluster import DASK_RUNNER, dask_cluster
from pixeltext_render.job.filesystems import BEAM_FILES, resolve_pattern
from pixeltext_render.job.grouping import CombineAll, GroupInto
from pixeltext_render.job.planning import Chunk, ReadChunks, WritePlan, read_plan
from pixeltext_render.job.readers.base import Document, ReadOptions, Rejection
from pixeltext_render.job.readers.files import CorpusChanged, ParseFile
from pixeltext_render.job.shards import (
    FinishedShard,
    add_totals,
    claim,
    discard_shards,
    finished_shard,
    join,
    read_manifest,
    write_block,
    write_shard,
    write_summary,
)
from pixeltext_render.job.survey import SurveyCorpus
from pixeltext_render.renderer import RenderedDocument, Renderer
from pixeltext_render.tokenizers import tokenizer_record

LOCAL_RUNNERS = ("DirectRunner",)
RUNNER_NAMES = {"DaskRunner": DASK_RUNNER}  # runners Beam knows only by their full name
DASK_PARTITION_FLAGS = ("--dask_partition_size", "--dask_npartitions")
SHARDS_PER_CHUNK = 4  # a line-based file is cut into parts of about this many shards' strips
GROUPS_PER_WORKER = 8  # groups of chunks per worker in the second pass (``render_groups``)
CLUSTER_WORKERS = 1000  # workers to spread the work for on Dataflow, Flink or Spark, unless given
# A local job with the default workers runs a pass in this process when it takes one worker less
# time than starting worker processes, about 2 s (``pass_workers``): 500 strips at 250 strips/s
# (cold, ``docs/render-job.md``); the first pass reads plain JSON Lines at about 100 MB/s, and
# its bound leaves room for compressed files (several times slower a stored byte).
SMALL_CORPUS_BYTES = 32 << 20
SMALL_RENDER_STRIPS = 500
SIZED_FILES = 1000  # files the launcher lists to size a local first pass; more: not small


@dataclass(frozen=True)
class RenderJob:
    corpus: tuple[str, ...]  # file paths or patterns, any Beam filesystem
    out: str
    read: ReadOptions = field(default_factory=ReadOptions)
    config: RenderConfig = field(default_factory=RenderConfig)
    tokenizer: str = "sentencepiece"
    shard_samples: int = 1000

    def __post_init__(self):
        if self.shard_samples < 1:
            raise ValueError(f"shard_samples is {self.shard_samples}: a shard holds at least 1 strip")
        if not self.corpus:
            raise ValueError("no corpus: give at least one file, folder or pattern")

    def identity(self, renderer: Renderer) -> dict[str, Any]:
        """What decides the output: a rerun into the same OUT must have the same identity."""
        return {
            "corpus": list(self.corpus),
            "read": asdict(self.read),
            "render_fingerprint": renderer.fingerprint,
            "tokenizer": self.tokenizer,
            "tokenizer_fingerprint": renderer.tokenizer.fingerprint,
            "shard_samples": self.shard_samples,
            # zlib-ng picks code paths by CPU, and its output is known to differ between x86-64
            # and aarch64: the same pixels, other PNG bytes. A rerun finishes on one architecture.
            "machine": platform.machine(),
        }


# Ems a character takes, on average: half an em when drawn continuously; the structured
# strategies start units on patch boundaries and take more (measured on 20 Wikipedia articles:
# words 19%, bigrams 27%, mono 37% more patches)
EMS_PER_CHARACTER = {"continuous": 0.5, "words": 0.6, "bigrams": 0.64, "mono": 0.69}


def estimated_strips(characters: int, config: RenderConfig) -> int:
    """Strips a text of this length needs (what the plan sizes shards by)."""
    capacity = config.patch_size * (config.max_patches - 1) - config.margin_left - config.margin_right
    ems = EMS_PER_CHARACTER[config.strategy]
    return max(1, math.ceil(characters * ems * config.font_size / capacity))


@dataclass(frozen=True)
class _TextStrips:
    """A document's text -> its estimated strips (a picklable function of the config)."""

    config: RenderConfig

    def __call__(self, text: str) -> int:
        return estimated_strips(len(text), self.config)


@functools.lru_cache(maxsize=1)
def process_renderer(config: RenderConfig, tokenizer: str) -> Renderer:
    """One renderer per worker process, its caches warm from shard to shard: Beam's DaskRunner
    sets a DoFn up for every partition, not once per process."""
    return Renderer(config, tokenizer)


class RenderChunk(beam.DoFn):
    """Reads one chunk's parts and renders their documents, in file order, into the chunk's
    shards: one shard's samples are held at a time. A shard already written is not rendered
    again; a chunk whose shards are all written is not read."""

    def __init__(self, job: RenderJob, progress_folder: str | None = None):
        self.job = job
        self.progress_folder = progress_folder

    def setup(self) -> None:
        self.renderer = process_renderer(self.job.config, self.job.tokenizer)
        self.progress = _ProgressFile(self.progress_folder)
        # What the worker holds now (Beam's modules alone are over 100,000 objects, then fonts
        # and the tokenizer) lives as long as the worker: left out of the garbage collector's
        # full passes, which rendering's many small objects set off, cold rendering takes 15% less.
        gc.freeze()

    def process(self, chunk: Chunk) -> Iterator[FinishedShard]:
        indices = range(chunk.first, chunk.first + chunk.shards)
        done = {index: finished_shard(self.job.out, index) for index in indices}
        parse = ParseFile(self.job.read, BEAM_FILES)
        shard = _ShardInProgress(chunk.first, done[chunk.first])
        strips_before = 0  # estimated, of the chunk's documents so far
        to_read = () if all(done.values()) else chunk.parts  # (nothing left to write: not read)
        for file_part in to_read:
            written = []  # shards finished while this part is read: dropped if it changed
            try:
                for record in parse.process(file_part):
                    if isinstance(record, Document):
                        target = chunk.first + _shard_within(strips_before, chunk)
                        strips_before += estimated_strips(len(record.text), self.job.config)
                        while shard.index < target:
                            written.append(shard.index)
                            yield self._finish(shard)
                            shard = _ShardInProgress(shard.index + 1, done[shard.index + 1])
                        if shard.done is None:
                            duplicate = (file_part.file.path, record.position) in chunk.duplicates
                            self._add(record, shard, duplicate)
                    elif shard.done is None:
                        shard.record.rejected.append(asdict(record))
            except CorpusChanged:
                discard_shards(self.job.out, [index for index in written if done[index] is None])
                raise
        yield self._finish(shard)
        for index in range(shard.index + 1, indices.stop):
            yield self._finish(_ShardInProgress(index, done[index]))

    def _add(self, doc: Document, shard: _ShardInProgress, duplicate: bool) -> None:
        rendered = self._render(doc, shard.record, duplicate)
        strips = rendered.strips if rendered else []
        for i, strip in enumerate(strips):
            members = encode_strip(
                strip, doc.key, i, len(strips), doc.source, self.job.config.patch_size, rendered.changed_chars
            )
            shard.samples.append((sample_key(doc.key, i), members))
        self.progress.add(1 if strips else 0, len(strips))

    def _finish(self, shard: _ShardInProgress) -> FinishedShard:
        if shard.done is not None:
            self.progress.add(shard.done.documents, shard.done.samples)
            return shard.done
        shard.record.samples = len(shard.samples)
        return write_shard(self.job.out, shard.record, tar_bytes(shard.samples))

    def _render(self, doc: Document, record: FinishedShard, duplicate: bool) -> RenderedDocument | None:
        """The rendered document, or None with the reason recorded in ``record.rejected``."""
        reason = None
        if duplicate:
            reason = "duplicate document key (an earlier record has the same id)"
        else:
            try:
                rendered = self.renderer.render(doc.text)
            except Exception as error:
                reason = f"render failed: {error!r}"
            else:
                if not rendered.text.strip():
                    reason = "empty text after normalisation (only whitespace and control characters)"
                elif any(strip.overflow for strip in rendered.strips):
                    reason = "a single unbreakable unit is wider than a strip; it would be cut"
        if reason:
            record.rejected.append(asdict(Rejection(doc.key, doc.source, reason)))
            return None
        record.documents += 1
        record.characters += len(rendered.text)
        record.tokens += int(sum(len(s.token_ids) for s in rendered.strips))
        record.missing_glyphs += rendered.missing_glyphs
        record.changed_chars += rendered.changed_chars
        return rendered

    def teardown(self) -> None:
        if getattr(self, "progress", None):
            self.progress.flush()


def _shard_within(strips_before: int, chunk: Chunk) -> int:
    """The shard of the chunk (0, 1, ...) a document starting this far into it goes to."""
    if not chunk.strips:
        return 0
    return min(strips_before * chunk.shards // chunk.strips, chunk.shards - 1)


class _ShardInProgress:
    """A shard being filled: its record and samples, or the record a previous run finished."""

    def __init__(self, index: int, done: FinishedShard | None):
        self.index, self.done = index, done
        self.record = FinishedShard(index, shard_name(index))
        self.samples: list[tuple[str, dict[str, bytes]]] = []


def render_groups(chunks: int, workers: int) -> int:
    """How many groups the second pass spreads the chunks over: a few per worker, so that a
    worker that finishes early takes another while the rest finish theirs, and no more.

    Each group is a partition on Dask, and Beam's DaskRunner hands the whole graph to the
    scheduler at once, whose tasks and their records (in the scheduler and in the workers)
    grow with the partitions: bounded by the workers, they do not grow with the corpus."""
    return max(1, min(chunks, workers * GROUPS_PER_WORKER))


class RenderChunks(beam.PTransform):
    """The plan's blocks -> their chunks (of files the job's resolved ``patterns`` match),
    spread round-robin over ``groups`` groups (a worker, a Dask partition each at a time) ->
    finished shards. Not spread when ``spread`` is false (``SurveyCorpus``)."""

    def __init__(
        self,
        job: RenderJob,
        patterns: list[str],
        blocks: int,
        groups: int,
        progress_folder: str | None,
        spread: bool = True,
    ):
        super().__init__()
        self.job, self.patterns, self.blocks, self.groups = job, patterns, blocks, groups
        self.progress_folder, self.spread = progress_folder, spread

    def expand(self, pipeline):
        groups = self.groups
        chunks = (
            pipeline
            | "Blocks" >> beam.Create(range(self.blocks))
            | "Chunks" >> beam.ParDo(ReadChunks(self.job.out, self.patterns))
        )
        if self.spread:
            chunks = (
                chunks
                | "Spread" >> beam.Map(lambda chunk: (chunk.index % groups, chunk))
                | "Group" >> GroupInto(groups)
                | "Chunk" >> beam.FlatMapTuple(lambda _, chunks: chunks)
            )
        return chunks | "Render" >> beam.ParDo(RenderChunk(self.job, self.progress_folder))


class WriteSummary(beam.PTransform):
    """Finished shards -> blocks of index lines and rejections (written by the workers) -> their
    totals, summed -> shards.jsonl and manifest.json."""

    def __init__(self, out: str, header: dict[str, Any]):
        super().__init__()
        self.out, self.header = out, header

    def expand(self, finished):
        out, header = self.out, self.header
        return (
            finished
            | "Block" >> beam.Map(lambda shard: (shard.index // BLOCK_SHARDS, shard))
            | "Gather" >> beam.GroupByKey()
            | "WriteBlock" >> beam.MapTuple(lambda block, members: write_block(out, block, list(members)))
            | "Total" >> CombineAll(add_totals)  # (a block at least)
            | "Write" >> beam.Map(lambda totals: write_summary(out, header, totals))
        )


def build_plan(
    pipeline: beam.Pipeline, job: RenderJob, patterns: list[str], workers: int, spread: bool = True
):
    """The first pass: the corpus -> the plan; ``spread`` as in ``SurveyCorpus``."""
    part_strips = job.shard_samples * SHARDS_PER_CHUNK
    estimate = _TextStrips(job.config)
    survey = SurveyCorpus(patterns, job.read, estimate, part_strips, buckets=workers, spread=spread)
    surveyed = pipeline | "Survey" >> survey
    return surveyed | "WritePlan" >> WritePlan(job.out, job.shard_samples, part_strips)


def build(
    pipeline: beam.Pipeline,
    job: RenderJob,
    patterns: list[str],
    plan: dict[str, int],
    workers: int,
    header: dict,
    progress_folder: str | None = None,
    spread: bool = True,
):
    """The second pass: the plan (its totals) -> shards, the index and the manifest; ``spread``
    as in ``RenderChunks``."""
    groups = render_groups(plan["chunks"], workers)
    render = RenderChunks(job, patterns, plan["blocks"], groups, progress_folder, spread)
    finished = pipeline | "RenderChunks" >> render
    return finished | "Summary" >> WriteSummary(job.out, header)


def manifest_header(job: RenderJob, renderer: Renderer) -> dict[str, Any]:
    render = {**renderer.describe(), "fingerprint": renderer.fingerprint}
    return folder_header(job.identity(renderer), render, tokenizer_record(renderer.tokenizer))


def beam_options(runner: str, workers: int, beam_args: list[str]) -> PipelineOptions:
    """Beam options; a local run's workers are processes ``local_runner`` starts.

    Construction-time type checking is off: the transforms carry no type hints for it to use,
    and it costs about half a second per pass (a third of a small job's fixed cost). On Dask,
    each created value is a partition of its own unless the user says otherwise: the job's
    groupings are then spread over as many partitions as they have groups (``GroupInto``)."""
    extra: dict[str, Any] = {"pipeline_type_check": False}
    if runner == DASK_RUNNER and not any(a.startswith(DASK_PARTITION_FLAGS) for a in beam_args):
        beam_args = [*beam_args, "--dask_partition_size=1"]
    if runner in LOCAL_RUNNERS:
        extra["direct_num_workers"] = workers
        extra["default_sdk_harness_log_level"] = "ERROR"  # worker processes: no chatter
    return PipelineOptions(flags=list(beam_args), runner=runner, **extra)


def local_runner(options: PipelineOptions) -> FnApiRunner:
    """A local run's runner: Beam's FnApiRunner, what the DirectRunner runs a batch pipeline on,
    named so that it runs the same on every machine. (The DirectRunner first tries its Prism
    runner, a binary it downloads from GitHub: online the job would run on another engine, and
    offline each pass pays about 0.2 s for the attempt.) With more than one worker, each is a
    process started by ``worker_command``, in the mode Beam calls multi-processing."""
    workers = options.view_as(DirectOptions).direct_num_workers
    processes = SubprocessSDKEnvironment.from_command_string(worker_command()) if workers > 1 else None
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return FnApiRunner(default_environment=processes, provision_info=provision)


_WORKER_CODE = """\
import logging, sys
handler = logging.StreamHandler()
handler.setLevel({level})
handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
logging.getLogger().addHandler(handler)
from apache_beam.runners.worker import sdk_worker_main
sdk_worker_main.main(sys.argv)
"""


def worker_command() -> str:
    """The shell command of a local worker process: Beam's SDK harness, its stderr showing what
    the launcher's does (its logging level: errors only from the command line). Beam's own
    command sets up no logging before it imports Beam, whose BigQuery module then warns that
    apitools is missing; that warning sets up a stderr handler of no level, through which the
    harness's start-up lines go too ("Logging handler created.")."""
    level = logging.getLogger().getEffectiveLevel()
    return shlex.join([sys.executable, "-c", _WORKER_CODE.format(level=level)])


def pass_workers(workers: int, units: int, small: bool) -> int:
    """Local worker processes for a pass of ``units`` pieces of work, each one worker's (files in
    the first pass, chunks in the second): no more than the pieces, and one, in this process,
    for a small pass. Each worker process imports Beam and builds a renderer, about 2 s a pass
    on 2 cores, more than a small pass takes in this process; the outputs do not depend on it."""
    return 1 if small else max(1, min(workers, units))


def survey_workers(patterns: list[str], workers: int) -> int:
    """``pass_workers`` for the first pass: the files the patterns match, listed here up to
    ``SIZED_FILES`` of them (the workers match them again in the pass)."""
    listed = FileSystems.match(patterns, limits=[SIZED_FILES + 1] * len(patterns))
    found = [metadata for result in listed for metadata in result.metadata_list]
    if len(found) > SIZED_FILES:
        return workers
    small = sum(metadata.size_in_bytes for metadata in found) < SMALL_CORPUS_BYTES
    return pass_workers(workers, len(found), small)


def in_process(runner: str, workers: int) -> bool:
    """Whether a pass runs in this process, on one worker (``local_runner``): its work is not
    spread over groups."""
    return runner in LOCAL_RUNNERS and workers == 1


def render_workers(plan: dict[str, int], workers: int) -> int:
    """``pass_workers`` for the second pass, from the plan's chunks and estimated strips."""
    return pass_workers(workers, plan["chunks"], plan["strips"] < SMALL_RENDER_STRIPS)


def run(
    job: RenderJob,
    runner: str = "DirectRunner",
    workers: int = 0,
    beam_args: list[str] = (),
    progress: bool = True,
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Run the job to completion and return its manifest. ``DaskRunner`` runs on the cluster
    at ``dask_address``, or on a local cluster of ``workers`` processes made for the job.

    ``workers`` is also what the work is spread for: file groups in the first pass, chunk
    groups in the second. Default: the cores here, fewer for a pass with less work than that
    (``pass_workers``), a running Dask cluster's worker threads, or ``CLUSTER_WORKERS`` on other
    runners (whose size the launcher cannot see)."""
    if workers < 0:
        raise ValueError(f"workers is {workers}: give 0 (the default) or a positive number")
    # fails early on missing fonts or tokenizer; a worker in this process (local, one worker) reuses it
    renderer = process_renderer(job.config, job.tokenizer)
    patterns = [resolve_pattern(p) for p in job.corpus]  # one matching nothing fails before OUT is touched
    refuse_output_in_corpus(patterns, job.out)
    runner = RUNNER_NAMES.get(runner, runner)
    beam_args = list(beam_args)
    local_workers = workers or os.cpu_count() or 1
    with ExitStack() as stack:
        if runner == DASK_RUNNER:  # before anything is written: the cluster may not answer
            address, threads = stack.enter_context(dask_cluster(dask_address, local_workers))
            beam_args.append(f"--dask_client_address={address}")
            workers = workers or threads  # a running cluster's size, not this machine's
        elif runner not in LOCAL_RUNNERS:
            workers = workers or CLUSTER_WORKERS
        sized = runner in LOCAL_RUNNERS and not workers  # (each pass: ``pass_workers``)
        workers = workers or local_workers
        claim(job.out, job.identity(renderer))
        local = progress and (runner in LOCAL_RUNNERS or (runner == DASK_RUNNER and not dask_address))
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="pixeltext-progress-"))
        plan_file = join(job.out, plan_name())
        if not FileSystems.exists(plan_file):  # a rerun has it
            first = survey_workers(patterns, workers) if sized else workers
            options = beam_options(runner, first, beam_args)
            spread = not in_process(runner, first)
            _run_pipeline(options, stack, lambda pipeline: build_plan(pipeline, job, patterns, first, spread))
        if not FileSystems.exists(plan_file):  # (the files went between matching and reading)
            raise FileNotFoundError(f"the corpus {list(job.corpus)} matched no file when the job read it")
        plan = read_plan(job.out)
        if local:
            stack.callback(_ProgressDisplay(folder).stop)
        header = manifest_header(job, renderer)
        progress_folder = folder if local else None
        second = render_workers(plan, workers) if sized else workers
        spread = not in_process(runner, second)
        _run_pipeline(
            beam_options(runner, second, beam_args),
            stack,
            lambda pipeline: build(pipeline, job, patterns, plan, second, header, progress_folder, spread),
        )
    return read_manifest(job.out)


def refuse_output_in_corpus(patterns: list[str], out: str) -> None:
    """Refuse an OUT whose files a corpus pattern matches: the job would read its own output
    (a manifest as a document, shards as rejections) on a rerun or in its second pass."""

    def absolute(path: str) -> str:
        return path if "://" in path else os.path.abspath(path)

    written = [FileSystems.join(absolute(out), *name.split("/")) for name in OUTPUT_NAMES]
    for pattern in patterns:
        matches = re.compile(FileSystem.translate_pattern(absolute(pattern))).match
        read_back = next((path for path in written if matches(path)), None)
        if read_back:
            raise ValueError(
                f"--out {out} is inside the corpus: {pattern!r} matches the job's own output "
                f"({read_back}). Put --out outside the corpus folder, or name the corpus files "
                "with a narrower pattern"
            )


def _run_pipeline(options: PipelineOptions, stack: ExitStack, construct) -> None:
    """Build a pipeline with ``construct`` and run it to the end."""
    local = options.view_as(StandardOptions).runner in LOCAL_RUNNERS
    pipeline = beam.Pipeline(runner=local_runner(options) if local else None, options=options)
    construct(pipeline)
    result = pipeline.run()
    client = getattr(result, "client", None)  # the DaskRunner leaves its client open
    if client is not None:
        stack.callback(client.close)
    result.wait_until_finish()


class _ProgressFile:
    """A worker's running counts, in a local folder the launcher watches (local runs only)."""

    def __init__(self, folder: str | None):
        self.path = Path(folder, f"{uuid.uuid4().hex}.json") if folder else None
        self.documents = self.strips = 0
        self._written = 0.0

    def add(self, documents: int, strips: int) -> None:
        self.documents += documents
        self.strips += strips
        if self.path and time.monotonic() - self._written > 0.5:
            self.flush()

    def flush(self) -> None:
        if self.path:
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps([self.documents, self.strips]))
            temporary.replace(self.path)
            self._written = time.monotonic()


class _ProgressDisplay:
    """A progress bar of documents and strips rendered, summed over the workers' files."""

    def __init__(self, folder: str):
        from tqdm import tqdm

        self.folder = Path(folder)
        self.bar = tqdm(unit=" docs", desc="rendering", dynamic_ncols=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _totals(self) -> tuple[int, int]:
        documents = strips = 0
        for path in self.folder.glob("*.json"):
            try:
                d, s = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            documents, strips = documents + d, strips + s
        return documents, strips

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            documents, strips = self._totals()
            self.bar.update(documents - self.bar.n)
            self.bar.set_postfix(strips=strips, refresh=False)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        documents, strips = self._totals()
        self.bar.update(documents - self.bar.n)
        self.bar.set_postfix(strips=strips)
        self.bar.close()
