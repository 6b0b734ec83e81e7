"""What the render job leaves in OUT, written so that reruns are safe and bytes reproducible.

- ``shard-NNNNNN.tar``: deterministic tar files (members sorted, mtime 0, no owner);
- ``.parts/shard-NNNNNN.json``: each finished shard's counts, written before the shard is
  renamed into place; a shard with both files is done, and a rerun skips it;
- ``manifest.json``, ``rejected.jsonl``: written last, from the parts;
- ``.pixeltext-job.json``: what the job is (render fingerprint, tokenizer, corpus, options),
  written first; a later run with a different job into the same OUT is refused.

Everything goes through Beam's ``FileSystems``, so OUT may be local or ``gs://``, ``s3://``...
Files are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pixeltext_render.schema import MEMBERS, parse_manifest, shard_name

JOB_FILE = ".pixeltext-job.json"
PARTS = ".parts"
MANIFEST = "manifest.json"
REJECTED = "rejected.jsonl"
TEMPORARY = ".tmp-"


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


def part_path(out: str, index: int) -> str:
    return join(out, PARTS, shard_name(index) + ".json")


def finished_part(out: str, index: int) -> ShardPart | None:
    """The part of a shard a previous run finished (both files present), if any."""
    part, shard = part_path(out, index), join(out, shard_name(index))
    if FileSystems.exists(part) and FileSystems.exists(shard):
        return ShardPart.from_json(read_bytes(part))
    return None


def write_shard(out: str, part: ShardPart, data: bytes) -> ShardPart:
    """Write a shard and its part; the shard's final name appears last."""
    part.bytes, part.sha256 = len(data), hashlib.sha256(data).hexdigest()
    write_atomically(part_path(out, part.index), part.to_json())
    write_atomically(join(out, part.name), data)
    return part


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


def write_summary(
    out: str, header: dict[str, Any], parts: list[ShardPart], rejections: list[dict[str, str]]
) -> dict:
    """Write ``rejected.jsonl`` and ``manifest.json``; remove leftover temporary files."""
    parts = sorted(parts, key=lambda p: p.index)
    rejected = sorted(
        rejections + [r for p in parts for r in p.rejected], key=lambda r: (r["key"], r["source"])
    )
    lines = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rejected)
    write_atomically(join(out, REJECTED), lines.encode())
    totals = {
        "documents": sum(p.documents for p in parts),
        "strips": sum(p.samples for p in parts),
        "characters": sum(p.characters for p in parts),
        "tokens": sum(p.tokens for p in parts),
        "missing_glyphs": sum(p.missing_glyphs for p in parts),
        "changed_chars": sum(p.changed_chars for p in parts),
        "rejected": len(rejected),
        "shards": len(parts),
        "bytes": sum(p.bytes for p in parts),
    }
    shards = [{"name": p.name, "samples": p.samples, "bytes": p.bytes, "sha256": p.sha256} for p in parts]
    manifest = {**header, "shards": shards, "totals": totals}
    write_atomically(
        join(out, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False).encode()
    )
    leftovers = FileSystems.match([join(out, f"*{TEMPORARY}*"), join(out, PARTS, f"*{TEMPORARY}*")])
    stale = [m.path for result in leftovers for m in result.metadata_list]
    if stale:
        FileSystems.delete(stale)
    return manifest


def read_manifest(out: str) -> dict[str, Any]:
    path = join(out, MANIFEST)
    return parse_manifest(read_bytes(path), path)
