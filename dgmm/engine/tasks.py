"""The default task size: bytes of rows per chunk task, from the rule in docs/scaling.md.

A pass over data of ``nbytes`` in tasks of ``T`` bytes on ``W`` workers spends about
2.14 (nbytes / T) o on the scheduler (o per task) against nbytes / (r W) of E-step
(r bytes per second per worker): the share 2.14 o r W / T stays under 5% when
T >= 43 (o x r) W. With o x r = 256 kB (above every figure measured), that is about
11 MiB per worker, at least 16 MiB; at most nbytes / (2 W) (two tasks per worker) and a
tenth of a worker's memory limit.
"""
from __future__ import annotations

import math

#: o x r, the bytes one worker processes while the scheduler spends on one task
OVERHEAD_BYTES = 256 * 1000
#: tasks whose scheduling costs at most this share of a pass
OVERHEAD_SHARE = 0.05
#: read + E-step (+ merges) tasks per chunk out of core (2.14) and persisted (1.14)
TASKS_PER_CHUNK = {False: 2.14, True: 1.14}
MIN_TASK_BYTES = 16 * 2**20


def task_bytes(n_workers: int, *, nbytes: int | None = None,
               memory_limit: int | None = None, persisted: bool = False) -> int:
    """Bytes of rows per task for ``n_workers`` workers.

    Parameters
    ----------
    n_workers : int
        Workers (threads that run tasks) of the cluster, at least 1.
    nbytes : int, optional
        Bytes of the data; with it, tasks are at most nbytes / (2 W).
    memory_limit : int, optional
        A worker's memory limit in bytes; with it, tasks are at most a tenth of it.
    persisted : bool
        The data are held in memory (no read task per chunk).

    Returns
    -------
    int
        ``clamp(TASKS_PER_CHUNK / OVERHEAD_SHARE x OVERHEAD_BYTES x W, 16 MiB, bounds)``;
        when a bound is below 16 MiB, the bound (at least one byte).
    """
    workers = max(1, int(n_workers))
    wanted = math.ceil(TASKS_PER_CHUNK[bool(persisted)] / OVERHEAD_SHARE * OVERHEAD_BYTES
                       * workers)
    size = max(MIN_TASK_BYTES, wanted)
    if nbytes is not None:
        size = min(size, max(1, int(nbytes) // (2 * workers)))
    if memory_limit:
        size = min(size, max(1, int(memory_limit) // 10))
    return int(size)


def cluster_task_bytes(client, nbytes: int | None = None) -> int:
    """``task_bytes`` for the workers of a ``distributed.Client`` (their threads, and the
    smallest memory limit among them)."""
    workers = client.scheduler_info().get("workers", {}) if client is not None else {}
    threads = sum(int(w.get("nthreads", 1)) for w in workers.values()) or 1
    limits = [int(w["memory_limit"]) for w in workers.values() if w.get("memory_limit")]
    return task_bytes(threads, nbytes=nbytes, memory_limit=min(limits) if limits else None)
