"""Whether to keep the data's chunks in worker memory across the passes of a fit.

The policy weighs the size of the data against the memory of the workers (or of this
machine without a distributed client); the runner applies it before fitting.
"""
from __future__ import annotations

import logging

from ..errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["decide_persist", "PERSIST_CLUSTER_FRACTION", "PERSIST_LOCAL_FRACTION"]

#: fraction of the workers' total memory_limit below which persist='auto' keeps the data
PERSIST_CLUSTER_FRACTION = 0.5
#: fraction of the machine's available memory used when there is no distributed client
PERSIST_LOCAL_FRACTION = 0.25


def _workers_memory_limit(client) -> int:
    import psutil

    workers = client.scheduler_info(n_workers=-1)["workers"]
    total = 0
    for worker in workers.values():
        limit = worker.get("memory_limit") or 0
        total += int(limit) if limit else psutil.virtual_memory().total
    return total


def decide_persist(nbytes: int, mode: str | bool = "auto", client=None) -> bool:
    """Whether to keep the data's chunks in memory across EM iterations.

    Rule: ``mode`` True / 'true' -> True; False / 'false' -> False; 'auto' -> True when
    the data are small enough to fit comfortably:

    - with a distributed ``client``: ``nbytes`` < 50% of the sum of the workers'
      ``memory_limit`` (a worker without a limit counts as the machine's total memory);
      the rest leaves room for the tasks' temporaries and Dask's spill thresholds (60%).
    - without a client (local threads): ``nbytes`` < 25% of the machine's currently
      available memory (``psutil.virtual_memory().available``).

    Parameters
    ----------
    nbytes : int
        The size of the array as handed out (``dgmm.data.DataInfo.nbytes``).
    mode : {'auto', True, False} or str
        The workflow's ``data.persist`` (``'true'``/``'false'`` texts accepted).
    client : distributed.Client, optional
        The cluster the data would be kept on.

    Returns
    -------
    bool
        True to persist the data.
    """
    if isinstance(mode, bool):
        return mode
    text = str(mode).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    if text != "auto":
        raise ConfigError(f"persist must be 'auto', true or false, got {mode!r}.")
    if client is not None:
        budget = _workers_memory_limit(client)
        decision = nbytes < PERSIST_CLUSTER_FRACTION * budget
        log.info(
            "persist=auto: data %d bytes vs %d bytes of worker memory limits: %s",
            nbytes, budget, "persist" if decision else "stream from the source",
        )
        return decision
    import psutil

    available = psutil.virtual_memory().available
    decision = nbytes < PERSIST_LOCAL_FRACTION * available
    log.info(
        "persist=auto: data %d bytes vs %d bytes available: %s",
        nbytes, available, "persist" if decision else "stream from the source",
    )
    return decision
