"""Grouping into a known number of groups, every group present (the empty ones too), and
combining everything into one value."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam

MAX_SEEDS = 65_536  # values created to make the groups (a bound on the job request's size)


class GroupInto(beam.PTransform):
    """``(group, element)`` pairs, group in ``range(groups)`` -> ``(group, [elements])`` for
    every group, empty ones included.

    The empty groups come from a ``Create`` of one value per group (at most ``MAX_SEEDS``),
    each expanded to its groups. Beam's DaskRunner makes a partition of each created value
    (with ``dask_partition_size`` 1), holds each partition as a list, and a grouping keeps the
    partitions of its input: so the groups are spread over as many partitions as there are
    seeds, not held in the few that a job's other ``Create``s make."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def expand(self, pairs):
        groups = self.groups
        seeds = max(min(groups, MAX_SEEDS), 1)
        every = (
            pairs.pipeline
            | "Seeds" >> beam.Create(range(seeds))
            | "Every" >> beam.FlatMap(lambda seed: ((group, None) for group in range(seed, groups, seeds)))
        )
        return (
            (pairs, every)
            | "Union" >> beam.Flatten()
            | "Group" >> beam.GroupByKey()
            | "Members" >> beam.MapTuple(lambda group, found: (group, [m for m in found if m is not None]))
        )


class CombineAll(beam.PTransform):
    """Elements -> ``combine(all of them)``, nothing for none (as Beam's
    ``CombineGlobally(combine).without_defaults()``), by one ``GroupByKey``: the job combines a
    few small values (a plan's fragments, blocks' totals), where Beam's combine, which
    pre-combines on each worker in four steps, costs a local job about 12 ms a pass."""

    def __init__(self, combine: Callable[[Iterable[Any]], Any]):
        super().__init__()
        self.combine = combine

    def expand(self, pcoll):
        combine = self.combine
        return (
            pcoll
            | "Key" >> beam.Map(lambda element: (None, element))
            | "Group" >> beam.GroupByKey()
            | "Combine" >> beam.MapTuple(lambda _, elements: combine(elements))
        )
