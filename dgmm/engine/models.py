"""Many models in one pass: every live model's chunk function on one read of each chunk.

A model is a generator of requests, ``Pass(chunk_fn, args)`` (a merge over all chunks) or
``FetchRows(indices)``, that receives their answers. ``run_alone`` drives one model;
``Lockstep`` serves many at once, and ``multi_pass`` answers their passes with one read of
each chunk, each model's value bit-identical to ``passes.map_reduce`` alone. See
docs/design.md, "Many models per pass".
"""
from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import passes as engine


class Pass(NamedTuple):
    """A request for one pass: ``chunk_fn(block, weights, row_offset, *args)`` merged."""

    chunk_fn: Callable[..., Any]
    args: tuple = ()


class FetchRows(NamedTuple):
    """A request for rows by global index (read directly, not a pass); answered by an
    array (len(indices), n_features) float64 in the order of ``indices``."""

    indices: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class MultiValue:
    """Per-model results of one chunk (or of merged chunks), merged model by model."""

    parts: tuple

    def merge(self, other: MultiValue) -> MultiValue:
        return MultiValue(tuple(a.merge(b) for a, b in zip(self.parts, other.parts, strict=True)))


def _multi_chunk(block, weights, row_offset, requests: tuple[Pass, ...]) -> MultiValue:
    return MultiValue(tuple(fn(block, weights, row_offset, *args) for fn, args in requests))


def multi_pass(data: engine.ChunkedData, requests: list[Pass], *,
               split_every: int = engine.DEFAULT_SPLIT_EVERY, client=None) -> list:
    """One pass answering every request: a list of merged values, one per request."""
    merged = engine.map_reduce(data, _multi_chunk, tuple(Pass(*r) for r in requests),
                               split_every=split_every, client=client)
    return list(merged.parts)


def fetch_rows(data: engine.ChunkedData, indices, client=None) -> np.ndarray:
    """Rows by global index, float64 (n_indices, n_features), in the order given."""
    indices = np.asarray(indices, dtype=np.int64)
    unique, inverse = np.unique(indices, return_inverse=True)
    rows = data.array[unique]
    out = rows.compute() if client is None else client.compute(rows, sync=True)
    return np.asarray(out, dtype=np.float64)[inverse]


def run_alone(data: engine.ChunkedData, steps: Generator, *,
              split_every: int = engine.DEFAULT_SPLIT_EVERY, client=None):
    """Drive one request generator by itself (one ``map_reduce`` per pass request)."""
    answer = None
    while True:
        try:
            request = steps.send(answer)
        except StopIteration as stop:
            return stop.value
        if isinstance(request, FetchRows):
            answer = fetch_rows(data, request.indices, client)
        else:
            answer = engine.map_reduce(data, request.chunk_fn, *request.args,
                                       split_every=split_every, client=client)


class Lockstep:
    """Drives many request generators together: rows fetched in one batch, then one pass
    for every pending pass request; ``passes`` counts the passes made."""

    def __init__(self, data: engine.ChunkedData, *, split_every: int = engine.DEFAULT_SPLIT_EVERY,
                 client=None):
        self.data = data
        self.split_every = split_every
        self.client = client
        self.passes = 0

    def serve(self, pending: dict) -> dict:
        """Answer the requests ``{key: request}``: ``{key: answer}``. Fetches are served
        first and in one read; the pass requests in one pass (if there are any)."""
        answers = {}
        fetches = {k: r for k, r in pending.items() if isinstance(r, FetchRows)}
        if fetches:
            flat = [i for r in fetches.values() for i in r.indices]
            rows = fetch_rows(self.data, flat, self.client)
            start = 0
            for key, request in fetches.items():
                answers[key] = rows[start:start + len(request.indices)]
                start += len(request.indices)
        passes = {k: r for k, r in pending.items() if not isinstance(r, FetchRows)}
        if passes:
            values = multi_pass(self.data, list(passes.values()), split_every=self.split_every,
                                client=self.client)
            self.passes += 1
            answers.update(zip(passes.keys(), values, strict=True))
        return answers
