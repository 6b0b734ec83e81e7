"""The job's plan: which shards each piece of work writes, and which records are duplicates.

The first pass's part surveys and key batches become, on one worker, the plan: its totals
in ``.work/plan.json`` (written last, so a plan is there whole or not at all) and its chunks
in blocks of ``PLAN_BLOCK_CHUNKS`` lines, ``.work/plan-NNNNNN.jsonl``, each read by the worker
that starts the second pass on it:

- **chunks**: the parts in file order (name, then position), packed so that a chunk is one
  large part or several small ones (small files) holding at most ``chunk_strips`` estimated
  strips together; each chunk owns the next ``ceil(strips / shard_samples)`` shard numbers.
  A chunk is read, rendered and written by one worker in one go, so no text ever crosses a
  shuffle and a worker holds one shard's samples at a time, whatever the corpus size.
- **duplicates**: every record whose key an earlier record in file order has. They are found
  from 12-byte key hashes (``KeyBatch``), grouped by hash bucket; no text moves.

The plan grows with the number of parts (one per about ``SHARDS_PER_CHUNK`` shards) and of
duplicates; no one reads it whole but the worker that writes it.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from pixeltext_render.format.folder import WORK, plan_block_name, plan_name
from pixeltext_render.job.grouping import CombineAll
from pixeltext_render.job.readers.base import CorpusFile, FilePart
from pixeltext_render.job.shards import join, read_bytes, write_atomically
from pixeltext_render.job.survey import ALL_SURVEYS, KeyBatch, PartSurvey

_DIGEST = np.dtype([("high", ">u8"), ("low", ">u4")])  # a 12-byte key hash (``key_digest``)
PLAN_BLOCK_CHUNKS = 10_000  # chunks per block of the plan (about 2.5 MB)


@dataclass(frozen=True)
class Chunk:
    """What one worker renders at once: consecutive parts, into shards ``first``,
    ``first + 1``, ... (``shards`` of them); a document goes to the shard its position in the
    chunk's estimated strips falls in, so the shards hold consecutive documents."""

    index: int
    first: int
    shards: int
    strips: int  # estimated, for the chunk's documents together
    parts: tuple[FilePart, ...]
    duplicates: frozenset[tuple[str, int]] = frozenset()  # (path, position) of records to reject

    def to_json(self) -> dict[str, Any]:
        parts = [asdict(part) for part in self.parts]
        return {
            "index": self.index,
            "first": self.first,
            "shards": self.shards,
            "strips": self.strips,
            "parts": parts,
            "duplicates": sorted([path, position] for path, position in self.duplicates),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Chunk:
        parts = tuple(FilePart(**{**part, "file": CorpusFile(**part["file"])}) for part in data["parts"])
        duplicates = frozenset((path, position) for path, position in data["duplicates"])
        return cls(data["index"], data["first"], data["shards"], data["strips"], parts, duplicates)


def file_order(part: FilePart) -> tuple:
    return part.file.name, part.file.path, part.first_row, part.start


def assign_chunks(surveys: Iterable[PartSurvey], shard_samples: int, chunk_strips: int) -> list[Chunk]:
    """Parts -> chunks in file order, each chunk with its shard numbers (``Chunk``)."""
    groups: list[tuple[list[FilePart], int]] = []
    for survey in sorted(surveys, key=lambda s: file_order(s.part)):
        if not groups or groups[-1][1] + survey.strips > chunk_strips:
            groups.append(([], 0))
        parts, strips = groups[-1]
        parts.append(survey.part)
        groups[-1] = (parts, strips + survey.strips)
    chunks, first = [], 0
    for index, (parts, strips) in enumerate(groups):
        shards = max(1, math.ceil(strips / shard_samples))
        chunks.append(Chunk(index, first, shards, strips, tuple(parts)))
        first += shards
    return chunks


def duplicate_records(batches: Iterable[KeyBatch]) -> dict[str, list[int]]:
    """Key batches (one bucket's) -> path: positions of the records whose key an earlier
    record has, in file order (name, path, position): the first record of a key is kept."""
    batches = list(batches)
    files = sorted({(b.name, b.path) for b in batches})
    rank = {file: i for i, file in enumerate(files)}
    digests = np.concatenate([np.frombuffer(b.digests, dtype=_DIGEST) for b in batches])
    positions = np.concatenate(
        [b.first_row + np.frombuffer(b.positions, np.uint32).astype(np.int64) for b in batches]
    )
    ranks = np.concatenate([np.full(len(b.positions) // 4, rank[b.name, b.path]) for b in batches])
    order = np.lexsort((positions, ranks, digests["low"], digests["high"]))
    digests, positions, ranks = digests[order], positions[order], ranks[order]
    repeated = np.flatnonzero(digests[1:] == digests[:-1]) + 1
    duplicates: dict[str, list[int]] = {}
    for i in repeated:
        duplicates.setdefault(files[ranks[i]][1], []).append(int(positions[i]))
    return duplicates


@dataclass(frozen=True)
class _Resolve:
    """One group of the first pass -> a plan fragment: the chunks (from every part's
    survey), or the duplicates one key bucket holds."""

    shard_samples: int
    chunk_strips: int

    def __call__(self, group: int, members: Iterable) -> Iterator[dict[str, Any]]:
        if group == ALL_SURVEYS:
            yield {"chunks": assign_chunks(members, self.shard_samples, self.chunk_strips), "duplicates": {}}
        else:
            yield {"chunks": [], "duplicates": duplicate_records(members)}


def merge_fragments(fragments: Iterable[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"chunks": [], "duplicates": {}}
    for fragment in fragments:
        merged["chunks"] += fragment["chunks"]
        for path, positions in fragment["duplicates"].items():
            merged["duplicates"].setdefault(path, []).extend(positions)
    return merged


def write_plan(out: str, merged: dict[str, Any], block_chunks: int) -> None:
    """Write the plan's blocks: each chunk with the duplicate records its parts hold; then its
    totals."""
    chunks = sorted(merged["chunks"], key=lambda c: c.index)
    starts: dict[str, list[tuple[int, int]]] = {}  # path -> (rows before a part, its chunk), in order
    for chunk in chunks:
        for part in chunk.parts:
            starts.setdefault(part.file.path, []).append((part.first_row, chunk.index))
    found: dict[int, set[tuple[str, int]]] = {}
    for path, positions in merged["duplicates"].items():
        firsts = [first for first, _ in starts[path]]
        for position in positions:  # in the last part that starts before it
            owner = starts[path][max(bisect.bisect_left(firsts, position) - 1, 0)][1]
            found.setdefault(owner, set()).add((path, position))
    blocks = range(0, len(chunks), block_chunks)
    for block, start in enumerate(blocks):
        lines = [
            json.dumps(replace(c, duplicates=frozenset(found.get(c.index, ()))).to_json(), sort_keys=True)
            for c in chunks[start : start + block_chunks]
        ]
        write_atomically(join(out, plan_block_name(block)), "".join(line + "\n" for line in lines).encode())
    totals = {
        "chunks": len(chunks),
        "blocks": len(blocks),
        "shards": sum(chunk.shards for chunk in chunks),
        "strips": sum(chunk.strips for chunk in chunks),
        "duplicates": sum(len(positions) for positions in merged["duplicates"].values()),
    }
    write_atomically(join(out, plan_name()), json.dumps(totals, sort_keys=True).encode())


class WritePlan(beam.PTransform):
    """The first pass's ``SurveyFile`` outputs -> the plan of the job writing to ``out``."""

    def __init__(
        self, out: str, shard_samples: int, chunk_strips: int, block_chunks: int = PLAN_BLOCK_CHUNKS
    ):
        super().__init__()
        self.out, self.block_chunks = out, block_chunks
        self.resolve = _Resolve(shard_samples, chunk_strips)

    def expand(self, surveyed):
        out, block_chunks = self.out, self.block_chunks
        return (
            surveyed
            | "Group" >> beam.GroupByKey()
            | "Resolve" >> beam.FlatMapTuple(self.resolve)
            | "Merge" >> CombineAll(merge_fragments)  # (a file at least)
            | "Write" >> beam.Map(lambda merged: write_plan(out, merged, block_chunks))
        )


def read_plan(out: str) -> dict[str, int]:
    """The plan's totals: chunks, blocks, shards, estimated strips, duplicate records."""
    path = join(out, plan_name())
    totals = json.loads(read_bytes(path))
    if not isinstance(totals.get("blocks"), int):  # the plan of an earlier version: one file
        raise ValueError(
            f"{path} is a plan in an earlier format; delete it and rerun (the shards already "
            "written are kept: the plan is made again the same)"
        )
    return totals


class ReadChunks(beam.DoFn):
    """A block of the plan of the job writing to ``out`` -> its chunks, streamed (read on a
    worker: the job's request holds no file names). A plan is a file in OUT, so it is not
    trusted to name what to read: a part of a file that none of the job's ``patterns``
    matches (Beam's matching) is an error, not read."""

    def __init__(self, out: str, patterns: list[str]):
        self.out, self.patterns = out, patterns

    def setup(self) -> None:
        self.matchers = [re.compile(FileSystem.translate_pattern(p)).match for p in self.patterns]

    def process(self, block: int) -> Iterator[Chunk]:
        path = join(self.out, plan_block_name(block))
        with FileSystems.open(path) as stream:
            for line in stream:
                chunk = Chunk.from_json(json.loads(line))
                for part in chunk.parts:
                    if not any(match(part.file.path) for match in self.matchers):
                        raise ValueError(
                            f"{path} names {part.file.path!r}, which no corpus pattern of this job "
                            f"matches ({self.patterns}): the plan is not this job's. Delete "
                            f"{self.out}/{WORK}/plan* and rerun"
                        )
                yield chunk
