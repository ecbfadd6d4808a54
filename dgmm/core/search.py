"""The search for good initial parameters on an in-memory sample of rows.

The sample (``dgmm.engine.sample``) is sorted by a random key, so every prefix is a uniform
sample. The search runs several restarts on a prefix of ``search_rows`` rows, each
initialised as ``init_params`` says (k-means++ seeding and Lloyd's algorithm for
``kmeans``, as scikit-learn does on all rows) and run by EM to convergence at ``tol``; a
component left empty or collapsed is re-seeded on the rows the model explains worst. The
best restarts are then polished by EM to ``tol / 4`` on the whole sample, whose size
(``sample_rows``) makes the distance between its optimum and the data's, about p / (2 n)
nats per row for p free parameters, at most half of ``tol``: a full-data EM run from the
result converges in two passes. Everything here is a pure function of (sample, settings, seed).
See docs/design.md, "A few reads per good model".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import DataError, FitError
from . import kernels
from .families import family
from .mstep import m_step
from .nonfinite import nonfinite_rule
from .params import GMMParams
from .threads import single_blas_thread

#: rows per component and feature of the restarts' prefix, and its bounds
SEARCH_ROWS_PER_PARAMETER = 400
SEARCH_ROWS_MIN = 4096
SEARCH_ROWS_MAX = 100_000
#: rows x restarts the search may spend per candidate (more restarts on smaller prefixes)
SEARCH_BUDGET_ROWS = 400_000
MAX_RESTARTS = 10
#: bytes the sample may hold
SAMPLE_MEMORY = 256 * 2**20
#: Lloyd's algorithm: iterations and relative tolerance on the centers' shift
LLOYD_MAX_ITER = 300
LLOYD_TOL = 1e-4
#: the best restarts are polished on the whole sample to this fraction of ``tol``
POLISH_TOL = 0.25
#: a component whose weight falls below this fraction of 1/K is re-seeded
COLLAPSED_FRACTION = 1e-3
RESEED_ROUNDS = 2


def search_rows(n_components: int, n_features: int) -> int:
    """Rows of the prefix the restarts run on: 400 K d, within [4096, 100000]."""
    rows = SEARCH_ROWS_PER_PARAMETER * n_components * n_features
    return int(min(SEARCH_ROWS_MAX, max(SEARCH_ROWS_MIN, rows)))


def sample_rows(n_components: int, n_features: int, covariance_type: str, tol: float) -> int:
    """Rows of the sample for one model: p / tol (p free parameters), so that the sample's
    optimum lies about tol / 2 below the data's; at least ``search_rows``, at most what
    ``SAMPLE_MEMORY`` holds."""
    cap = max(1, SAMPLE_MEMORY // (8 * n_features))
    p = family(covariance_type).n_parameters(n_components, n_features)
    wanted = cap if tol <= 0 else math.ceil(p / tol)
    return int(min(cap, max(search_rows(n_components, n_features), wanted)))


def n_restarts(prefix_rows: int, n_starts: int) -> int:
    """Restarts of the search: ``SEARCH_BUDGET_ROWS / prefix_rows`` within
    [max(n_starts, 2), max(n_starts, 10)]."""
    by_budget = SEARCH_BUDGET_ROWS // max(prefix_rows, 1)
    return int(max(n_starts, 2, min(MAX_RESTARTS, by_budget)))


@dataclass(frozen=True)
class SearchSettings:
    """What the search needs of a model's settings."""

    n_components: int
    covariance_type: str
    init_params: str = "kmeans"
    reg_covar: float = 1e-6
    tol: float = 1e-3
    max_iter: int = 100
    nonfinite: str = "drop"


@dataclass(frozen=True)
class Start:
    """One initial parameter set found by the search, with the restart it came from and
    its mean log-likelihood on the rows it was last fitted on; n_collapsed: its components
    still collapsed after re-seeding (``collapsed``), which ranks it below every start
    with fewer."""

    params: GMMParams
    loglik: float
    restart: int
    n_collapsed: int = 0


def _sq_distances(X: np.ndarray, centers: np.ndarray, row_norms=None) -> np.ndarray:
    """Squared distances (n, k); ``row_norms`` (n,) = sum of squares of X's rows."""
    row_norms = np.einsum("ij,ij->i", X, X) if row_norms is None else row_norms
    d2 = centers @ (-2.0 * X.T)
    d2 += np.einsum("ij,ij->i", centers, centers)[:, None]
    d2 += row_norms[None, :]
    return np.maximum(d2.T, 0.0)


def _nearest(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest center per row (n,)."""
    scores = centers @ (-2.0 * X.T)
    scores += np.einsum("ij,ij->i", centers, centers)[:, None]
    return scores.argmin(axis=0)


def kmeans_plusplus(X: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding (2 + log k trials per center, as scikit-learn): indices."""
    n = X.shape[0]
    trials = 2 + int(np.log(n_clusters))
    norms = np.einsum("ij,ij->i", X, X)
    indices = [int(rng.integers(n))]
    closest = _sq_distances(X, X[indices], norms).ravel()
    for _ in range(1, n_clusters):
        total = closest.sum()
        if total <= 0:
            indices.append(int(rng.integers(n)))
            continue
        candidates = np.searchsorted(np.cumsum(closest), rng.random(trials) * total)
        candidates = np.minimum(candidates, n - 1)
        d2 = np.minimum(closest[None, :], _sq_distances(X, X[candidates], norms).T)
        best = int(np.argmin(d2.sum(axis=1)))
        indices.append(int(candidates[best]))
        closest = d2[best]
    return np.asarray(indices)


def lloyd(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Lloyd's algorithm from ``centers`` until they move less than ``LLOYD_TOL`` times
    the mean feature variance; returns the labels (n,)."""
    threshold = LLOYD_TOL * float(np.mean(np.var(X, axis=0)))
    k = centers.shape[0]
    for _ in range(LLOYD_MAX_ITER):
        labels = _nearest(X, centers)
        counts = np.bincount(labels, minlength=k)
        new = centers.copy()
        for j in np.flatnonzero(counts):
            new[j] = X[labels == j].mean(axis=0)
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if shift <= threshold:
            break
    return _nearest(X, centers)


def _complete(X: np.ndarray) -> np.ndarray:
    """Rows with NaN entries (``nonfinite='marginalize'``) filled by the column means."""
    gaps = np.isnan(X)
    if not gaps.any():
        return X
    means = np.nanmean(X, axis=0)
    return np.where(gaps, np.where(np.isnan(means), 0.0, means), X)


def initial_params(X: np.ndarray, settings: SearchSettings,
                   rng: np.random.Generator) -> GMMParams:
    """theta_0 on the rows ``X`` by ``settings.init_params`` (scikit-learn's methods)."""
    k, cov = settings.n_components, settings.covariance_type
    Xc = _complete(X)
    n, d = Xc.shape
    kind = family(cov)
    if settings.init_params in ("k-means++", "random_from_data"):
        if settings.init_params == "k-means++":
            picked = kmeans_plusplus(Xc, k, rng)
        else:
            picked = rng.choice(n, size=k, replace=False)
        return GMMParams.from_covariances(np.full(k, 1.0 / k), Xc[picked],
                                          kind.point_covariances(k, d, settings.reg_covar), cov)
    if settings.init_params == "random":
        resp = rng.uniform(size=(n, k))
        resp /= resp.sum(axis=1, keepdims=True)
        stats = kernels.chunk_stats_from_resp(Xc, resp, np.zeros((k, d)), cov)
        return m_step(stats, settings.reg_covar).params
    centers = Xc[kmeans_plusplus(Xc, k, rng)]
    labels = lloyd(Xc, centers)
    stats = kernels.chunk_stats_from_labels(Xc, labels, centers, cov)
    return m_step(stats, settings.reg_covar).params


def em(X: np.ndarray, params: GMMParams, settings: SearchSettings, tol: float,
       max_iter: int) -> tuple[GMMParams, float]:
    """EM on the in-memory rows until the mean log-likelihood changes less than ``tol``
    (or ``max_iter`` iterations); returns (params, mean log-likelihood of the params the
    last iteration started from)."""
    loglik = -math.inf
    for _ in range(max(1, max_iter)):
        stats = kernels.chunk_stats(X, params, None, 0, nonfinite_rule(settings.nonfinite))
        step = m_step(stats, settings.reg_covar, previous=params)
        change = step.mean_loglik - loglik
        params, loglik = step.params, step.mean_loglik
        if abs(change) < tol:
            break
    return params, loglik


def collapsed(params: GMMParams, reg_covar: float) -> np.ndarray:
    """Components that are empty or collapsed: weight below ``COLLAPSED_FRACTION / K``,
    or (a covariance of its own) a variance in some direction of at most twice
    ``reg_covar``, i.e. its rows vary less than the regulariser there (a component sitting
    on repeated rows)."""
    k, d = params.n_components, params.n_features
    bad = params.weights < COLLAPSED_FRACTION / k
    kind = params.family
    if kind.covariance_shape(k, d)[:1] == (k,):
        full = kind.full_covariances(params.covariances, k, d)
        smallest = np.linalg.eigvalsh(full)[:, 0]
        bad |= smallest <= 2.0 * reg_covar
    return np.flatnonzero(bad)


def reseed(X: np.ndarray, params: GMMParams, components: np.ndarray,
           settings: SearchSettings) -> GMMParams:
    """``components`` moved onto the rows the model explains worst: each gets one of the
    lowest-density rows as its mean, the data's spread over K as its covariance and a
    weight of 1/K (the weights renormalised)."""
    Xc = _complete(X)
    scores = kernels.score_samples(Xc, params)
    worst = np.argsort(scores, kind="stable")[: len(components)]
    kind = family(settings.covariance_type)
    k, d = params.n_components, params.n_features
    variance = max(float(np.mean(np.var(Xc, axis=0))) / k, settings.reg_covar)
    means = params.means.copy()
    covariances = np.array(params.covariances, copy=True)
    weights = params.weights.copy()
    fresh = kind.point_covariances(k, d, variance)
    for component, row in zip(components, worst, strict=True):
        means[component] = Xc[row]
        weights[component] = 1.0 / k
        if covariances.ndim == fresh.ndim and covariances.shape[0] == k:
            covariances[component] = fresh[component]
    return GMMParams.from_covariances(weights / weights.sum(), means, covariances,
                                      settings.covariance_type)


def _restart(X, settings, seed, restart, tol) -> Start | str:
    """One restart of the search: its ``Start``, or why it failed."""
    rng = np.random.default_rng([int(seed), int(restart)])
    try:
        params = initial_params(X, settings, rng)
        params, loglik = em(X, params, settings, tol, settings.max_iter)
        bad = collapsed(params, settings.reg_covar)
        for _ in range(RESEED_ROUNDS):
            if not bad.size or settings.n_components == 1:
                break
            moved, moved_loglik = em(X, reseed(X, params, bad, settings), settings, tol,
                                     settings.max_iter)
            moved_bad = collapsed(moved, settings.reg_covar)
            if (moved_bad.size, -moved_loglik) >= (bad.size, -loglik):
                break
            params, loglik, bad = moved, moved_loglik, moved_bad
    except (FitError, np.linalg.LinAlgError) as exc:
        return str(exc)
    if not np.isfinite(loglik):
        return "the log-likelihood is not finite"
    return Start(params, loglik, restart, int(bad.size))


@single_blas_thread()
def search(sample: np.ndarray, settings: SearchSettings, seed: int, n_starts: int,
           restarts: int | None = None) -> list[Start]:
    """The ``n_starts`` best initial parameter sets found on ``sample`` (rows sorted by a
    random key), best first.

    sample: (n, d) float64 (NaN entries allowed with ``nonfinite='marginalize'``);
    restarts: how many (default ``n_restarts``); restart r is seeded by
    ``numpy.random.default_rng([seed, r])``.
    """
    k, d = settings.n_components, sample.shape[1]
    if sample.shape[0] < k:
        raise DataError(f"Only {sample.shape[0]} usable row(s) for n_components={k}. Use "
                        "fewer components or more data.")
    prefix = sample[: search_rows(k, d)]
    restarts = n_restarts(prefix.shape[0], n_starts) if restarts is None else restarts
    outcomes = [_restart(prefix, settings, seed, r, settings.tol) for r in range(restarts)]
    found = [s for s in outcomes if isinstance(s, Start)]
    if not found:
        raise FitError(f"Every one of the {restarts} restarts of the initial search on the "
                       f"sample (K={k}, {settings.covariance_type}) failed: {outcomes[0]}")
    found.sort(key=lambda s: (s.n_collapsed, -s.loglik))
    polished = {}
    for start in found[:n_starts]:
        params, loglik = em(sample, start.params, settings, settings.tol * POLISH_TOL,
                            settings.max_iter)
        polished[start.restart] = Start(params, loglik, start.restart, start.n_collapsed)
    best = sorted(polished.values(), key=lambda s: (s.n_collapsed, -s.loglik))
    return [best[i % len(best)] for i in range(n_starts)]
