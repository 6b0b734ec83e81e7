"""A shard folder: the names of its files, its manifest and its index.

What the render job leaves in its output folder (names relative to it, "/"-separated):

=================================  =============================================================
``manifest.json``                  the format, the render config and tokenizer the strips were
                                   made with, totals, and the index's file and sha256; written
                                   last, small whatever the corpus size
``shards.jsonl``                   one line per shard: name, samples, bytes, sha256
``shard-NNNNNN.tar``               the shards, numbered from 0 (``tar``)
``rejected/NNNNNN.jsonl``          the documents rejected, one file per block of
                                   ``BLOCK_SHARDS`` shards
``.pixeltext-job.json``            what the job is (written first; another job is refused)
``.work/``                         the job's working files, which a rerun resumes from: its plan
                                   (``plan.json``, ``plan-NNNNNN.jsonl``), each finished
                                   shard's record (``shard-NNNNNN.tar.json``) and each block's
                                   index lines (``index-NNNNNN.jsonl``)
=================================  =============================================================

The manifest gives the shard count, never a shard's name: readers name the shards with
:func:`shard_name`, so a manifest from elsewhere cannot point a reader outside the folder.
Everything here works on bytes; the job writes through Beam's filesystems and readers open
through fsspec, each only opening files.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from pixeltext_render.config import RenderConfig, fingerprint
from pixeltext_render.format.sample import MEMBERS, json_object

FORMAT = "pixeltext-shards/2"
MANIFEST = "manifest.json"
INDEX = "shards.jsonl"
REJECTED = "rejected"
JOB_FILE = ".pixeltext-job.json"
WORK = ".work"
BLOCK_SHARDS = 1000  # shards per index block and rejection file
_SHA256 = re.compile("[0-9a-f]{64}")


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def rejections_name(block: int) -> str:
    """A block's rejections, one JSON line each."""
    return f"{REJECTED}/{block:06d}.jsonl"


def plan_name() -> str:
    """The job's plan: what its first pass learnt of the corpus, in totals (written last)."""
    return f"{WORK}/plan.json"


def plan_block_name(block: int) -> str:
    """A block of the plan's chunks, one JSON line each."""
    return f"{WORK}/plan-{block:06d}.jsonl"


def finished_name(index: int) -> str:
    """A finished shard's record (counts, rejections, size, sha256), written before the shard."""
    return f"{WORK}/{shard_name(index)}.json"


def index_block_name(block: int) -> str:
    """A block's shard index lines (streamed into ``shards.jsonl`` at the end)."""
    return f"{WORK}/index-{block:06d}.jsonl"


# A file of each kind the job writes into its output folder
OUTPUT_NAMES = (
    JOB_FILE,
    MANIFEST,
    INDEX,
    shard_name(0),
    plan_name(),
    finished_name(0),
    rejections_name(0),
)


def jsonl(records: list[dict[str, Any]]) -> bytes:
    """JSON Lines, keys sorted: identical records give identical bytes."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records).encode()


def index_line(name: str, samples: int, size: int, sha256: str) -> dict[str, Any]:
    """A shard's line in ``shards.jsonl``."""
    return {"name": name, "samples": samples, "bytes": size, "sha256": sha256}


@dataclass(frozen=True)
class ShardRecord:
    """A shard as the render job wrote it, from the folder's index."""

    bytes: int
    sha256: str


class ManifestError(ValueError):
    """A manifest or index that readers cannot trust; the message names the file and the field."""


def manifest_bytes(header: dict[str, Any], totals: dict[str, int], index_sha256: str, blocks: int) -> bytes:
    """The manifest of a finished job: ``header`` (format, job, render, tokenizer, members),
    the totals, the index's sha256 and how many rejection files there are."""
    index = {"file": INDEX, "shards": totals["shards"], "sha256": index_sha256}
    rejected = {"folder": REJECTED, "parts": blocks}  # (the stored key of the rejection files' count)
    manifest = {**header, "index": index, "rejected": rejected, "totals": totals}
    return json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False).encode()


def manifest_header(job: dict[str, Any], render: dict[str, Any], tokenizer: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "job": job, "render": render, "tokenizer": tokenizer, "members": list(MEMBERS)}


def parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    """A shard folder's manifest, checked: JSON, this format, the render config and tokenizer
    readers rebuild, and the shard count (readers name the shards with :func:`shard_name`).
    ``where`` names the file in errors."""
    manifest = json_object(data, where, ManifestError)
    if manifest.get("format") != FORMAT:
        raise ManifestError(f"{where}: format is {manifest.get('format')!r}, not {FORMAT!r}")

    def field(path: str, kinds: tuple[type, ...]) -> Any:
        value: Any = manifest
        for name in path.split("."):
            value = value.get(name) if isinstance(value, dict) else None
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ManifestError(
                f"{where}: {path} is {value!r}; expected {' or '.join(k.__name__ for k in kinds)}"
            )
        return value

    try:
        RenderConfig.from_dict(field("render.config", (dict,)))
    except (TypeError, ValueError) as error:
        raise ManifestError(f"{where}: render.config is not a render config: {error}") from None
    recorded = field("render.fingerprint", (str,))
    if fingerprint({k: v for k, v in manifest["render"].items() if k != "fingerprint"}) != recorded:
        raise ManifestError(
            f"{where}: render.fingerprint is not that of the render description beside it (edited by "
            "hand?); render the corpus again rather than editing a manifest"
        )
    field("tokenizer.spec", (str,))
    field("tokenizer.fingerprint", (str,))
    vocabulary = field("tokenizer.vocab_size", (int,))
    if vocabulary < 1:
        raise ManifestError(f"{where}: tokenizer.vocab_size must be positive")
    for special in ("bos_id", "eos_id", "pad_id"):
        value = field(f"tokenizer.{special}", (int, type(None)))
        if value is not None and not 0 <= value < vocabulary:
            raise ManifestError(
                f"{where}: tokenizer.{special} is {value}, outside the vocabulary of {vocabulary}"
            )
    field("totals", (dict,))
    shards = field("index.shards", (int,))
    if shards < 1:
        raise ManifestError(f"{where}: index.shards is {shards}, not a positive count")
    if field("index.file", (str,)) != INDEX:
        raise ManifestError(f"{where}: index.file must be {INDEX} (a file in the folder)")
    field("index.sha256", (str,))
    if field("rejected.parts", (int,)) < 0:
        raise ManifestError(f"{where}: rejected.parts must not be negative")
    return manifest


def parse_index(data: bytes, manifest: dict[str, Any], where: str) -> list[ShardRecord]:
    """Each shard's size and sha256, in shard order, from ``shards.jsonl``, which must be the
    file the (checked) manifest's sha256 names and record exactly its shards."""
    if hashlib.sha256(data).hexdigest() != manifest["index"]["sha256"]:
        raise ManifestError(
            f"{where} is not the index its manifest records (sha256 differs): render the folder again"
        )
    records = []
    for number, line in enumerate(data.splitlines()):
        try:
            entry = json.loads(line)
            name, size, digest = entry["name"], entry["bytes"], entry["sha256"]
        except (ValueError, TypeError, KeyError) as error:
            raise ManifestError(f"{where}, line {number + 1}: not a shard record ({error})") from None
        if (
            name != shard_name(number)
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or not (isinstance(digest, str) and _SHA256.fullmatch(digest))
        ):
            raise ManifestError(f"{where}, line {number + 1}: not the record of {shard_name(number)}")
        records.append(ShardRecord(size, digest))
    if len(records) != manifest["index"]["shards"]:
        shards = manifest["index"]["shards"]
        raise ManifestError(f"{where} records {len(records)} shards, the manifest {shards}")
    return records
