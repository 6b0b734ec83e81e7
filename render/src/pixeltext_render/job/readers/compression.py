"""Compressed corpus files, decompressed strictly: a truncated or corrupt file raises where the
damage is, after everything before it has been read.

Beam's own decompressing reader ends a truncated ``.gz``, ``.bz2``, ``.xz`` or ``.zst`` file
early without an error (a file silently loses its end), so the readers open files as stored
and decompress them here. Suffixes are the ones Beam recognises.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Callable
from typing import IO, Any

SUFFIXES = (".gz", ".bz2", ".xz", ".lzma", ".zst", ".zstd", ".deflate")
_CHUNK = 1 << 12  # compressed bytes per step: bounds what one step can expand to


def compression_suffix(name: str) -> str | None:
    """The compression suffix of a file name (as Beam detects it), if any."""
    lowered = name.lower()
    return next((suffix for suffix in SUFFIXES if lowered.endswith(suffix)), None)


class _Inflating(io.RawIOBase):
    """A stream decompressed chunk by chunk with a ``decompressobj``-style object; raises
    ``EOFError`` when the input ends inside a stream and ``ValueError`` on trailing garbage."""

    def __init__(self, raw: IO[bytes], new: Callable[[], Any], concatenated: bool):
        self.raw, self.new, self.concatenated = raw, new, concatenated
        self.decompressor, self.pending, self.started = new(), b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.pending:
            data = self.raw.read(_CHUNK)
            if not data:
                if self.started and not self.decompressor.eof:
                    raise EOFError("the compressed stream ends early (truncated file)")
                return 0
            while data:
                if self.decompressor.eof:  # a stream ended and more follows
                    if not self.concatenated:
                        raise ValueError("data after the end of the compressed stream")
                    self.decompressor = self.new()
                self.started = True
                self.pending += self.decompressor.decompress(data)
                data = self.decompressor.unused_data if self.decompressor.eof else b""
        count = min(len(buffer), len(self.pending))
        buffer[:count] = self.pending[:count]
        self.pending = self.pending[count:]
        return count

    def close(self) -> None:
        self.raw.close()
        super().close()


def _zstd() -> Any:
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj()


def open_decompressed(raw: IO[bytes], name: str) -> IO[bytes]:
    """``raw`` (a file's bytes as stored) decompressed by the suffix of its ``name``."""
    suffix = compression_suffix(name)
    if suffix is None:
        return raw
    if suffix == ".gz":
        return gzip.GzipFile(fileobj=raw)
    if suffix == ".bz2":
        return bz2.BZ2File(raw)
    if suffix in (".xz", ".lzma"):
        return lzma.LZMAFile(raw)
    if suffix == ".deflate":
        return io.BufferedReader(_Inflating(raw, zlib.decompressobj, concatenated=False))
    return io.BufferedReader(_Inflating(raw, _zstd, concatenated=True))
