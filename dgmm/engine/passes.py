"""The thin Dask layer: one pass = a chunk function mapped over row blocks, then a fixed
tree reduction of the small per-chunk values.

With ``dgmm.engine.models`` (many models per pass) and ``dgmm.engine.minibatch`` (the
chunks of mini-batch steps), this is where the engine meets Dask. A pass is one
``compute``; what comes back to the driver is one small mergeable value (``SuffStats`` or
another value with a ``merge`` method). Per-pass constants (the E-step terms) enter the
graph once, as a single key that every chunk task depends on, not copied into each task.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np

from ..core import kernels
from ..core.model_parameters import DEFAULTS
from ..core.nonfinite import DROP, NonFiniteRule, nonfinite_rule
from ..core.params import GMMParams
from ..core.stats import SuffStats, merge_all
from ..core.terms import GaussianTerms
from ..errors import DataError

log = logging.getLogger(__name__)

DEFAULT_SPLIT_EVERY: int = DEFAULTS["split_every"]
#: default bytes of rows in one chunk (one task): the readers' and the workflow's default
DEFAULT_CHUNK_BYTES = 64 * 2**20
#: fewest rows per task when an in-memory array is processed in this process
#: (``map_rows_local``)
LOCAL_TASK_ROWS = 32768


def as_row_chunked(X, chunk_rows: int | None = None) -> da.Array:
    """A 2-D Dask array chunked along rows only (columns in one chunk).

    X: NumPy or Dask array of shape (n_samples, n_features). A NumPy array is cut into
    ``chunk_rows`` rows per chunk (default: about ``DEFAULT_CHUNK_BYTES`` per chunk).
    """
    if isinstance(X, da.Array):
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D array, got {X.ndim}-D")
        return X.rechunk({1: -1}) if len(X.chunks[1]) > 1 else X
    X = np.asarray(X)
    if chunk_rows is None:
        chunk_rows = max(1, DEFAULT_CHUNK_BYTES // max(1, X.shape[1] * X.dtype.itemsize))
    return da.from_array(X, chunks=(min(chunk_rows, max(1, X.shape[0])), X.shape[1]))


@dataclass
class ChunkedData:
    """Row blocks of one data set, prepared once per fit and reused by every pass.

    blocks: Delayed per row chunk; weights: Delayed per chunk or None (all ones);
    offsets: global index of each chunk's first row; n_samples, n_features: shape;
    in_memory: ``(rows, weights or None)`` when the rows are one in-memory NumPy chunk,
    which a pass without a client then reads in this process (``map_reduce``).
    """

    blocks: list
    weights: list | None
    offsets: list[int]
    n_samples: int
    n_features: int
    dtype: np.dtype
    array: da.Array
    in_memory: tuple[np.ndarray, np.ndarray | None] | None = None

    @property
    def n_chunks(self) -> int:
        return len(self.blocks)


def _checked_weights(w: np.ndarray, block_info=None) -> np.ndarray:
    """One chunk of sample weights (n,) as float64; DataError naming the first negative
    one by its global row (NaN/inf are left to the non-finite row handling)."""
    w = np.asarray(w, dtype=np.float64)
    negative = np.flatnonzero(w < 0)
    if negative.size:
        start = block_info[0]["array-location"][0][0] if block_info else 0
        first = int(start + negative[0])
        raise DataError(
            f"sample_weight holds {negative.size} negative value(s) in rows {start}.."
            f"{start + w.shape[0] - 1}, the first at row {first} "
            f"({float(w[negative[0]])!r}). Weights must be finite and non-negative: fix or "
            "drop those rows (a weight of 0 leaves a row out)."
        )
    return w


def prepare(X, sample_weight=None, chunk_rows: int | None = None) -> ChunkedData:
    """Row-chunk ``X`` (and align ``sample_weight`` to its chunks) for repeated passes."""
    array = as_row_chunked(X, chunk_rows)
    in_memory = None
    if not isinstance(X, da.Array) and len(array.chunks[0]) == 1:
        in_memory = (np.asarray(X), None if sample_weight is None or isinstance(
            sample_weight, da.Array) else np.asarray(sample_weight, dtype=np.float64))
        if sample_weight is not None and in_memory[1] is None:
            in_memory = None  # lazy weights are checked chunk by chunk in the graph
    blocks = list(array.to_delayed(optimize_graph=True).ravel())
    weights = None
    if sample_weight is not None:
        if isinstance(sample_weight, da.Array):
            # a NumPy array is checked up front; a lazy one by the pass reading each chunk
            w = sample_weight.rechunk((array.chunks[0],)).map_blocks(
                _checked_weights, dtype=np.float64, meta=np.empty((0,), np.float64))
        else:
            w = da.from_array(np.asarray(sample_weight, dtype=np.float64),
                              chunks=(array.chunks[0],))
        weights = list(w.to_delayed(optimize_graph=True).ravel())
    offsets = np.concatenate([[0], np.cumsum(array.chunks[0])[:-1]]).astype(int).tolist()
    return ChunkedData(
        blocks=blocks,
        weights=weights,
        offsets=offsets,
        n_samples=int(array.shape[0]),
        n_features=int(array.shape[1]),
        dtype=array.dtype,
        array=array,
        in_memory=in_memory,
    )


def _tree_reduce(parts: list, split_every: int):
    """Merge Delayed values in a fixed tree of fan-in ``split_every`` (depth log_k n)."""
    merge = dask.delayed(merge_all, pure=True)
    while len(parts) > 1:
        parts = [merge(parts[i : i + split_every]) for i in range(0, len(parts), split_every)]
    return parts[0]


def _compute(obj, client=None):
    if client is not None:
        return client.compute(obj, sync=True)
    return dask.compute(obj)[0]


def pass_graph(
    data: ChunkedData,
    chunk_fn: Callable[..., Any],
    *broadcast: Any,
    split_every: int = DEFAULT_SPLIT_EVERY,
    holders: list | None = None,
):
    """The lazy pass: a Delayed whose value is the merge of every chunk's result.

    ``broadcast`` values enter the graph once each (one key per value per pass, named by
    its content, so a new parameter set gives new keys and nothing stale is reused).
    ``holders``: per chunk, the worker address its task should run on (the one holding
    the chunk), or None.
    """
    shared = [dask.delayed(value, pure=True, traverse=False) for value in broadcast]
    fn = dask.delayed(chunk_fn, pure=True)
    weights = data.weights or [None] * data.n_chunks
    holders = holders or [None] * data.n_chunks
    parts = []
    for block, w, offset, holder in zip(data.blocks, weights, data.offsets, holders, strict=True):
        if holder is None:
            parts.append(fn(block, w, offset, *shared))
        else:
            with dask.annotate(workers=[holder], allow_other_workers=True):
                parts.append(fn(block, w, offset, *shared))
    return _tree_reduce(parts, split_every)


def map_reduce(
    data: ChunkedData,
    chunk_fn: Callable[..., Any],
    *broadcast: Any,
    split_every: int = DEFAULT_SPLIT_EVERY,
    client=None,
):
    """One pass: ``chunk_fn(block, weights, row_offset, *broadcast)`` per chunk, merged.

    The per-chunk results must have a ``merge`` method; one ``compute`` returns the
    merged value to the driver. Without a client, rows held in memory as one chunk are
    read by a plain call in this process: a Dask graph costs more than the pass over a
    few thousand rows, and the value is the same.
    """
    if client is None and data.in_memory is not None:
        rows, weights = data.in_memory
        return chunk_fn(rows, weights, 0, *broadcast)
    if client is None:
        return _compute(pass_graph(data, chunk_fn, *broadcast, split_every=split_every), None)
    holders = _holders(data, client)
    graph = pass_graph(data, chunk_fn, *broadcast, split_every=split_every, holders=holders)
    return _compute(graph, client)


def _holders(data: ChunkedData, client) -> list:
    """Per chunk, the one worker that holds it in memory (persisted or scattered data),
    else None. A chunk task restricted to its holder does not copy the chunk to another
    worker: the scheduler's placement, guessing from task-duration estimates, otherwise
    moves a few chunks per pass and leaves the workers unevenly loaded. The restriction is loose
    (``allow_other_workers``): if the holder is gone, the task runs anywhere."""
    try:
        # every key the cluster holds (the call takes futures, not keys); small: one
        # entry per key in memory
        who = client.who_has()
    except Exception:  # pragma: no cover - an older or unusual scheduler: no pinning
        log.debug("who_has failed; chunk tasks are not pinned", exc_info=True)
        return [None] * data.n_chunks
    return [
        workers[0] if len(workers := list(who.get(block.key, ()))) == 1 else None
        for block in data.blocks
    ]


def estep_chunk(block, weights, row_offset, terms: GaussianTerms,
                rule: NonFiniteRule = DROP) -> SuffStats:
    """The E-step of one chunk: its statistics under ``terms`` (``kernels.chunk_stats``)."""
    return kernels.chunk_stats(block, terms, weights, row_offset, rule)


def estep_pass(
    data: ChunkedData, params, *, split_every: int = DEFAULT_SPLIT_EVERY, client=None,
    nonfinite: str | NonFiniteRule = "drop",
) -> SuffStats:
    """Sufficient statistics of all rows under ``params`` (``GMMParams`` or
    ``GaussianTerms``; one pass over the data); ``nonfinite``: the policy's name or rule
    (with 'marginalize' NaN entries are missing values)."""
    return map_reduce(data, estep_chunk, params.gaussian_terms(), nonfinite_rule(nonfinite),
                      split_every=split_every, client=client)


def map_rows(X: da.Array, row_fn: Callable, params: GMMParams, *, n_columns: int | None, dtype):
    """Apply ``row_fn(block, params)`` per row chunk, lazily, keeping the row chunks.

    Returns a Dask array of shape (n_samples,) when ``n_columns`` is None, otherwise
    (n_samples, n_columns). The parameters enter the graph once.
    """
    X = as_row_chunked(X)
    shared = dask.delayed(params, pure=True, traverse=False)
    if n_columns is None:
        return X.map_blocks(row_fn, shared, drop_axis=1, dtype=dtype, meta=np.empty((0,), dtype))
    return X.map_blocks(
        row_fn, shared, chunks=(X.chunks[0], (n_columns,)), dtype=dtype,
        meta=np.empty((0, 0), dtype),
    )


def map_rows_local(X: np.ndarray, row_fn: Callable, params: GMMParams, *,
                   n_columns: int | None, dtype) -> np.ndarray:
    """``row_fn(block, params)`` over an in-memory array, in this process, as a NumPy array.

    Two blocks per core (at least ``LOCAL_TASK_ROWS`` rows each) run on Dask's threaded
    scheduler: every core works, each kernel on one BLAS thread (see ``dgmm.core.threads``); a
    smaller array is one call.
    """
    rows = max(LOCAL_TASK_ROWS, -(-X.shape[0] // (2 * (os.cpu_count() or 1))))
    if X.shape[0] <= rows:
        return row_fn(X, params)
    # name=False: a random name instead of hashing the whole array
    blocks = da.from_array(X, chunks=(rows, X.shape[1]), name=False)
    lazy = map_rows(blocks, row_fn, params, n_columns=n_columns, dtype=dtype)
    return lazy.compute(scheduler="threads")
