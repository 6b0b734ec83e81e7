"""Exclusive wall time per stage of the render job, measured inside one in-process job.

The functions that make up each stage are wrapped while the clock runs; a stage's time
excludes the stages called inside it (``encode_strip`` less its PNG), so the stages add up to
the time spent in them, and what the whole job took beyond that is Beam's own work (graph
construction, start-up, bundles, the shuffle, both passes). Only a job run with one worker in
this process (DirectRunner ``in_memory``) calls the wrapped functions.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from pixeltext_render import raster, renderer, tokenizers
from pixeltext_render.format import sample
from pixeltext_render.job import pipeline
from pixeltext_render.job.readers.files import ParseFile

# stage -> (owner, attribute name) of the functions that do its work
STAGES: dict[str, list[tuple[Any, str]]] = {
    "read and parse files": [(ParseFile, "process"), (ParseFile, "located")],
    "shape (itemise, HarfBuzz, glyph ink, piece cache)": [
        (renderer.Renderer, "_shape"),
        (renderer.Renderer, "_place"),
    ],
    "rasterise (scatter ink, colour, end patch)": [(raster.Canvas, "draw"), (raster.Canvas, "finish")],
    "tokenise and align": [
        (tokenizers.SentencePieceTokenizer, "encode"),
        (tokenizers.ByteTokenizer, "encode"),
        (renderer.Renderer, "_token_patches"),
    ],
    "encode PNG (deflate)": [(sample, "encode_png")],
    "encode other members (npy, json, text)": [(pipeline, "encode_strip")],
    "tar": [(pipeline, "tar_bytes")],
    "write shard": [(pipeline, "write_shard")],
}


class StageClock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._children: list[float] = []  # per open call: time spent in stages it called

    def _timed(self, stage: str, function):
        if inspect.isgeneratorfunction(function):

            @functools.wraps(function)
            def generator(*args, **kwargs):
                iterator = function(*args, **kwargs)
                while True:
                    try:
                        item = self._call(stage, next, iterator)
                    except StopIteration:
                        return
                    yield item

            return generator

        @functools.wraps(function)
        def call(*args, **kwargs):
            return self._call(stage, function, *args, **kwargs)

        return call

    def _call(self, stage: str, function, *args, **kwargs):
        self._children.append(0.0)
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            inner = self._children.pop()
            self.seconds[stage] += elapsed - inner
            if self._children:
                self._children[-1] += elapsed

    @contextmanager
    def running(self) -> Iterator[StageClock]:
        with ExitStack() as stack:
            for stage, targets in STAGES.items():
                for owner, name in targets:
                    original = getattr(owner, name)
                    setattr(owner, name, self._timed(stage, original))
                    stack.callback(setattr, owner, name, original)
            yield self
