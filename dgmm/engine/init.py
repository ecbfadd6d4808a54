"""Initial parameters theta_0 at scale, every data pass a chunk map-reduce.

Methods (``init_params``): ``kmeans`` (default; k-means|| candidates, then Lloyd passes
over the data, then theta_0 from the hard labels), ``k-means++`` (K passes, covariance
``reg_covar * I``), ``random_from_data`` (K distinct rows in one pass, covariance
``reg_covar * I``) and ``random`` (random responsibilities, one M-step). With
``nonfinite='marginalize'`` NaN entries are imputed by column means for the
initialisation only. Initial weights sum to 1. Randomness inside a chunk is seeded by
(seed, pass, first row of the chunk). Details: docs/design.md, "Initialisation".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import kernels
from ..core.families import family
from ..core.kernels import missing
from ..core.mstep import m_step
from ..core.nonfinite import nonfinite_rule
from ..core.params import GMMParams
from ..core.stats import SuffStats, _min_index
from ..core.threads import single_blas_thread
from ..errors import DataError
from . import passes as engine
from .models import FetchRows, Pass, run_alone

KMEANS_PARALLEL_ROUNDS = 2
KMEANS_MAX_ITER = 20
KMEANS_TOL = 1e-4


def chunk_rng(seed: int, pass_id: int, row_offset: int) -> np.random.Generator:
    """The generator of one chunk in one pass: seeded by (seed, pass, chunk's first row)."""
    return np.random.default_rng([seed, pass_id, row_offset])


@single_blas_thread()
def _sq_distances(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n_samples, n_centers), rows centred first for accuracy."""
    ref = X.mean(axis=0, dtype=np.float64) if X.shape[0] else np.zeros(X.shape[1])
    Xc = X - ref
    Cc = centers - ref
    d2 = (Xc * Xc).sum(axis=1)[:, None] - 2.0 * (Xc @ Cc.T) + (Cc * Cc).sum(axis=1)
    return np.maximum(d2, 0.0, out=d2)


@dataclass(frozen=True, eq=False)
class CostSample:
    """Result of a k-means|| pass: the cost and the rows drawn, in chunk order."""

    cost: float
    rows: np.ndarray
    n_rows: int = 0
    n_nonfinite: int = 0
    first_nonfinite: int = -1

    def merge(self, other: CostSample) -> CostSample:
        return CostSample(
            self.cost + other.cost,
            np.concatenate([self.rows, other.rows]),
            self.n_rows + other.n_rows,
            self.n_nonfinite + other.n_nonfinite,
            _min_index(self.first_nonfinite, other.first_nonfinite),
        )


@dataclass(frozen=True, eq=False)
class RowDraw:
    """``k`` finite rows drawn uniformly without replacement: the rows with the ``k``
    smallest uniform keys, kept through the merges (so any chunking draws uniformly)."""

    k: int
    keys: np.ndarray
    rows: np.ndarray
    n_rows: int = 0
    n_nonfinite: int = 0
    first_nonfinite: int = -1

    def merge(self, other: RowDraw) -> RowDraw:
        keys = np.concatenate([self.keys, other.keys])
        order = np.argsort(keys, kind="stable")[: self.k]
        return RowDraw(
            self.k, keys[order], np.concatenate([self.rows, other.rows])[order],
            self.n_rows + other.n_rows, self.n_nonfinite + other.n_nonfinite,
            _min_index(self.first_nonfinite, other.first_nonfinite),
        )


def _draw_chunk(block, weights, row_offset, k, seed) -> RowDraw:
    X, _, n_bad, first_bad = kernels.split_finite(block, weights, row_offset)
    keys = chunk_rng(seed, 0, row_offset).random(X.shape[0])
    order = np.argsort(keys, kind="stable")[:k]
    return RowDraw(k, keys[order], np.asarray(X[order], dtype=np.float64), int(X.shape[0]),
                   n_bad, first_bad)


def _cost_chunk(block, weights, row_offset, centers, draw) -> CostSample:
    """Cost sum_i w_i D^2(x_i) of a chunk; with ``draw=(seed, pass, l, phi)`` also a sample."""
    X, w, n_bad, first_bad = kernels.split_finite(block, weights, row_offset)
    d2 = _sq_distances(X, centers).min(axis=1) if X.shape[0] else np.zeros(0)
    wd2 = d2 if w is None else w * d2
    rows = np.empty((0, X.shape[1]))
    if draw is not None and X.shape[0]:
        seed, pass_id, oversampling, phi = draw
        prob = np.minimum(1.0, oversampling * wd2 / phi) if phi > 0 else np.zeros_like(wd2)
        keep = chunk_rng(seed, pass_id, row_offset).random(X.shape[0]) < prob
        rows = np.asarray(X[keep], dtype=np.float64)
    return CostSample(float(wd2.sum()), rows, int(X.shape[0]), n_bad, first_bad)


@dataclass(frozen=True, eq=False)
class LloydStats:
    """Per-center row weight, sums about the centers, and inertia, for a Lloyd step."""

    counts: np.ndarray
    sums: np.ndarray
    inertia: float

    def merge(self, other: LloydStats) -> LloydStats:
        return LloydStats(
            self.counts + other.counts, self.sums + other.sums, self.inertia + other.inertia
        )


def _lloyd_chunk(block, weights, row_offset, centers) -> LloydStats:
    X, w, _, _ = kernels.split_finite(block, weights, row_offset)
    k = centers.shape[0]
    if not X.shape[0]:
        return LloydStats(np.zeros(k), np.zeros(centers.shape), 0.0)
    d2 = _sq_distances(X, centers)
    labels = d2.argmin(axis=1)
    w = np.ones(X.shape[0]) if w is None else w
    counts = np.bincount(labels, weights=w, minlength=k)
    onehot = np.zeros((X.shape[0], k))
    onehot[np.arange(X.shape[0]), labels] = w
    sums = onehot.T @ (np.asarray(X, dtype=np.float64) - centers[labels])
    inertia = float(w @ d2[np.arange(X.shape[0]), labels])
    return LloydStats(counts, sums, inertia)


def _labels_chunk(block, weights, row_offset, centers, covariance_type) -> SuffStats:
    X, w, n_bad, first_bad = kernels.split_finite(block, weights, row_offset)
    labels = _sq_distances(X, centers).argmin(axis=1) if X.shape[0] else np.zeros(0, int)
    stats = kernels.chunk_stats_from_labels(X, labels, centers, covariance_type, w)
    return _with_nonfinite(stats, n_bad, first_bad)


def _with_nonfinite(stats: SuffStats, n_bad: int, first_bad: int) -> SuffStats:
    return SuffStats(
        stats.covariance_type, stats.shift, stats.n, stats.loglik, stats.nk, stats.s1,
        stats.s2, stats.n_rows, n_bad, first_bad,
    )


def _random_resp_chunk(block, weights, row_offset, shift, covariance_type, seed) -> SuffStats:
    X, w, n_bad, first_bad = kernels.split_finite(block, weights, row_offset)
    resp = chunk_rng(seed, 0, row_offset).uniform(size=(X.shape[0], shift.shape[0]))
    resp /= resp.sum(axis=1, keepdims=True)
    stats = kernels.chunk_stats_from_resp(X, resp, shift, covariance_type, w)
    return _with_nonfinite(stats, n_bad, first_bad)


@dataclass(frozen=True, eq=False)
class WeightedPick:
    """One row picked with probability proportional to ``total`` among merged chunks."""

    total: float
    row: np.ndarray | None
    coin: float  # a uniform draw owned by this value, used when merging
    n_rows: int = 0
    n_nonfinite: int = 0
    first_nonfinite: int = -1

    def merge(self, other: WeightedPick) -> WeightedPick:
        total = self.total + other.total
        if other.row is None or other.total <= 0:
            keep = self
        elif self.row is None or self.total <= 0:
            keep = other
        else:
            keep = other if self.coin * total < other.total else self
        # the merged coin is derived from both so the tree stays deterministic
        coin = (self.coin + other.coin) % 1.0
        return WeightedPick(total, keep.row, coin, self.n_rows + other.n_rows,
                            self.n_nonfinite + other.n_nonfinite,
                            _min_index(self.first_nonfinite, other.first_nonfinite))


def _plusplus_chunk(block, weights, row_offset, centers, seed, pass_id) -> WeightedPick:
    X, w, n_bad, first_bad = kernels.split_finite(block, weights, row_offset)
    rng = chunk_rng(seed, pass_id, row_offset)
    counts = (int(X.shape[0]), n_bad, first_bad)
    if not X.shape[0]:
        return WeightedPick(0.0, None, rng.random(), *counts)
    score = _sq_distances(X, centers).min(axis=1) if centers.shape[0] else np.ones(X.shape[0])
    if w is not None:
        score = score * w
    total = float(score.sum())
    if total <= 0:
        return WeightedPick(0.0, None, rng.random(), *counts)
    idx = int(np.searchsorted(np.cumsum(score), rng.random() * total, side="right"))
    row = np.asarray(X[min(idx, X.shape[0] - 1)], np.float64)
    return WeightedPick(total, row, rng.random(), *counts)


def _weighted_kmeans_plusplus(points, weights, k, rng) -> np.ndarray:
    """k-means++ seeding on weighted points (the k-means|| candidates), at the driver."""
    n = points.shape[0]
    first = rng.choice(n, p=weights / weights.sum())
    centers = [points[first]]
    d2 = ((points - points[first]) ** 2).sum(axis=1)
    for _ in range(1, k):
        score = weights * d2
        idx = rng.integers(n) if score.sum() <= 0 else rng.choice(n, p=score / score.sum())
        centers.append(points[idx])
        d2 = np.minimum(d2, ((points - points[idx]) ** 2).sum(axis=1))
    return np.array(centers)


def _weighted_lloyd(points, weights, centers, n_iter=30) -> np.ndarray:
    for _ in range(n_iter):
        labels = _sq_distances(points, centers).argmin(axis=1)
        new = centers.copy()
        for j in range(centers.shape[0]):
            mask = labels == j
            if weights[mask].sum() > 0:
                new[j] = np.average(points[mask], axis=0, weights=weights[mask])
        if np.allclose(new, centers, rtol=0, atol=0):
            break
        centers = new
    return centers


@dataclass
class InitResult:
    """theta_0 and what the first pass over the data found."""

    params: GMMParams
    n_rows: int
    n_nonfinite: int
    first_nonfinite: int


def _uniform_row_steps(data, rng, seed, on_first_pass, attempts=3):
    """One finite row drawn uniformly: a few direct reads, else one pass over the rows."""
    for _ in range(attempts):
        row = (yield FetchRows((int(rng.integers(data.n_samples)),)))[0]
        if np.isfinite(row).all():
            return row
    draw = yield Pass(_draw_chunk, (1, seed))
    if on_first_pass is not None:
        on_first_pass(draw.n_rows, draw.n_nonfinite, draw.first_nonfinite)
    if not draw.n_rows:
        raise DataError("Every row of the data holds NaN or inf: there is nothing to fit.")
    return draw.rows[0]


def _point_params(points, n_components, covariance_type, reg_covar) -> GMMParams:
    """Components centred on ``points`` with covariance reg_covar * I and equal weights."""
    cov = family(covariance_type).point_covariances(n_components, points.shape[1], reg_covar)
    weights = np.full(n_components, 1.0 / n_components)
    return GMMParams.from_covariances(weights, points, cov, covariance_type)


@dataclass(frozen=True, eq=False)
class ColumnSums:
    """Per column: the sum and the count of the observed (non-NaN) entries."""

    sums: np.ndarray
    counts: np.ndarray

    def merge(self, other: ColumnSums) -> ColumnSums:
        return ColumnSums(self.sums + other.sums, self.counts + other.counts)


def _column_sums_chunk(block, weights, row_offset) -> ColumnSums:
    X = np.asarray(block, dtype=np.float64)
    missing.split_gaps(X, weights, row_offset)  # DataError on +-inf or a bad weight
    observed = ~np.isnan(X)
    return ColumnSums(np.where(observed, X, 0.0).sum(axis=0), observed.sum(axis=0))


def _impute_block(block, column_means):
    """NaN entries set to their column's mean; rows with every entry NaN left as they are."""
    X = np.asarray(block)
    gaps = np.isnan(X) if X.dtype.kind == "f" else np.zeros(X.shape, bool)
    if not gaps.any():
        return X
    gaps &= ~gaps.all(axis=1, keepdims=True)
    X = X.copy()
    X[gaps] = np.broadcast_to(column_means, X.shape)[gaps]
    return X


def _on_imputed_block(block, weights, row_offset, chunk_fn, column_means, args):
    return chunk_fn(_impute_block(block, column_means), weights, row_offset, *args)


def _imputed_steps(steps):
    """The requests of ``steps`` answered as if NaN entries were their column's mean: one
    pass first computes the means, then every pass imputes each block as it reads it."""
    sums = yield Pass(_column_sums_chunk, ())
    means = np.where(sums.counts > 0, sums.sums / np.maximum(sums.counts, 1), 0.0)
    answer = None
    while True:
        try:
            request = steps.send(answer)
        except StopIteration as stop:
            return stop.value
        if isinstance(request, FetchRows):
            answer = _impute_block((yield request), means)
        else:
            answer = yield Pass(_on_imputed_block, (request.chunk_fn, means, request.args))


def kmeans_centers(data, n_components, seed, *, split_every, client, on_first_pass=None):
    """k-means|| + Lloyd over the data; returns (centers (K, d), first pass CostSample).

    ``on_first_pass(n_rows, n_nonfinite, first_nonfinite)`` is called right after the
    first pass over the data (it may raise, e.g. on non-finite rows).
    """
    return run_alone(data, kmeans_center_steps(data, n_components, seed, on_first_pass),
                     split_every=split_every, client=client)


def kmeans_center_steps(data, n_components, seed, on_first_pass=None):
    """``kmeans_centers`` as a generator of requests (``dgmm.engine.models``)."""
    rng = np.random.default_rng([seed, 1])
    first_row = yield from _uniform_row_steps(data, rng, seed, on_first_pass)
    centers = first_row[None, :]
    oversampling = 2.0 * n_components
    first = yield Pass(_cost_chunk, (centers, None))
    if on_first_pass is not None:
        on_first_pass(first.n_rows, first.n_nonfinite, first.first_nonfinite)
    phi = first.cost
    for round_id in range(1, KMEANS_PARALLEL_ROUNDS + 1):
        if round_id > 1:
            phi = (yield Pass(_cost_chunk, (centers, None))).cost
        if phi <= 0:
            break
        drawn = (yield Pass(_cost_chunk, (centers, (seed, round_id, oversampling, phi)))).rows
        centers = np.concatenate([centers, drawn])
    counts = (yield Pass(_lloyd_chunk, (centers,))).counts
    if centers.shape[0] > n_components:
        weights = np.maximum(counts, 1e-12)
        picked = _weighted_kmeans_plusplus(centers, weights, n_components, rng)
        centers = _weighted_lloyd(centers, weights, picked)
    elif centers.shape[0] < n_components:
        extra = centers[rng.integers(centers.shape[0], size=n_components - centers.shape[0])]
        centers = np.concatenate([centers, extra])
    previous_inertia = np.inf
    for _ in range(KMEANS_MAX_ITER):
        step = yield Pass(_lloyd_chunk, (centers,))
        moved = step.counts > 0
        centers = centers.copy()
        centers[moved] += step.sums[moved] / step.counts[moved, None]
        if abs(previous_inertia - step.inertia) <= KMEANS_TOL * step.inertia:
            break
        previous_inertia = step.inertia
    return centers, first


def initial_params(
    data: engine.ChunkedData,
    n_components: int,
    covariance_type: str,
    init_params: str,
    reg_covar: float,
    seed: int,
    *,
    split_every: int = engine.DEFAULT_SPLIT_EVERY,
    client=None,
    on_first_pass=None,
    nonfinite: str = "drop",
) -> InitResult:
    """theta_0 by ``init_params`` (see the module docstring); ``seed`` an int.

    ``on_first_pass(n_rows, n_nonfinite, first_nonfinite)`` is called as soon as the
    first pass over the data has counted its rows (for methods that read all rows).
    ``nonfinite='marginalize'``: NaN entries are imputed for the initialisation only.
    """
    steps = initial_param_steps(data, n_components, covariance_type, init_params, reg_covar,
                                seed, on_first_pass=on_first_pass, nonfinite=nonfinite)
    return run_alone(data, steps, split_every=split_every, client=client)


def initial_param_steps(data: engine.ChunkedData, n_components: int, covariance_type: str,
                        init_params: str, reg_covar: float, seed: int, *,
                        on_first_pass=None, nonfinite: str = "drop"):
    """``initial_params`` as a generator of requests (``dgmm.engine.models``): run alone
    or in lockstep with other models, it returns the same ``InitResult``."""
    if init_params not in ("kmeans", "random", "random_from_data", "k-means++"):
        raise ValueError(f"unknown init_params {init_params!r}")
    steps = _method_steps(data, n_components, covariance_type, init_params, reg_covar, seed,
                          on_first_pass)
    if nonfinite_rule(nonfinite).missing_values:
        steps = _imputed_steps(steps)
    return (yield from steps)


def _method_steps(data, n_components, covariance_type, init_params, reg_covar, seed,
                  on_first_pass):
    """The requests of one initialisation method (see ``initial_param_steps``)."""
    d = data.n_features
    if init_params == "kmeans":
        centers, first = yield from kmeans_center_steps(data, n_components, seed,
                                                        on_first_pass)
        stats = yield Pass(_labels_chunk, (centers, covariance_type))
        params = m_step(stats, reg_covar).params
        return InitResult(params, first.n_rows, first.n_nonfinite, first.first_nonfinite)
    if init_params == "random":
        shift = np.zeros((n_components, d))
        stats = yield Pass(_random_resp_chunk, (shift, covariance_type, seed))
        if on_first_pass is not None:
            on_first_pass(stats.n_rows, stats.n_nonfinite, stats.first_nonfinite)
        params = m_step(stats, reg_covar).params
        return InitResult(params, stats.n_rows, stats.n_nonfinite, stats.first_nonfinite)
    if init_params == "random_from_data":
        draw = yield Pass(_draw_chunk, (n_components, seed))
        counts = (draw.n_rows, draw.n_nonfinite, draw.first_nonfinite)
        if on_first_pass is not None:
            on_first_pass(*counts)
        if draw.n_rows < n_components:
            raise DataError(f"Only {draw.n_rows} finite row(s) for n_components="
                            f"{n_components}. Use fewer components or more data.")
        params = _point_params(draw.rows, n_components, covariance_type, reg_covar)
        return InitResult(params, *counts)
    # k-means++
    centers = np.empty((0, d))
    for pass_id in range(n_components):
        pick = yield Pass(_plusplus_chunk, (centers, seed, pass_id + 1))
        if pass_id == 0:
            counts = (pick.n_rows, pick.n_nonfinite, pick.first_nonfinite)
            if on_first_pass is not None:
                on_first_pass(*counts)
            if pick.row is None:
                raise DataError(
                    "No row to start k-means++ from: every row holds NaN or inf"
                    + (" or has sample_weight 0." if data.weights is not None else ".")
                    + " Clean the data or give some rows a positive weight."
                )
        # every row already a center (duplicates): repeat the last one
        row = pick.row if pick.row is not None else centers[-1]
        centers = np.concatenate([centers, row[None, :]])
    params = _point_params(centers, n_components, covariance_type, reg_covar)
    return InitResult(params, *counts)
