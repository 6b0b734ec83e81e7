"""The render job's first pass: resolved corpus patterns -> every file they match
(``MatchCorpus``, matched by the workers: the job's request never lists files) -> spread over
the workers (``Spread``; not for one worker in this process) -> each file read once
(``SurveyFile``) -> ``(ALL_SURVEYS, PartSurvey)`` for each part it is cut into and ``(bucket,
KeyBatch)`` for its documents' keys, what ``planning`` makes the plan of.

A survey estimates every document's strips, cuts a line-based file into parts of about
``part_strips`` estimated strips at line starts (a Parquet file is cut by row group; any other
file is one part), records a digest of each part's documents, and hashes every document's key
so that duplicate ids can be found without moving text. The second pass reads each part again
(``readers.files.ParseFile``), where it is rendered.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import apache_beam as beam
from apache_beam.io import fileio

from pixeltext_render.format.sample import key_hash
from pixeltext_render.job.filesystems import BEAM_FILES
from pixeltext_render.job.grouping import GroupInto
from pixeltext_render.job.readers.base import CorpusFile, Document, FilePart, ReadOptions
from pixeltext_render.job.readers.compression import compression_suffix
from pixeltext_render.job.readers.files import (
    GLOB,
    DocumentsDigest,
    ParseFile,
    corpus_file,
    corpus_folder,
    file_parts,
    line_based,
)

SPLIT_BYTES = 8 << 20  # a compressed file's parts hold at least this many bytes (decompressed)
KEY_BUCKETS = 64  # groups the first pass's key hashes are spread over to find duplicates
ALL_SURVEYS = -1  # the group gathering every part's survey, cut into chunks (key buckets: 0, 1, ...)


@dataclass(frozen=True)
class PartSurvey:
    """What the first pass learns of a part: where it is, and its documents' estimated strips."""

    part: FilePart
    strips: int


@dataclass(frozen=True)
class KeyBatch:
    """The keys of one part's documents that fall into one key bucket: 12-byte hashes, and
    each document's position in its file less the rows before the part (what finding
    duplicate ids needs, and no text: 16 bytes a document)."""

    path: str
    name: str
    first_row: int
    digests: bytes
    positions: bytes  # uint32, native order, each + first_row: the position


def key_digest(key: str) -> bytes:
    """96 bits: two different keys share one with a chance of about 10^-12 in 400 M keys."""
    return hashlib.blake2b(key.encode(), digest_size=12).digest()


class MatchCorpus(beam.PTransform):
    """Resolved patterns (``resolve_pattern``, on the launcher) -> every ``CorpusFile`` they
    match, each once; the workers do the matching. A single pattern without glob characters
    names one file, matched once: it needs no ``Distinct`` (a shuffle, a stage more)."""

    def __init__(self, patterns: list[str]):
        super().__init__()
        self.patterns = patterns

    def expand(self, pipeline):
        patterns = self.patterns
        folder = corpus_folder(patterns)
        found = (
            pipeline
            | "Patterns" >> beam.Create(patterns)
            | "Match" >> fileio.MatchAll()
            # (a name that is not UTF-8 holds surrogates, which Beam's string coder refuses)
            | "Path"
            >> beam.Map(
                lambda found: (
                    found.path.encode("utf-8", "surrogateescape"),
                    found.size_in_bytes,
                    found.last_updated_in_seconds,
                )
            )
        )
        if len(patterns) > 1 or any(GLOB.search(pattern) for pattern in patterns):
            found = found | "Once" >> beam.Distinct()
        return found | "File" >> beam.MapTuple(
            lambda path, size, modified: corpus_file(
                path.decode("utf-8", "surrogateescape"), size, modified, folder
            )
        )


class SurveyFile(beam.DoFn):
    """A file -> ``(ALL_SURVEYS, PartSurvey)`` for each part it is cut into, and ``(bucket,
    KeyBatch)`` for its documents' keys (the first pass, one read of the file).

    A line-based file is cut before a document when the part so far holds documents estimated
    (``estimate(text)``) at ``part_strips`` strips with it; a compressed file only after at
    least ``SPLIT_BYTES`` decompressed bytes as well, because a part of it is reached by
    decompressing everything before it."""

    def __init__(self, options: ReadOptions, estimate: Callable[[str], int], part_strips: int):
        self.options, self.estimate, self.part_strips = options, estimate, part_strips

    def process(self, corpus_file: CorpusFile) -> Iterator[tuple[int, PartSurvey | KeyBatch]]:
        parse = ParseFile(self.options, BEAM_FILES)
        cuttable = line_based(corpus_file.name, self.options)
        least_bytes = SPLIT_BYTES if compression_suffix(corpus_file.name) else 0
        for whole in file_parts(corpus_file, self.options, BEAM_FILES):
            part, strips, keys, digest = whole, 0, [], DocumentsDigest()
            for offset, record in parse.located(whole):
                if not isinstance(record, Document):
                    continue
                cost = self.estimate(record.text)
                full = strips and strips + cost > self.part_strips and offset - part.start >= least_bytes
                if cuttable and full:
                    yield from _surveyed(replace(part, end=offset), strips, keys, digest)
                    part, strips, keys = FilePart(corpus_file, None, record.position - 1, offset), 0, []
                    digest = DocumentsDigest()
                strips += cost
                keys.append((key_digest(record.key), record.position))
                digest.add(record)
            yield from _surveyed(part, strips, keys, digest)


def _surveyed(part: FilePart, strips: int, keys: list[tuple[bytes, int]], digest: DocumentsDigest):
    part = replace(part, digest=digest.hexdigest())
    yield ALL_SURVEYS, PartSurvey(part, strips)
    buckets: dict[int, list[tuple[bytes, int]]] = {}
    for digest, position in keys:
        buckets.setdefault(int.from_bytes(digest[:4], "big") % KEY_BUCKETS, []).append((digest, position))
    for bucket, members in sorted(buckets.items()):
        digests = b"".join(digest for digest, _ in members)
        positions = array("I", (position - part.first_row for _, position in members)).tobytes()
        yield bucket, KeyBatch(part.file.path, part.file.name, part.first_row, digests, positions)


class Spread(beam.PTransform):
    """Files -> the same files, regrouped into ``buckets`` groups (by a hash of each name):
    the reading is spread over workers, and over as many partitions."""

    def __init__(self, buckets: int):
        super().__init__()
        self.buckets = buckets

    def expand(self, files):
        buckets = self.buckets
        return (
            files
            | "Bucket" >> beam.Map(lambda found: (key_hash(found.name) % buckets, found))
            | "Group" >> GroupInto(buckets)
            | "Files" >> beam.FlatMap(lambda bucket: bucket[1])
        )


class SurveyCorpus(beam.PTransform):
    """Resolved corpus patterns -> the first pass's ``SurveyFile`` outputs, files spread over
    ``buckets`` groups (one per worker), unless ``spread`` is false: a pass run in this process
    on one worker has nothing to spread, and the regrouping's dozen transforms and its stage
    would only add to Beam's fixed cost."""

    def __init__(
        self,
        patterns: list[str],
        options: ReadOptions,
        estimate: Callable[[str], int],
        part_strips: int,
        buckets: int,
        spread: bool = True,
    ):
        super().__init__()
        self.patterns, self.options, self.estimate = patterns, options, estimate
        self.part_strips, self.buckets, self.spread = part_strips, buckets, spread

    def expand(self, pipeline):
        files = pipeline | "Match" >> MatchCorpus(self.patterns)
        if self.spread:
            files = files | "Spread" >> Spread(self.buckets)
        return files | "Survey" >> beam.ParDo(SurveyFile(self.options, self.estimate, self.part_strips))
