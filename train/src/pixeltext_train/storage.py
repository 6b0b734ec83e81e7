"""Reading a shard folder wherever it is: a local path or a URL (``https://``, ``s3://``,
``gs://``, any fsspec filesystem), in this process through fsspec, never through a shell.

A shard folder's files are named by its ``manifest.json``, which this module checks against
the schema (``pixeltext_render.schema.parse_manifest``) before any name is used: a shard is
a plain file name inside the folder, so a manifest cannot point a reader anywhere else.
Reading ``s3://`` needs the ``s3`` extra (``s3fs``) and ``gs://`` the ``gcs`` extra
(``gcsfs``); ``http(s)://`` works out of the box.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import IO, Any

import fsspec

from pixeltext_render.schema import parse_manifest, shard_name

MANIFEST = "manifest.json"
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}  # protocol -> pixeltext-train extra
# A strip's sample is five members of kilobytes; a sample far beyond that is a broken or hostile tar.
MAX_SAMPLE_BYTES = 64 * 2**20
MAX_SAMPLE_MEMBERS = 32


class MissingExtra(ImportError):
    """Reading this kind of URL needs an optional dependency that is not installed."""


class ShardError(RuntimeError):
    """A shard file that cannot be read (missing, truncated, not a tar)."""


def join(location: str, name: str) -> str:
    return f"{str(location).rstrip('/')}/{name}"


def open_binary(url: str, storage_options: dict[str, Any] | None = None) -> IO[bytes]:
    """A readable binary stream of ``url`` (local path or any fsspec URL)."""
    try:
        filesystem, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as error:
        protocol = url.split("://", 1)[0]
        extra = EXTRAS.get(protocol)
        hint = f": pip install 'pixeltext-train[{extra}]'" if extra else ""
        raise MissingExtra(f"reading {protocol}:// URLs needs an optional package{hint} ({error})") from None
    return filesystem.open(path, "rb")


def read_manifest(location: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The folder's ``manifest.json``, checked (``ManifestError`` names the file and field)."""
    path = join(location, MANIFEST)
    try:
        with open_binary(path, storage_options) as stream:
            data = stream.read()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no {MANIFEST} at {location}: point data.shards at a folder the render job wrote (make render)"
        ) from None
    return parse_manifest(data, path)


def shard_urls(location: str, manifest: dict[str, Any]) -> list[str]:
    """Every shard of a checked manifest, as a URL under ``location``: named by number (the
    manifest gives the count, never a name), so no file outside the folder can be named."""
    return [join(location, shard_name(index)) for index in range(manifest["index"]["shards"])]


def tar_samples(
    url: str, skip: int = 0, storage_options: dict[str, Any] | None = None
) -> Iterator[dict[str, Any]]:
    """The samples of a shard in file order, after the first ``skip``: ``{"__key__": key,
    "__url__": url, "<extension>": bytes, ...}`` as WebDataset groups members (key = the name up to the first
    dot of its last part). Raises :class:`ShardError` where the file cannot be read further
    (not an uncompressed tar, truncated, or a sample of more than ``MAX_SAMPLE_BYTES`` or
    ``MAX_SAMPLE_MEMBERS``); the samples before the damage have been yielded, the partial one
    at the damage is not."""
    index, key, members, size = 0, None, {}, 0
    try:
        with open_binary(url, storage_options) as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
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
    except (OSError, EOFError, tarfile.TarError, ShardError) as error:
        raise ShardError(f"{url}: unreadable after sample {index}: {error}") from None
