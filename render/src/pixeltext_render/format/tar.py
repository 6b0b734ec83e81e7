"""A shard's bytes: samples into a deterministic tar, and a tar stream back into samples.

Writing sorts the samples by key and writes each sample's members in ``MEMBERS`` order with
mtime 0 and no owner, so identical samples give identical bytes. Reading groups members into
samples as WebDataset does (the key is a member's name up to the first dot of its last path
part), streaming: a shard is read once, front to back, and hashed as it is read.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from typing import IO, Any

from pixeltext_render.format.sample import MEMBERS

# A strip's sample is five members of kilobytes; a sample far beyond that is a broken or hostile tar.
MAX_SAMPLE_BYTES = 64 * 2**20
MAX_SAMPLE_MEMBERS = 32


class TarDamaged(ValueError):
    """A tar stream that cannot be read further as samples."""


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


class DigestingReader:
    """A read-only stream that hashes and counts every byte read through it."""

    def __init__(self, stream: IO[bytes]):
        self.stream, self.digest, self.size = stream, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Read to the end (the digest then covers the whole stream)."""
        while self.read(2**20):
            pass


class TarSamples:
    """The samples of a tar stream in file order, after the first ``skip``: ``(key, {extension:
    bytes})``. ``read`` counts the samples met (skipped ones included), so that an error can say
    where the damage is; a sample of more than ``MAX_SAMPLE_BYTES`` or ``MAX_SAMPLE_MEMBERS``
    raises :class:`TarDamaged`, as does a stream that is not an uncompressed tar (``tarfile``'s
    errors and ``EOFError`` also come through as they are)."""

    def __init__(self, stream: IO[bytes], skip: int = 0):
        self.stream, self.skip, self.read = stream, skip, 0
        self.open_key: str | None = None  # the sample being read when the stream broke

    def __iter__(self) -> Iterator[tuple[str, dict[str, bytes]]]:
        members: dict[str, bytes] = {}
        size = 0
        with tarfile.open(fileobj=self.stream, mode="r|") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                folder, _, base = member.name.rpartition("/")
                stem, dot, extension = base.partition(".")
                if not dot or not stem:
                    continue  # not a sample member
                name = f"{folder}/{stem}" if folder else stem
                if name != self.open_key:
                    if self.open_key is not None:
                        if self.read >= self.skip:
                            yield self.open_key, members
                        self.read += 1
                    self.open_key, members, size = name, {}, 0
                if self.read < self.skip:
                    continue  # (tarfile skips the member's data)
                size += member.size
                if size > MAX_SAMPLE_BYTES or len(members) >= MAX_SAMPLE_MEMBERS:
                    raise TarDamaged(f"sample {name} grows past {len(members)} members and {size} bytes")
                members[extension] = archive.extractfile(member).read()
            if self.open_key is not None:
                if self.read >= self.skip:
                    yield self.open_key, members
                self.read += 1
                self.open_key = None


def webdataset_sample(key: str, members: dict[str, bytes], url: str) -> dict[str, Any]:
    """A sample as WebDataset hands it on, and :func:`~pixeltext_render.format.sample.decode_sample`
    takes it: ``{"__key__": key, "__url__": url, extension: bytes, ...}``."""
    return {"__key__": key, "__url__": url, **members}
