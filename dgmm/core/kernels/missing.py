"""Rows with missing entries (NaN): the marginal E-step and the expected statistics.

A NaN entry is missing (at random); +-inf is bad data. For a row with observed features o and
missing ones m, under component k, with the precision
Lambda_k = U_k U_k^T:

- log p(x_o, k) = log pi_k + log N(x_o; mu_ko, Sigma_k,oo). With delta = x - mu_k completed by
  delta_m = -inv(Lambda_k,mm) Lambda_k,mo delta_o (the conditional mean), the quadratic form is
  the full one of the completed row, delta^T Lambda_k delta, and log det Sigma_k,oo =
  log det Sigma_k + log det Lambda_k,mm (Schur complement identities);
- the statistics use x_hat (x with the missing entries replaced by E[x_m | x_o, k]) and add
  Cov[x_m | x_o, k] = inv(Lambda_k,mm) on the (m, m) block of the second moments.

Rows are grouped by missingness pattern: the inverse of Lambda_k,mm runs once per
(pattern, component), batched over the patterns with the same number of missing entries (m
sweeps over the whole batch); per row the work is one (d, d) product per component plus
O(m^2), never a factorisation of the observed block. For
diag and spherical, whose features are independent within a component, missing entries drop
out of the density and enter the statistics as mu_km and sigma^2_km.

The statistics are about the shift c_k = mu_k (the means the pass started with), computed
from the centred, completed rows, so they merge with the complete rows' statistics by
addition and stay exact far from the origin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import blas as _blas

from ...errors import DataError
from ..stats import SuffStats
from ..terms import GaussianTerms
from . import compiled
from .blas import Workspace
from .logprob import LOG_2PI
from .pruning import PRUNE_SLACK_NATS
from .responsibilities import FLUSH_LOG_RATIO, all_finite, log_resp_inplace

#: target size in bytes of the largest per-block work array here (rows x K x d doubles):
#: four times ``blas.BLOCK_BYTES``, since each block of rows with missing entries pays a
#: fixed Python cost (sorting by missing count, finding the patterns, one batch of
#: inverses per count) that larger blocks spread over more rows
MISSING_BLOCK_BYTES = 1 << 24


def missing_block_rows(n_components: int, n_features: int) -> int:
    """Rows per block of the marginal E-step (between 64 and 16384)."""
    rows = MISSING_BLOCK_BYTES // (8 * max(1, n_components * n_features))
    return int(min(16384, max(64, rows)))


@dataclass(frozen=True, eq=False)
class Gaps:
    """The rows of a chunk with missing entries (and at least one observed entry).

    X: (n, d) float64 with NaN for the missing entries; sample_weight: (n,) or None;
    n_empty: rows of the chunk with every entry missing (skipped); first_empty: the global
    index of the first of them, or -1.
    """

    X: np.ndarray
    sample_weight: np.ndarray | None
    n_empty: int
    first_empty: int


def split_gaps(X: np.ndarray, sample_weight: np.ndarray | None, row_offset: int = 0):
    """Separate the rows with missing entries from the complete ones.

    X: (n, d) float chunk; sample_weight: (n,) or None; row_offset: global index of row 0.
    Returns ``(X_complete, weights_complete, gaps)``; ``gaps`` is None (and ``X`` returned
    as it is) when no entry is NaN. Raises ``DataError`` naming the first row holding +-inf
    or a non-finite weight.
    """
    weights_bad = sample_weight is not None and not all_finite(sample_weight)
    if all_finite(X) and not weights_bad:
        return X, sample_weight, None
    if weights_bad:
        row = int(np.flatnonzero(~np.isfinite(sample_weight))[0])
        raise DataError(
            f"sample_weight holds a non-finite value at row {row_offset + row}. Weights must "
            "be finite and non-negative: fix or drop that row."
        )
    infinite = np.isinf(X).any(axis=1)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise DataError(
            f"Row {row_offset + row} of the data holds an infinite value. With "
            "nonfinite='marginalize' a NaN entry is treated as missing, but +-inf is bad "
            "data: clean it, or skip such rows with nonfinite='drop'."
        )
    n_missing = np.isnan(X).sum(axis=1)
    complete = n_missing == 0
    empty = n_missing == X.shape[1]
    gap = ~complete & ~empty
    first_empty = int(row_offset + np.flatnonzero(empty)[0]) if empty.any() else -1
    gaps = Gaps(
        np.asarray(X[gap], dtype=np.float64),
        None if sample_weight is None else np.asarray(sample_weight[gap], dtype=np.float64),
        int(empty.sum()),
        first_empty,
    )
    w = None if sample_weight is None else sample_weight[complete]
    return X[complete], w, gaps


def _spd_inverse(A: np.ndarray):
    """(inverse, 1/2 log det) of symmetric positive definite matrices (..., m, m).

    The sweep operator on every pivot, vectorised over the batch (m steps of rank-one
    updates on a (m, m, batch) array): per small matrix far cheaper than one LAPACK call
    each. The pivots are the successive Schur complements, so their logs sum to log det.
    """
    batch_shape, m = A.shape[:-2], A.shape[-1]
    W = np.moveaxis(A.reshape((-1, m, m)), 0, -1).copy()  # (m, m, B), never a view of A
    half_logdet = np.zeros(W.shape[-1])
    update = np.empty_like(W)
    for j in range(m):
        pivot = W[j, j].copy()
        half_logdet += 0.5 * np.log(pivot)
        col = W[:, j].copy()
        row = W[j] / pivot
        np.multiply(col[:, None, :], row[None, :, :], out=update)
        W -= update
        W[:, j] = col / pivot
        W[j] = row
        W[j, j] = -1.0 / pivot
    inverse = np.moveaxis(W, -1, 0)
    inverse = -0.5 * (inverse + inverse.swapaxes(-1, -2))
    return inverse.reshape(batch_shape + (m, m)), half_logdet.reshape(batch_shape)


def _missing_patterns(miss: np.ndarray, m: int):
    """(row_pattern (n,), idx (P, m), row_idx (n, m)) for rows (n, d) with exactly m
    missing entries each: the distinct patterns as sorted column indices, each row's
    pattern number and its own missing columns."""
    cols = np.nonzero(miss)[1].reshape(-1, m)  # row-major: ascending within a row
    if miss.shape[1] <= 64:
        keys = np.bitwise_or.reduce(np.left_shift(np.uint64(1), cols.astype(np.uint64)),
                                    axis=1)
        _, first, row_pattern = np.unique(keys, return_index=True, return_inverse=True)
    else:
        _, first, row_pattern = np.unique(cols, axis=0, return_index=True,
                                          return_inverse=True)
    return row_pattern.reshape(-1), cols[first], cols


class DenseGaps:
    """Marginal E-step and expected statistics through precision matrices (full, tied).

    Per block the rows are sorted by their number of missing entries m; per group of equal
    m, one product delta_0 @ Lambda_k for all components gives g = Lambda_k delta_0
    (whose entries at m are b = Lambda_mo delta_o) and q_0 = delta_0 . g,
    delta_0 = x - mu_k with zeros at m. With t = -inv(Lambda_mm) b the completed row is
    delta_0 + t (at m) and its quadratic form q_0 + t . b. The inverses run once per
    distinct (pattern, component) among the pairs that are computed.

    For the statistics, pairs the flush would zero are skipped (``prune``): q_0 bounds the
    quadratic form from above and q_0 - |b|^2 / lam_min(Lambda_k) from below; log det
    Lambda_mm lies between m log lam_min(Lambda_k) and the sum of the logs of its
    diagonal (interlacing, Hadamard). A pair whose upper bound lies more than
    -FLUSH_LOG_RATIO (+ slack) below the largest lower bound of its row is -inf.
    """

    def __init__(self, terms: GaussianTerms):
        k, d = terms.means.shape
        self.n_components, self.n_features = k, d
        self.U = terms.family.precision_factors(terms.precisions_cholesky)  # (F, d, d)
        self.precisions = self.U @ self.U.transpose(0, 2, 1)
        self.means = np.ascontiguousarray(terms.means)
        self.const = terms.log_weights + terms.log_det  # (K,)
        self.nk = np.zeros(k)
        self.s1 = np.zeros((k, d))
        self.s2 = np.zeros((k, d, d))  # lower triangles
        self._bounds = None
        self._buffers = {}

    def _buffer(self, name: str, shape: tuple) -> np.ndarray:
        """A C-contiguous work array of ``shape``, reused from block to block."""
        size = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.size < size:
            buf = self._buffers[name] = np.empty(size)
        return buf[:size].reshape(shape)

    def _bound_data(self):
        """Per component: log of the precision's diagonal (K, d), 1 / lam_min and
        log lam_min (K,) (lam_min less a rounding margin; +inf/NaN-free: components
        whose margin leaves nothing positive are never pruned)."""
        if self._bounds is None:
            k = self.n_components
            lam = np.linalg.eigvalsh(self.precisions)
            tau = 8 * self.n_features * np.finfo(np.float64).eps * lam[:, -1]
            low = lam[:, 0] - tau
            usable = low > 0
            low = np.where(usable, low, 1.0)
            f = np.arange(k) if self.U.shape[0] > 1 else np.zeros(k, dtype=int)
            log_diag = np.log(np.diagonal(self.precisions, axis1=1, axis2=2))[f]
            self._bounds = (log_diag, (1.0 / low)[f], np.log(low)[f], usable[f])
        return self._bounds

    def _keep(self, q0, b, base, row_pattern, idx):
        """(K, n) bool: the pairs that may survive the flush (see the class docstring)."""
        m = idx.shape[1]
        log_diag, inv_low, log_low, usable = self._bound_data()
        b_sq = np.square(b).sum(axis=2) if m > 1 else np.square(b[:, :, 0])
        b_sq *= inv_low[:, None]
        lower_q = q0 - b_sq
        lower_q -= 1e-8 * (q0 + b_sq)
        np.maximum(lower_q, 0.0, out=lower_q)
        upper = base - 0.5 * (m * log_low[:, None] + lower_q)
        upper[~usable] = np.inf
        sum_log_diag = log_diag[:, idx].sum(axis=2)[:, row_pattern]  # (K, n)
        lower = base - 0.5 * (sum_log_diag + q0 * (1.0 + 1e-8))
        floor = lower.max(axis=0) + (FLUSH_LOG_RATIO - PRUNE_SLACK_NATS)
        return ~(upper < floor)

    def log_prob(self, X: np.ndarray, prune: bool = False) -> np.ndarray:
        """(K, n) log pi_k + log N(x_o; mu_ko, Sigma_k,oo); keeps the completed rows.

        ``prune`` (statistics only): pairs that provably fall under FLUSH_LOG_RATIO of
        their row's largest are -inf and their completion is not computed.
        """
        k_all, d = self.n_components, self.n_features
        n_factors = self.U.shape[0]
        missing_rows = np.isnan(X)
        counts = missing_rows.sum(axis=1)
        self.order = order = np.argsort(counts, kind="stable")
        X, missing_rows, counts = X[order], missing_rows[order], counts[order]
        n = X.shape[0]
        self.deltas = self._buffer("deltas", (k_all, n, d))
        L = np.empty((k_all, n))
        self.groups = []
        bounds = np.flatnonzero(np.diff(counts)) + 1
        for start, stop in zip(np.r_[0, bounds], np.r_[bounds, n], strict=True):
            m = int(counts[start])
            rows = slice(start, stop)
            Xm, miss = X[rows], missing_rows[rows]
            # all components at once: (K, n_m, d) rows, one batched product
            delta = self.deltas[:, rows]
            np.subtract(Xm[None], self.means[:, None, :], out=delta)
            if not m:
                y = delta @ self.U
                L[:, rows] = (self.const[:, None] - 0.5 * d * LOG_2PI
                              - 0.5 * np.einsum("kni,kni->kn", y, y))
                continue
            n_m = stop - start
            row_pattern, idx, row_idx = _missing_patterns(miss, m)
            n_patterns = idx.shape[0]
            np.copyto(delta, 0.0, where=miss[None])
            g = np.matmul(delta, self.precisions, out=self._buffer("g", (k_all, n_m, d)))
            # b = Lambda_mo delta_o: the entries of Lambda delta_0 at m
            flat_idx = (np.arange(n_m)[:, None] * d + row_idx).reshape(-1)
            b = np.take(g.reshape(k_all, n_m * d), flat_idx, axis=1).reshape(k_all, n_m, m)
            q0 = np.einsum("kni,kni->kn", delta, g)  # delta_0^T Lambda delta_0
            base = (self.const - 0.5 * (d - m) * LOG_2PI)[:, None]  # (K, 1)
            if prune:
                comp, row = np.nonzero(self._keep(q0, b, base, row_pattern, idx))
            else:
                comp = np.repeat(np.arange(k_all), stop - start)
                row = np.tile(np.arange(stop - start), k_all)
            factor = comp if n_factors > 1 else np.zeros_like(comp)
            keys, pair_block = np.unique(factor * n_patterns + row_pattern[row],
                                         return_inverse=True)
            block_factor, block_pattern = np.divmod(keys, n_patterns)
            block_idx = idx[block_pattern]
            cond_cov, half_logdet = _spd_inverse(
                self.precisions[block_factor[:, None, None], block_idx[:, :, None],
                                block_idx[:, None, :]])  # (B, m, m), (B,)
            pair_block = pair_block.reshape(-1)
            # the statistics need each (component, pattern) once, with its summed weight
            if n_factors > 1:
                stat_keys, stat_of_pair = keys, pair_block
            else:
                stat_keys, stat_of_pair = np.unique(comp * n_patterns + row_pattern[row],
                                                    return_inverse=True)
            stat_comp, stat_pattern = np.divmod(stat_keys, n_patterns)
            stat_block = np.searchsorted(
                keys, (stat_comp if n_factors > 1 else 0) * n_patterns + stat_pattern)
            pair_cov = cond_cov[pair_block]  # (pairs, m, m)
            pair_b = b[comp, row]  # (pairs, m)
            t = -np.einsum("pij,pj->pi", pair_cov, pair_b)
            quad = q0[comp, row] + np.einsum("pi,pi->p", t, pair_b)
            L[:, rows] = -np.inf
            L[comp, start + row] = base[comp, 0] - half_logdet[pair_block] - 0.5 * quad
            pair_idx = row_idx[row]
            delta[comp[:, None], row[:, None], pair_idx] = t
            self.groups.append((start, comp, row, stat_of_pair.reshape(-1), stat_comp,
                                idx[stat_pattern], cond_cov[stat_block]))
        out = np.empty_like(L)
        out[:, order] = L
        return out

    def add_stats(self, R: np.ndarray) -> None:
        """Add the block of the last ``log_prob``; R (K, n) responsibilities times weights."""
        R = R[:, self.order]
        self._add_completed_rows(R)
        self._add_conditional_covariances(R)

    def _add_completed_rows(self, R: np.ndarray) -> None:
        """N_k, S1 and S2 of the completed rows (R in the order of ``log_prob``'s rows)."""
        root = np.sqrt(R)
        for k in range(self.n_components):
            D = self.deltas[k]
            self.nk[k] += R[k].sum()
            self.s1[k] += R[k] @ D
            active = np.flatnonzero(R[k])  # flushed responsibilities are exactly 0
            if active.size <= R.shape[1] // 2:
                G = D[active] * root[k, active][:, None]
            else:
                G = D * root[k][:, None]
            # lower triangle of s2[k] += G^T G (the upper one of its Fortran-ordered view)
            _blas.dsyrk(1.0, G.T, beta=1.0, c=self.s2[k].T, trans=0, overwrite_c=1)

    def _add_conditional_covariances(self, R: np.ndarray) -> None:
        """The conditional covariances on the missing blocks: per group, each (component,
        pattern) once with the sum of its rows' responsibilities."""
        k_all, d = self.n_components, self.n_features
        flat_s2 = self.s2.reshape(-1)
        for start, comp, row, stat_of_pair, stat_comp, stat_idx, stat_cov in self.groups:
            weight = np.bincount(stat_of_pair, weights=R[comp, start + row],
                                 minlength=stat_comp.size)
            used = np.flatnonzero(weight)
            if not used.size:
                continue
            used_comp, used_idx = stat_comp[used], stat_idx[used]
            where = (used_comp[:, None, None] * (d * d) + used_idx[:, :, None] * d
                     + used_idx[:, None, :])
            flat_s2 += np.bincount(
                where.reshape(-1),
                weights=(weight[used, None, None] * stat_cov[used]).reshape(-1),
                minlength=k_all * d * d)

    def finish(self, family):
        lower = np.tril(self.s2)
        s2 = lower + np.tril(self.s2, -1).transpose(0, 2, 1)
        return self.nk, self.s1, family.s2_from_components(s2)


class _IndependentGaps:
    """Marginal E-step and expected statistics for diag and spherical covariances.

    With Z = [X0 | X0^2 | O] (X0 the rows centred on ``ref`` with zeros at the missing
    entries, O the observed mask), the log-densities are one product Z @ W and the moments
    one product R @ Z.
    """

    def __init__(self, terms: GaussianTerms, ref: np.ndarray):
        d = terms.n_features
        prec_chol = terms.family.feature_precisions_cholesky(terms.precisions_cholesky, d)
        precision = prec_chol**2
        self.ref = ref
        self.means_c = terms.means - ref
        self.variances = 1.0 / precision
        self.W = np.concatenate([
            (precision * self.means_c).T,
            -0.5 * precision.T,
            (np.log(prec_chol) - 0.5 * LOG_2PI - 0.5 * precision * self.means_c**2).T,
        ])
        # the features' own normalisers are in W: only log_weights is added (a kind
        # whose log_det is not log det U would need its difference added here)
        self.const = terms.log_weights
        self.M = np.zeros((terms.n_components, 3 * d))
        self.nk = np.zeros(terms.n_components)

    def log_prob(self, X: np.ndarray, prune: bool = False) -> np.ndarray:
        d = X.shape[1]
        observed = ~np.isnan(X)
        Z = np.empty((X.shape[0], 3 * d))
        np.subtract(X, self.ref, out=Z[:, :d])
        np.copyto(Z[:, :d], 0.0, where=~observed)
        np.square(Z[:, :d], out=Z[:, d : 2 * d])
        Z[:, 2 * d :] = observed
        self.Z = Z
        return (Z @ self.W).T + self.const[:, None]

    def add_stats(self, R: np.ndarray) -> None:
        self.M += R @ self.Z
        self.nk += R.sum(axis=1)

    def finish(self, family):
        d = self.means_c.shape[1]
        sx, sxx, so = self.M[:, :d], self.M[:, d : 2 * d], self.M[:, 2 * d :]
        mu = self.means_c
        s1 = sx - mu * so
        s2 = sxx - 2.0 * mu * sx + mu**2 * so + self.variances * (self.nk[:, None] - so)
        return self.nk, s1, family.s2_from_components(s2)


def _column_ref(X: np.ndarray) -> np.ndarray:
    """Column means over the observed entries (0 for a column with none)."""
    observed = ~np.isnan(X)
    counts = observed.sum(axis=0)
    sums = np.where(observed, X, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def _model(terms: GaussianTerms, X: np.ndarray):
    if terms.family.independent_features:
        return _IndependentGaps(terms, _column_ref(X))
    if compiled.enabled():
        return compiled.load("gaps_compiled").CompiledDenseGaps(terms)
    return DenseGaps(terms)


def gap_stats(gaps: Gaps, model) -> SuffStats:
    """Expected sufficient statistics of the rows in ``gaps`` about the means of
    ``model`` (``GaussianTerms`` or parameters that give them).

    ``n_nonfinite``/``first_nonfinite`` count the chunk's rows with every entry missing.
    """
    terms = model.gaussian_terms()
    X, w = gaps.X, gaps.sample_weight
    k, d = terms.means.shape
    model = _model(terms, X)
    ws = Workspace()
    loglik = 0.0
    step = missing_block_rows(k, d)
    for start in range(0, X.shape[0], step):
        stop = min(start + step, X.shape[0])
        L = model.log_prob(X[start:stop], prune=True)
        log_norm = log_resp_inplace(L, ws, flush=True)
        if w is None:
            loglik += float(log_norm.sum())
        else:
            loglik += float(w[start:stop] @ log_norm)
            L *= w[start:stop]
        model.add_stats(L)
    nk, s1, s2 = model.finish(terms.family)
    n = float(X.shape[0]) if w is None else float(w.sum())
    return SuffStats(terms.covariance_type, terms.means, n, loglik, nk, s1, s2,
                     n_rows=int(X.shape[0]), n_nonfinite=gaps.n_empty,
                     first_nonfinite=gaps.first_empty)


def weighted_log_prob(X: np.ndarray, model) -> np.ndarray:
    """log pi_k + log N(x_o; mu_ko, Sigma_k,oo), shape (n, K), for rows that may hold NaN
    (each with at least one observed entry; no inf). ``model``: ``GaussianTerms`` or
    parameters that give them (``model.gaussian_terms()``)."""
    terms = model.gaussian_terms()
    X = np.asarray(X, dtype=np.float64)
    k, d = terms.means.shape
    out = np.empty((X.shape[0], k))
    model = _model(terms, X)
    step = missing_block_rows(k, d)
    for start in range(0, X.shape[0], step):
        out[start : start + step] = model.log_prob(X[start : start + step]).T
    return out


def log_prob_resp(X: np.ndarray, model):
    """(log p(x_o) (n,), responsibilities (n, K)) for rows that may hold NaN."""
    L = weighted_log_prob(X, model).T.copy()
    log_norm = log_resp_inplace(L, Workspace())
    return log_norm, L.T


def predict(X: np.ndarray, model) -> np.ndarray:
    """Most probable component per row from the marginal density, (n,) int64."""
    return weighted_log_prob(X, model).argmax(axis=1).astype(np.int64)


def predict_proba(X: np.ndarray, model) -> np.ndarray:
    """Responsibilities from the marginal density, (n, K)."""
    return log_prob_resp(X, model)[1]


def score_samples(X: np.ndarray, model) -> np.ndarray:
    """log p(x_o) per row, (n,)."""
    return log_prob_resp(X, model)[0]
