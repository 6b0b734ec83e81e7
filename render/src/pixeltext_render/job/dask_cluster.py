"""A Dask cluster for Beam's DaskRunner: an existing one by address, or a local one made for
the job (one single-threaded worker process per core) and shut down after it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
CONNECT_SECONDS = 10


class DaskUnavailable(RuntimeError):
    """The Dask extra is not installed, or the cluster cannot be reached."""


def _distributed():
    try:
        import distributed
    except ImportError:
        raise DaskUnavailable(
            "the Dask runner needs the dask extra: pip install 'pixeltext-render[dask]'"
        ) from None
    return distributed


@contextmanager
def dask_cluster(address: str | None, workers: int) -> Iterator[tuple[str, int]]:
    """The scheduler address of a cluster that answers, and its worker threads (when it
    answered), for the length of the block."""
    distributed = _distributed()
    if address:
        try:
            client = distributed.Client(address, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError) as error:
            raise DaskUnavailable(
                f"no Dask scheduler answers at {address} within {CONNECT_SECONDS} s ({error}); "
                "check DASK_ADDRESS, or leave it unset for a local cluster"
            ) from None
        threads = sum(client.nthreads().values())
        client.close()
        yield address, threads
        return
    import dask

    # No dashboard, so no use for the workers' statistical profiler, which samples every 10 ms
    # and keeps the last 1,000 s of stacks: a worker's memory grew with the job's length.
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    try:
        yield cluster.scheduler_address, workers
    finally:
        cluster.close()
