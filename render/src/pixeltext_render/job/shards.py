"""What the render job leaves in OUT (named in ``pixeltext_render.format.folder``), written so
that reruns are safe and bytes reproducible.

- each finished shard's record (counts, rejections, size, sha256) is written before the shard
  is renamed into place; a shard with both is done, and a rerun skips it;
- the rejections of a block of ``BLOCK_SHARDS`` shards go in one file, written by the workers
  (a rejection goes with the shard being filled when it was read);
- ``shards.jsonl`` is streamed together from the blocks' index lines; ``manifest.json`` is
  written last;
- the job file is written first; a later run with a different job into the same OUT is refused.

Everything goes through Beam's ``FileSystems``, so OUT may be local or ``gs://``, ``s3://``...
Files are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import glob
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pixeltext_render.format.folder import (
    INDEX,
    JOB_FILE,
    MANIFEST,
    REJECTED,
    WORK,
    finished_name,
    index_block_name,
    index_line,
    jsonl,
    manifest_bytes,
    parse_manifest,
    rejections_name,
    shard_name,
)

TEMPORARY = ".tmp-"
TOTALS = ("documents", "samples", "characters", "tokens", "missing_glyphs", "changed_chars", "bytes")


class JobConflict(RuntimeError):
    """OUT already holds the output of a different job."""


def join(folder: str, name: str) -> str:
    """A file of OUT by its name in the format (relative, "/"-separated)."""
    return FileSystems.join(folder, *name.split("/"))


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as stream:
        return stream.read()


def write_atomically(path: str, data: bytes) -> None:
    """Write to a temporary name beside ``path``, then rename onto it."""
    temporary = f"{path}{TEMPORARY}{uuid.uuid4().hex}"
    with FileSystems.create(temporary) as stream:
        stream.write(data)
    FileSystems.rename([temporary], [path])


@dataclass
class FinishedShard:
    """One finished shard's record: its file and what went into it."""

    index: int
    name: str
    samples: int = 0
    bytes: int = 0
    sha256: str = ""
    documents: int = 0
    characters: int = 0
    tokens: int = 0
    missing_glyphs: int = 0
    changed_chars: int = 0  # characters the normalisation rule removed or replaced
    rejected: list[dict[str, str]] = field(default_factory=list)  # documents that failed to render

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> FinishedShard:
        return cls(**json.loads(data))


def finished_shard(out: str, index: int) -> FinishedShard | None:
    """The record of a shard a previous run finished, if the shard is still what it records:
    its size, and on a local disk its sha256 (elsewhere the reader checks that as it streams
    the shard). A shard that is not is rendered again."""
    path, shard = join(out, finished_name(index)), join(out, shard_name(index))
    if not FileSystems.exists(path):
        return None
    found = FileSystems.match([glob.escape(shard)], limits=[1])[0].metadata_list
    record = FinishedShard.from_json(read_bytes(path))
    if not found or found[0].size_in_bytes != record.bytes:
        return None
    if "://" not in shard and hashlib.sha256(read_bytes(shard)).hexdigest() != record.sha256:
        return None
    return record


def write_shard(out: str, record: FinishedShard, data: bytes) -> FinishedShard:
    """Write a shard and its record; the shard's final name appears last."""
    record.bytes, record.sha256 = len(data), hashlib.sha256(data).hexdigest()
    write_atomically(join(out, finished_name(record.index)), record.to_json())
    write_atomically(join(out, record.name), data)
    return record


def discard_shards(out: str, indices: list[int]) -> None:
    """Remove shards and their records (a rerun renders them again)."""
    paths = [join(out, name) for i in indices for name in (shard_name(i), finished_name(i))]
    present = [path for path in paths if FileSystems.exists(path)]
    if present:
        FileSystems.delete(present)


def claim(out: str, job: dict[str, Any]) -> None:
    """Record ``job`` as OUT's job (a rerun finds it there); refuse OUT holding a different one."""
    path = join(out, JOB_FILE)
    if FileSystems.exists(path):
        previous = json.loads(read_bytes(path))
        if previous != job:
            changed = sorted(k for k in set(previous) | set(job) if previous.get(k) != job.get(k))
            raise JobConflict(
                f"{out} holds the output of a different render job (differs in: {', '.join(changed)}). "
                "Use another --out, or delete it to start over."
            )
        return
    if FileSystems.exists(join(out, MANIFEST)):
        raise JobConflict(
            f"{out} holds shards written by another tool or version (no {JOB_FILE}); use another --out"
        )
    write_atomically(path, json.dumps(job, sort_keys=True, indent=1).encode())


def write_block(out: str, block: int, shards: list[FinishedShard]) -> dict[str, int]:
    """Write one block's index lines and rejections; return the block's totals."""
    shards = sorted(shards, key=lambda shard: shard.index)
    index = [index_line(s.name, s.samples, s.bytes, s.sha256) for s in shards]
    write_atomically(join(out, index_block_name(block)), jsonl(index))
    rejected = sorted((r for s in shards for r in s.rejected), key=lambda r: (r["key"], r["source"]))
    write_atomically(join(out, rejections_name(block)), jsonl(rejected))
    totals = {name: sum(getattr(s, name) for s in shards) for name in TOTALS}
    return {**totals, "shards": len(shards), "rejected": len(rejected), "blocks": 1}


def add_totals(totals: list[dict[str, int]]) -> dict[str, int]:
    summed: dict[str, int] = {}
    for block in totals:
        for name, value in block.items():
            summed[name] = summed.get(name, 0) + value
    return summed


def write_summary(out: str, header: dict[str, Any], totals: dict[str, int]) -> dict:
    """Stream the blocks' index lines into ``shards.jsonl``, then write ``manifest.json``;
    remove leftover temporary files."""
    digest = hashlib.sha256()
    temporary = join(out, f"{INDEX}{TEMPORARY}{uuid.uuid4().hex}")
    with FileSystems.create(temporary) as stream:
        for block in range(totals["blocks"]):
            data = read_bytes(join(out, index_block_name(block)))
            digest.update(data)
            stream.write(data)
    FileSystems.rename([temporary], [join(out, INDEX)])
    counts = {name: totals[name] for name in TOTALS if name != "samples"}
    counts |= {"strips": totals["samples"], "shards": totals["shards"], "rejected": totals["rejected"]}
    data = manifest_bytes(header, counts, digest.hexdigest(), totals["blocks"])
    write_atomically(join(out, MANIFEST), data)
    folders = ("", f"{WORK}/", f"{REJECTED}/")
    leftovers = FileSystems.match([join(out, f"{folder}*{TEMPORARY}*") for folder in folders])
    stale = [m.path for result in leftovers for m in result.metadata_list]
    if stale:
        FileSystems.delete(stale)
    return json.loads(data)


def read_shard_index(out: str) -> Iterator[dict[str, Any]]:
    """The lines of ``shards.jsonl``, one shard at a time, in shard order."""
    with FileSystems.open(join(out, INDEX)) as stream:
        for line in stream:
            yield json.loads(line)


def read_rejections(out: str) -> Iterator[dict[str, str]]:
    """Every rejection line, block by block."""
    blocks = read_manifest(out)["rejected"]["parts"]
    for block in range(blocks):
        with FileSystems.open(join(out, rejections_name(block))) as stream:
            for line in stream:
                yield json.loads(line)


def read_manifest(out: str) -> dict[str, Any]:
    path = join(out, MANIFEST)
    return parse_manifest(read_bytes(path), path)
