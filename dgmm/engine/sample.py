"""One pass that draws a uniform sample of rows while it counts rows and non-finite ones.

Every usable row gets a random key, a hash of (seed, its global row index) (splitmix64);
the sample is the ``size`` rows with the smallest keys, kept through the merge tree, so it
depends on (data, seed) only: neither on the chunking nor on which worker ran what. Unweighted
keys are uniform; with ``sample_weight`` a row's key is E_i / w_i with E_i ~ Exp(1), which
draws rows without replacement with probability proportional to their weight
(Efraimidis and Spirakis 2006), and a row of weight 0 is never drawn. The sample comes back
sorted by key, so its first m rows are themselves a uniform sample of m rows.

A chunk returns at most its expected share of the sample plus a wide margin (not its
whole block), so the tree moves about ``size`` rows in all whatever the data's size. See
docs/design.md, "A few reads per good model".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.kernels import missing
from ..core.nonfinite import nonfinite_rule
from ..core.stats import _min_index
from . import passes as engine

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's output function on uint64 values (wrapping arithmetic)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def row_uniforms(seed: int, rows: np.ndarray) -> np.ndarray:
    """A uniform number in (0, 1) per global row index (uint64 array), from ``seed``."""
    key = _splitmix64(np.array([seed % 2**64], dtype=np.uint64))
    bits = _splitmix64(rows.astype(np.uint64) ^ key) >> np.uint64(11)
    return (bits.astype(np.float64) + 0.5) * 2.0**-53


@dataclass(frozen=True, eq=False)
class RowSample:
    """The rows with the ``size`` smallest keys among the merged chunks, sorted by key.

    rows: (m, d) float64, m <= size; keys: (m,); n_rows: usable rows seen (complete rows,
    plus rows with some observed entry under ``nonfinite='marginalize'``); n_nonfinite:
    rows skipped; first_nonfinite: global index of the first skipped row, or -1;
    total_weight: the usable rows' total weight (their count when unweighted).
    """

    size: int
    rows: np.ndarray
    keys: np.ndarray
    n_rows: int = 0
    n_nonfinite: int = 0
    first_nonfinite: int = -1
    total_weight: float = 0.0

    def merge(self, other: RowSample) -> RowSample:
        keys = np.concatenate([self.keys, other.keys])
        order = np.argsort(keys, kind="stable")[: self.size]
        return RowSample(
            self.size, np.concatenate([self.rows, other.rows])[order], keys[order],
            self.n_rows + other.n_rows, self.n_nonfinite + other.n_nonfinite,
            _min_index(self.first_nonfinite, other.first_nonfinite),
            self.total_weight + other.total_weight,
        )


def chunk_quota(size: int, chunk_rows: int, n_samples: int) -> int:
    """Most rows one chunk contributes: its expected share of the sample plus eight
    standard deviations and 32 rows (a chunk holding more of the smallest keys than that
    has a probability below 1e-15), capped at ``size``."""
    share = size * chunk_rows / max(n_samples, 1)
    return int(min(size, chunk_rows, math.ceil(share + 8.0 * math.sqrt(share) + 32)))


def _usable_rows(block, weights, row_offset, nonfinite):
    """(rows, weights, global indices, n_skipped, first_skipped): the finite rows, or with
    ``nonfinite='marginalize'`` every row with an observed entry (NaN kept)."""
    X = np.asarray(block)
    index = np.arange(row_offset, row_offset + X.shape[0], dtype=np.uint64)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if nonfinite_rule(nonfinite).missing_values:
        missing.split_gaps(X, w, row_offset)  # DataError on +-inf or a bad weight
        keep = ~np.isnan(X).all(axis=1) if X.dtype.kind == "f" else np.ones(len(X), bool)
    else:
        keep = np.isfinite(X).all(axis=1)
        if w is not None:
            keep &= np.isfinite(w)
    if keep.all():
        return X, w, index, 0, -1
    bad = np.flatnonzero(~keep)
    return (X[keep], None if w is None else w[keep], index[keep], int(bad.size),
            int(row_offset + bad[0]))


def _sample_chunk(block, weights, row_offset, size, quota, seed, nonfinite) -> RowSample:
    X, w, index, n_bad, first_bad = _usable_rows(block, weights, row_offset, nonfinite)
    u = row_uniforms(seed, index)
    if w is None:
        keys = u
        total = float(X.shape[0])
    else:
        with np.errstate(divide="ignore"):
            keys = -np.log(u) / w
        total = float(w.sum())
    keep = min(quota, X.shape[0])
    if keep < X.shape[0]:
        picked = np.argpartition(keys, keep - 1)[:keep]
        picked = picked[np.argsort(keys[picked], kind="stable")]
    else:
        picked = np.argsort(keys, kind="stable")
    picked = picked[np.isfinite(keys[picked])]  # weight 0: never drawn
    return RowSample(size, np.asarray(X[picked], dtype=np.float64), keys[picked],
                     int(X.shape[0]), n_bad, first_bad, total)


def sample_request(data: engine.ChunkedData, size: int, seed: int, nonfinite: str = "drop"):
    """The chunk function and arguments of the sample pass (a ``models.Pass``)."""
    from .models import Pass

    chunk_rows = max(max(b - a, 0) for a, b in zip(
        data.offsets, data.offsets[1:] + [data.n_samples], strict=True))
    quota = chunk_quota(size, chunk_rows, data.n_samples)
    if data.weights is not None:
        # a chunk's share follows its weight, unknown before the pass: a wider margin
        quota = int(min(size, chunk_rows, 4 * quota))
    return Pass(_sample_chunk, (int(size), quota, int(seed), nonfinite))


def sample_pass(data: engine.ChunkedData, size: int, seed: int, *, nonfinite: str = "drop",
                split_every: int = engine.DEFAULT_SPLIT_EVERY, client=None) -> RowSample:
    """One read of the data: a uniform (weighted) sample of at most ``size`` usable rows,
    sorted by key, with the counts of usable and skipped rows."""
    fn, args = sample_request(data, size, seed, nonfinite)
    return engine.map_reduce(data, fn, *args, split_every=split_every, client=client)
