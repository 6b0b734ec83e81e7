"""Corpus files on any filesystem Beam knows (local paths, ``gs://``, ``s3://``, ``hdfs://``):
what a user's pattern means (``resolve_pattern``, on the launcher: a pattern in, the pattern
to match out), and the ``Storage`` both passes read files through (``BEAM_FILES``: a path in,
the file's bytes as stored, or its size and modification time, out).
"""

from __future__ import annotations

import glob
from typing import IO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pixeltext_render.job.readers.files import GLOB


class BeamFiles:
    """The readers' ``Storage`` through Beam's ``FileSystems``."""

    def open(self, path: str) -> IO[bytes]:
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)

    def stat(self, path: str) -> tuple[int, float] | None:
        found = FileSystems.match([glob.escape(path)], limits=[1])[0].metadata_list  # (a name, not a pattern)
        return (found[0].size_in_bytes, found[0].last_updated_in_seconds or 0.0) if found else None


BEAM_FILES = BeamFiles()


def _matches_any(pattern: str) -> bool:
    return bool(FileSystems.match([pattern], limits=[1])[0].metadata_list)


def resolve_pattern(pattern: str) -> str:
    """The pattern to match for what a user named: a folder means every file under it, a file
    whose name holds glob characters (``data[1].jsonl``) means that file. Checked on the
    launcher, once per pattern, with two or three listing calls (each stops at the first file)."""
    if GLOB.search(pattern) is not None:
        if FileSystems.exists(pattern):
            return glob.escape(pattern)
    elif not pattern.endswith("/") and FileSystems.exists(pattern):
        folder = pattern + "/**"
        return folder if _matches_any(folder) else pattern
    else:
        folder = pattern.rstrip("/") + "/**"
        if _matches_any(folder):
            return folder
    if not _matches_any(pattern):
        raise FileNotFoundError(f"corpus pattern {pattern!r} matches no file")
    return pattern
