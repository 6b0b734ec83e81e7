"""What the render job leaves in OUT, written so that reruns are safe and bytes reproducible.

- ``shard-NNNNNN.tar``: deterministic tar files (members sorted, mtime 0, no owner);
- ``.parts/plan.json`` and ``.parts/plan-NNNNNN.jsonl``: the first pass's plan (``planning``):
  its totals, and its chunks in blocks;
- ``.parts/shard-NNNNNN.json``: each finished shard's counts and rejections, written before
  the shard is renamed into place; a shard with both files is done, and a rerun skips it;
- ``rejected/NNNNNN.jsonl``: the rejections of a block of ``BLOCK_SHARDS`` shards, one part per
  block, written by the workers (a rejection goes with the shard being filled when it was read);
- ``shards.jsonl``: one line per shard (name, samples, bytes, sha256), streamed together from
  the blocks' ``.parts/index-NNNNNN.jsonl``; readers stream it;
- ``manifest.json``: small whatever the corpus size: header, totals, and the index's size and
  hash; written last;
- ``.pixeltext-job.json``: what the job is (render fingerprint, tokenizer, corpus, options),
  written first; a later run with a different job into the same OUT is refused.

Everything goes through Beam's ``FileSystems``, so OUT may be local or ``gs://``, ``s3://``...
Files are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pixeltext_render.schema import MEMBERS, parse_manifest, shard_name

JOB_FILE = ".pixeltext-job.json"
PARTS = ".parts"
MANIFEST = "manifest.json"
REJECTED = "rejected"
INDEX = "shards.jsonl"
TEMPORARY = ".tmp-"
BLOCK_SHARDS = 1000  # shards per index block and rejection part
# A file of each kind the job writes into OUT (relative, "/"-separated)
OUTPUT_NAMES = (
    JOB_FILE,
    MANIFEST,
    INDEX,
    shard_name(0),
    f"{PARTS}/plan.json",
    f"{PARTS}/{shard_name(0)}.json",
    f"{REJECTED}/000000.jsonl",
)
TOTALS = ("documents", "samples", "characters", "tokens", "missing_glyphs", "changed_chars", "bytes")


class JobConflict(RuntimeError):
    """OUT already holds the output of a different job."""


def join(folder: str, *names: str) -> str:
    return FileSystems.join(folder, *names)


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as stream:
        return stream.read()


def write_atomically(path: str, data: bytes) -> None:
    """Write to a temporary name beside ``path``, then rename onto it."""
    temporary = f"{path}{TEMPORARY}{uuid.uuid4().hex}"
    with FileSystems.create(temporary) as stream:
        stream.write(data)
    FileSystems.rename([temporary], [path])


def tar_bytes(samples: list[tuple[str, dict[str, bytes]]]) -> bytes:
    """A tar of samples ``(key, {extension: bytes})``, identical for identical samples."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for key, members in sorted(samples, key=lambda sample: sample[0]):
            for extension in MEMBERS:
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(members[extension])
                info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 0, 0o644, 0, 0, "", ""
                archive.addfile(info, io.BytesIO(members[extension]))
    return buffer.getvalue()


@dataclass
class ShardPart:
    """One finished shard: its file and what went into it."""

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
    def from_json(cls, data: bytes) -> ShardPart:
        return cls(**json.loads(data))


def plan_path(out: str) -> str:
    """The job's plan: what its first pass learnt of the corpus, in totals (written last)."""
    return join(out, PARTS, "plan.json")


def plan_block_path(out: str, block: int) -> str:
    """A block of the plan's chunks, one JSON line each."""
    return join(out, PARTS, f"plan-{block:06d}.jsonl")


def part_path(out: str, index: int) -> str:
    return join(out, PARTS, shard_name(index) + ".json")


def finished_part(out: str, index: int) -> ShardPart | None:
    """The part of a shard a previous run finished, if the shard is still what its part
    records: its size, and on a local disk its sha256 (elsewhere the reader checks that as it
    streams the shard). A shard that is not is rendered again."""
    part, shard = part_path(out, index), join(out, shard_name(index))
    if not FileSystems.exists(part):
        return None
    found = FileSystems.match([glob.escape(shard)], limits=[1])[0].metadata_list
    record = ShardPart.from_json(read_bytes(part))
    if not found or found[0].size_in_bytes != record.bytes:
        return None
    if "://" not in shard and hashlib.sha256(read_bytes(shard)).hexdigest() != record.sha256:
        return None
    return record


def write_shard(out: str, part: ShardPart, data: bytes) -> ShardPart:
    """Write a shard and its part; the shard's final name appears last."""
    part.bytes, part.sha256 = len(data), hashlib.sha256(data).hexdigest()
    write_atomically(part_path(out, part.index), part.to_json())
    write_atomically(join(out, part.name), data)
    return part


def discard_shards(out: str, indices: list[int]) -> None:
    """Remove shards and their parts (a rerun renders them again)."""
    paths = [path for i in indices for path in (join(out, shard_name(i)), part_path(out, i))]
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


def block_index_path(out: str, block: int) -> str:
    """A block's shard index lines (streamed into ``shards.jsonl`` at the end)."""
    return join(out, PARTS, f"index-{block:06d}.jsonl")


def block_rejections_path(out: str, block: int) -> str:
    return join(out, REJECTED, f"{block:06d}.jsonl")


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records).encode()


def write_block(out: str, block: int, parts: list[ShardPart]) -> dict[str, int]:
    """Write one block's index lines and rejections; return the block's totals."""
    parts = sorted(parts, key=lambda p: p.index)
    index = [{"name": p.name, "samples": p.samples, "bytes": p.bytes, "sha256": p.sha256} for p in parts]
    write_atomically(block_index_path(out, block), _jsonl(index))
    rejected = sorted((r for p in parts for r in p.rejected), key=lambda r: (r["key"], r["source"]))
    write_atomically(block_rejections_path(out, block), _jsonl(rejected))
    totals = {name: sum(getattr(p, name) for p in parts) for name in TOTALS}
    return {**totals, "shards": len(parts), "rejected": len(rejected), "blocks": 1}


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
            data = read_bytes(block_index_path(out, block))
            digest.update(data)
            stream.write(data)
    FileSystems.rename([temporary], [join(out, INDEX)])
    counts = {name: totals[name] for name in TOTALS if name != "samples"}
    counts |= {"strips": totals["samples"], "shards": totals["shards"], "rejected": totals["rejected"]}
    index = {"file": INDEX, "shards": totals["shards"], "sha256": digest.hexdigest()}
    rejected = {"folder": REJECTED, "parts": totals["blocks"]}
    manifest = {**header, "index": index, "rejected": rejected, "totals": counts}
    write_atomically(
        join(out, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False).encode()
    )
    folders = ((), (PARTS,), (REJECTED,))
    leftovers = FileSystems.match([join(out, *folder, f"*{TEMPORARY}*") for folder in folders])
    stale = [m.path for result in leftovers for m in result.metadata_list]
    if stale:
        FileSystems.delete(stale)
    return manifest


def read_shard_index(out: str) -> Iterator[dict[str, Any]]:
    """The lines of ``shards.jsonl``, one shard at a time, in shard order."""
    with FileSystems.open(join(out, INDEX)) as stream:
        for line in stream:
            yield json.loads(line)


def read_rejections(out: str) -> Iterator[dict[str, str]]:
    """Every rejection line, part by part."""
    parts = read_manifest(out)["rejected"]["parts"]
    for block in range(parts):
        with FileSystems.open(block_rejections_path(out, block)) as stream:
            for line in stream:
                yield json.loads(line)


def read_manifest(out: str) -> dict[str, Any]:
    path = join(out, MANIFEST)
    return parse_manifest(read_bytes(path), path)
