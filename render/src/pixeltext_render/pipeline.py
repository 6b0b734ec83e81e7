"""The render job: an Apache Beam pipeline from corpus files to WebDataset shards.

    ReadCorpus      files -> documents, and rejections for bad records or files
    AssignShards    documents -> shard index, by a hash of the document key; the number of
                    shards follows from the corpus size (about ``shard_samples`` strips each)
    RenderShards    each shard's documents, sorted by key, rendered and written as one tar
    WriteSummary    manifest.json and rejected.jsonl, from every shard's part record

Only document text crosses the shuffle; pixels are made where the shard is written. Each
shard depends on nothing but its own documents, so the output is the same whatever the
runner or the number of workers, and a rerun skips shards that are already complete.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from pixeltext_render.config import RenderConfig
from pixeltext_render.renderer import RenderedDocument, Renderer
from pixeltext_render.schema import FORMAT, MEMBERS, encode_strip, key_hash, sample_key, shard_name
from pixeltext_render.shards import (
    ShardPart,
    claim,
    finished_part,
    read_manifest,
    tar_bytes,
    write_shard,
    write_summary,
)
from pixeltext_render.sources import (
    REJECTED_TAG,
    CorpusFile,
    ReadCorpus,
    ReadOptions,
    Rejection,
    match_corpus,
)

LOCAL_RUNNERS = ("DirectRunner",)


@dataclass(frozen=True)
class RenderJob:
    corpus: tuple[str, ...]  # file paths or patterns, any Beam filesystem
    out: str
    read: ReadOptions = field(default_factory=ReadOptions)
    config: RenderConfig = field(default_factory=RenderConfig)
    tokenizer: str = "sentencepiece"
    shard_samples: int = 1000

    def identity(self, renderer: Renderer) -> dict[str, Any]:
        """What decides the output: a rerun into the same OUT must have the same identity."""
        return {
            "corpus": list(self.corpus),
            "read": asdict(self.read),
            "render_fingerprint": renderer.fingerprint,
            "tokenizer": self.tokenizer,
            "tokenizer_fingerprint": renderer.tokenizer.fingerprint,
            "shard_samples": self.shard_samples,
        }


def estimated_strips(characters: int, config: RenderConfig) -> int:
    """Strips a text of this length needs, assuming half an em per character."""
    capacity = config.patch_size * (config.max_patches - 1) - config.margin_left - config.margin_right
    return max(1, math.ceil(characters * 0.5 * config.font_size / capacity))


def shard_of(key: str, shards: int) -> int:
    return key_hash(key) % shards


class AssignShards(beam.PTransform):
    """Documents -> ``(shard index, [documents])`` for every shard, empty ones included."""

    def __init__(self, shard_samples: int, config: RenderConfig):
        super().__init__()
        self.shard_samples, self.config = shard_samples, config

    def expand(self, documents):
        config, per_shard = self.config, self.shard_samples
        count = (
            documents
            | "Estimate" >> beam.Map(lambda doc: estimated_strips(len(doc.text), config))
            | "Total" >> beam.CombineGlobally(sum)
            | "Shards" >> beam.Map(lambda total: max(1, math.ceil(total / per_shard)))
        )
        keyed = documents | "Key" >> beam.Map(
            lambda doc, shards: (shard_of(doc.key, shards), doc), shards=beam.pvalue.AsSingleton(count)
        )
        every = count | "Every" >> beam.FlatMap(lambda shards: [(i, None) for i in range(shards)])
        return (keyed, every) | "Union" >> beam.Flatten() | "Group" >> beam.GroupByKey()


class RenderShard(beam.DoFn):
    """Renders one shard's documents and writes the shard; skips a shard already written."""

    def __init__(self, job: RenderJob, progress_folder: str | None = None):
        self.job = job
        self.progress_folder = progress_folder
        self.counters = {
            name: Metrics.counter("pixeltext", name)
            for name in (
                "documents",
                "strips",
                "characters",
                "tokens",
                "missing_glyphs",
                "changed_chars",
                "rejected",
            )
        }

    def setup(self) -> None:
        self.renderer = Renderer(self.job.config, self.job.tokenizer)
        self.progress = _ProgressFile(self.progress_folder)

    def process(self, element):
        index, documents = element
        done = finished_part(self.job.out, index)
        if done is not None:
            self.progress.add(done.documents, done.samples)
            yield done
            return
        part = ShardPart(index, shard_name(index))
        samples: list[tuple[str, dict[str, bytes]]] = []
        seen: set[str] = set()
        for doc in sorted((d for d in documents if d is not None), key=lambda d: (d.key, d.source)):
            rendered = self._render(doc, part, seen)
            strips = rendered.strips if rendered else []
            for i, strip in enumerate(strips):
                members = encode_strip(
                    strip,
                    doc.key,
                    i,
                    len(strips),
                    doc.source,
                    self.job.config.patch_size,
                    rendered.changed_chars,
                )
                samples.append((sample_key(doc.key, i), members))
            self.progress.add(1 if strips else 0, len(strips))
        part.samples = len(samples)
        for name in ("documents", "characters", "tokens", "missing_glyphs", "changed_chars"):
            self.counters[name].inc(getattr(part, name))
        self.counters["strips"].inc(part.samples)
        self.counters["rejected"].inc(len(part.rejected))
        yield write_shard(self.job.out, part, tar_bytes(samples))

    def _render(self, doc, part: ShardPart, seen: set[str]) -> RenderedDocument | None:
        """The rendered document, or None with the reason recorded in ``part.rejected``."""
        reason = None
        if doc.key in seen:
            reason = "duplicate document key (an earlier record has the same id)"
        else:
            seen.add(doc.key)
            try:
                rendered = self.renderer.render(doc.text)
            except Exception as error:
                reason = f"render failed: {error!r}"
            else:
                if any(strip.overflow for strip in rendered.strips):
                    reason = "a single unbreakable unit is wider than a strip; it would be cut"
        if reason:
            part.rejected.append(asdict(Rejection(doc.key, doc.source, reason)))
            return None
        part.documents += 1
        part.characters += len(rendered.text)
        part.tokens += int(sum(len(s.token_ids) for s in rendered.strips))
        part.missing_glyphs += rendered.missing_glyphs
        part.changed_chars += rendered.changed_chars
        return rendered

    def teardown(self) -> None:
        if getattr(self, "progress", None):
            self.progress.flush()


class RenderShards(beam.PTransform):
    def __init__(self, job: RenderJob, progress_folder: str | None):
        super().__init__()
        self.job, self.progress_folder = job, progress_folder

    def expand(self, documents):
        return (
            documents
            | "Assign" >> AssignShards(self.job.shard_samples, self.job.config)
            | "Render" >> beam.ParDo(RenderShard(self.job, self.progress_folder))
        )


class WriteSummary(beam.PTransform):
    """Every shard part and every rejection -> manifest.json and rejected.jsonl."""

    def __init__(self, out: str, header: dict[str, Any]):
        super().__init__()
        self.out, self.header = out, header

    def expand(self, inputs):
        parts, rejections = inputs
        listed = rejections | "Rejections" >> beam.Map(asdict) | "AllRejections" >> beam.combiners.ToList()
        out, header = self.out, self.header
        return (
            parts
            | "AllParts" >> beam.combiners.ToList()
            | "Write"
            >> beam.Map(
                lambda all_parts, rejected: write_summary(out, header, all_parts, rejected),
                rejected=beam.pvalue.AsSingleton(listed),
            )
        )


def build(
    pipeline: beam.Pipeline, job: RenderJob, files: list[CorpusFile], header: dict, progress_folder=None
):
    read = pipeline | "Read" >> ReadCorpus(files, job.read)
    parts = read.documents | "RenderShards" >> RenderShards(job, progress_folder)
    return (parts, read[REJECTED_TAG]) | "Summary" >> WriteSummary(job.out, header)


def manifest_header(job: RenderJob, renderer: Renderer) -> dict[str, Any]:
    tokenizer = renderer.tokenizer
    return {
        "format": FORMAT,
        "job": job.identity(renderer),
        "render": {**renderer.describe(), "fingerprint": renderer.fingerprint},
        "tokenizer": {
            "spec": tokenizer.spec,
            "fingerprint": tokenizer.fingerprint,
            "vocab_size": tokenizer.vocab_size,
            "bos_id": tokenizer.bos_id,
            "eos_id": tokenizer.eos_id,
            "pad_id": tokenizer.pad_id,
        },
        "members": list(MEMBERS),
    }


def beam_options(runner: str, workers: int, beam_args: list[str]) -> PipelineOptions:
    """Beam options; the local runner is named in full so it behaves the same everywhere."""
    extra: dict[str, Any] = {}
    if runner in LOCAL_RUNNERS:
        mode = "multi_processing" if workers > 1 else "in_memory"
        extra = {"direct_running_mode": mode, "direct_num_workers": workers}
        extra["default_sdk_harness_log_level"] = "ERROR"  # worker processes: no chatter
    return PipelineOptions(flags=list(beam_args), runner=runner, **extra)


def run(
    job: RenderJob,
    runner: str = "DirectRunner",
    workers: int = 0,
    beam_args: list[str] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Run the job to completion and return its manifest."""
    renderer = Renderer(job.config, job.tokenizer)  # fails early on missing fonts or tokenizer
    files = match_corpus(list(job.corpus))
    claim(job.out, job.identity(renderer))
    workers = workers or os.cpu_count() or 1
    local = runner in LOCAL_RUNNERS and progress
    with tempfile.TemporaryDirectory(prefix="pixeltext-progress-") as folder:
        watcher = _ProgressDisplay(folder) if local else None
        try:
            with beam.Pipeline(options=beam_options(runner, workers, beam_args)) as pipeline:
                build(pipeline, job, files, manifest_header(job, renderer), folder if local else None)
        finally:
            if watcher:
                watcher.stop()
    return read_manifest(job.out)


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
