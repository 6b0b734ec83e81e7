"""Reading a shard folder wherever it is: a local path or a URL (``https://``, ``s3://``,
``gs://``, any fsspec filesystem), in this process through fsspec, never through a shell.

This module only opens files; what they hold and how it is checked is the shard format's
(``pixeltext_render.format``). The manifest is checked before any name is used, and shards are
named by number, so a manifest cannot point a reader anywhere else; the index (checked against
the manifest's sha256) gives each shard's size, checked when the shard is opened, and sha256,
checked as the shard is streamed (no second read). Reading ``s3://`` needs the ``s3`` extra
(``s3fs``) and ``gs://`` the ``gcs`` extra (``gcsfs``); ``http(s)://`` works out of the box.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import IO, Any

import fsspec

from pixeltext_render.format.folder import MANIFEST, ShardRecord, parse_index, parse_manifest, shard_name
from pixeltext_render.format.tar import DigestingReader, TarDamaged, TarSamples, webdataset_sample

EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}  # protocol -> pixeltext-train extra


class MissingExtra(ImportError):
    """Reading this kind of URL needs an optional dependency that is not installed."""


class ShardError(RuntimeError):
    """A shard file that cannot be read (missing, truncated, not a tar, not what its index says)."""


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
    """The folder's manifest, checked (``ManifestError`` names the file and field)."""
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
    """Every shard of a checked manifest, as a URL under ``location``."""
    return [join(location, shard_name(index)) for index in range(manifest["index"]["shards"])]


def shard_records(
    location: str, manifest: dict[str, Any], storage_options: dict[str, Any] | None = None
) -> dict[str, ShardRecord]:
    """Each shard's URL (as :func:`shard_urls` names it) with its size and sha256 from the
    folder's index."""
    path = join(location, manifest["index"]["file"])
    with open_binary(path, storage_options) as stream:
        records = parse_index(stream.read(), manifest, path)
    return dict(zip(shard_urls(location, manifest), records, strict=True))


def tar_samples(
    url: str,
    skip: int = 0,
    storage_options: dict[str, Any] | None = None,
    expected: ShardRecord | None = None,
) -> Iterator[dict[str, Any]]:
    """The samples of a shard in file order, after the first ``skip``, as WebDataset hands
    them on. Raises :class:`ShardError` where the file cannot be read further; the samples
    before the damage have been yielded, the partial one at the damage is not. With
    ``expected`` (the shard's record), a shard of another size is refused before any sample,
    and one read to its end whose sha256 differs raises after its samples (they cannot be taken
    back: the error says how many were read)."""
    samples = None
    try:
        filesystem, path = filesystem_of(url, storage_options)
        if expected is not None:
            found = filesystem.size(path)
            if found is not None and found != expected.bytes:
                raise ShardError(
                    f"it is {found} bytes, its index records {expected.bytes} (truncated or replaced)"
                )
        with filesystem.open(path, "rb") as raw:
            samples = TarSamples(stream := DigestingReader(raw), skip)
            for key, members in samples:
                yield webdataset_sample(key, members, url)
            stream.drain()
    except (OSError, EOFError, tarfile.TarError, TarDamaged, ShardError) as error:
        read = samples.read if samples else 0
        raise ShardError(f"{url}: unreadable after sample {read}: {error}") from None
    if expected is not None and stream.digest.hexdigest() != expected.sha256:
        raise ShardError(
            f"{url}: its sha256 is not the one its index records (the bytes changed after it was "
            f"written); its {samples.read} samples were read before the end showed it"
        )
