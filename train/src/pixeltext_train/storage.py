"""Reading a shard folder wherever it is: a local path or a URL (``https://``, ``s3://``,
``gs://``, any fsspec filesystem), in this process through fsspec, never through a shell.

A shard folder's files are named by its ``manifest.json``, which this module checks against
the schema (``pixeltext_render.schema.parse_manifest``) before any name is used: a shard is
a plain file name inside the folder, so a manifest cannot point a reader anywhere else. Its
``shards.jsonl`` (checked against the manifest's sha256) gives each shard's size, checked when
the shard is opened, and sha256, checked as the shard is streamed (no second read).
Reading ``s3://`` needs the ``s3`` extra (``s3fs``) and ``gs://`` the ``gcs`` extra
(``gcsfs``); ``http(s)://`` works out of the box.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import fsspec

from pixeltext_render.schema import ManifestError, parse_manifest, shard_name

MANIFEST = "manifest.json"
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}  # protocol -> pixeltext-train extra
# A strip's sample is five members of kilobytes; a sample far beyond that is a broken or hostile tar.
MAX_SAMPLE_BYTES = 64 * 2**20
MAX_SAMPLE_MEMBERS = 32


class MissingExtra(ImportError):
    """Reading this kind of URL needs an optional dependency that is not installed."""


class ShardError(RuntimeError):
    """A shard file that cannot be read (missing, truncated, not a tar, not what its index says)."""


@dataclass(frozen=True)
class ShardRecord:
    """A shard as the render job wrote it, from the folder's index."""

    bytes: int
    sha256: str


class _Digesting:
    """A read-only stream that hashes and counts every byte read through it."""

    def __init__(self, stream: IO[bytes]):
        self.stream, self.digest, self.size = stream, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(2**20):
            pass


def join(location: str, name: str) -> str:
    return f"{str(location).rstrip('/')}/{name}"


def filesystem_of(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem holding ``url`` and the path on it."""
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as error:
        protocol = url.split("://", 1)[0]
        extra = EXTRAS.get(protocol)
        hint = f": pip install 'pixeltext-train[{extra}]'" if extra else ""
        raise MissingExtra(f"reading {protocol}:// URLs needs an optional package{hint} ({error})") from None


def open_binary(url: str, storage_options: dict[str, Any] | None = None) -> IO[bytes]:
    """A readable binary stream of ``url`` (local path or any fsspec URL)."""
    filesystem, path = filesystem_of(url, storage_options)
    return filesystem.open(path, "rb")


def read_manifest(location: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The folder's ``manifest.json``, checked (``ManifestError`` names the file and field)."""
    path = join(location, MANIFEST)
    try:
        with open_binary(path, storage_options) as stream:
            data = stream.read()
    except NotADirectoryError:
        raise NotADirectoryError(
            f"{location} is a file: point data.shards at the folder holding {MANIFEST} (the render job's OUT)"
        ) from None
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no {MANIFEST} at {location}: point data.shards at a folder the render job wrote (make render)"
        ) from None
    return parse_manifest(data, path)


def shard_urls(location: str, manifest: dict[str, Any]) -> list[str]:
    """Every shard of a checked manifest, as a URL under ``location``: named by number (the
    manifest gives the count, never a name), so no file outside the folder can be named."""
    return [join(location, shard_name(index)) for index in range(manifest["index"]["shards"])]


def shard_records(
    location: str, manifest: dict[str, Any], storage_options: dict[str, Any] | None = None
) -> dict[str, ShardRecord]:
    """Each shard's URL (as :func:`shard_urls` names it) with its size and sha256 from the
    folder's index, which must be the file the manifest's sha256 names."""
    path = join(location, manifest["index"]["file"])
    with open_binary(path, storage_options) as stream:
        data = stream.read()
    if hashlib.sha256(data).hexdigest() != manifest["index"]["sha256"]:
        raise ManifestError(
            f"{path} is not the index its manifest records (sha256 differs): render the folder again"
        )
    records = {}
    for number, line in enumerate(data.splitlines()):
        try:
            entry = json.loads(line)
            name, size, digest = entry["name"], entry["bytes"], entry["sha256"]
        except (ValueError, TypeError, KeyError) as error:
            raise ManifestError(f"{path}, line {number + 1}: not a shard record ({error})") from None
        if (
            name != shard_name(number)
            or not isinstance(size, int)
            or size < 0
            or not (isinstance(digest, str) and re.fullmatch("[0-9a-f]{64}", digest))
        ):
            raise ManifestError(f"{path}, line {number + 1}: not the record of {shard_name(number)}")
        records[join(location, name)] = ShardRecord(size, digest)
    if len(records) != manifest["index"]["shards"]:
        raise ManifestError(
            f"{path} records {len(records)} shards, the manifest {manifest['index']['shards']}"
        )
    return records


def tar_samples(
    url: str,
    skip: int = 0,
    storage_options: dict[str, Any] | None = None,
    expected: ShardRecord | None = None,
) -> Iterator[dict[str, Any]]:
    """The samples of a shard in file order, after the first ``skip``: ``{"__key__": key,
    "__url__": url, "<extension>": bytes, ...}`` as WebDataset groups members (key = the name up to the first
    dot of its last part). Raises :class:`ShardError` where the file cannot be read further
    (not an uncompressed tar, truncated, or a sample of more than ``MAX_SAMPLE_BYTES`` or
    ``MAX_SAMPLE_MEMBERS``); the samples before the damage have been yielded, the partial one
    at the damage is not. With ``expected`` (the shard's record), a shard of another size is
    refused before any sample, and one read to its end whose sha256 differs raises after its
    samples (they cannot be taken back: the error says how many were read)."""
    index, key, members, size = 0, None, {}, 0
    try:
        filesystem, path = filesystem_of(url, storage_options)
        if expected is not None:
            found = filesystem.size(path)
            if found is not None and found != expected.bytes:
                raise ShardError(
                    f"it is {found} bytes, its index records {expected.bytes} (truncated or replaced)"
                )
        with (
            filesystem.open(path, "rb") as raw,
            tarfile.open(fileobj=(stream := _Digesting(raw)), mode="r|") as archive,
        ):
            for member in archive:
                if not member.isfile():
                    continue
                folder, _, base = member.name.rpartition("/")
                stem, dot, extension = base.partition(".")
                name = f"{folder}/{stem}" if folder else stem
                if not dot or not stem:
                    continue  # not a sample member
                if name != key:
                    if key is not None:
                        if index >= skip:
                            yield {"__key__": key, "__url__": url, **members}
                        index += 1
                    key, members, size = name, {}, 0
                if index < skip:
                    continue  # (tarfile skips the member's data)
                size += member.size
                if size > MAX_SAMPLE_BYTES or len(members) >= MAX_SAMPLE_MEMBERS:
                    raise ShardError(f"sample {key} grows past {len(members)} members and {size} bytes")
                members[extension] = archive.extractfile(member).read()
            if key is not None and index >= skip:
                yield {"__key__": key, "__url__": url, **members}
            stream.drain()
    except (OSError, EOFError, tarfile.TarError, ShardError) as error:
        raise ShardError(f"{url}: unreadable after sample {index}: {error}") from None
    if expected is not None and stream.digest.hexdigest() != expected.sha256:
        raise ShardError(
            f"{url}: its sha256 is not the one its index records (the bytes changed after it was "
            f"written); its {index + (key is not None)} samples were read before the end showed it"
        )
