"""The marginal E-step of rows with missing entries for full and tied covariances, with
the per-row work compiled (numba); ``missing.DenseGaps`` is its NumPy reference.

Per block the rows are sorted by their missing pattern (``_pattern_groups``): Lambda_k,mm
is factored (Cholesky) once per (pattern, precision), on the first pair that needs it.
delta_0 = x - mu_k with zeros at the missing entries is built in one compiled pass,
g = Lambda_k delta_0 is one GEMM per component (one for all components with tied), and the
rest is per (row, component) O(d + m^2) work in one compiled loop: q_0 = delta_0 . g,
b = g at m, y = L^-1 b, the quadratic form q_0 - |y|^2, and the completed row delta_0 +
t at m with t = -L^-T y. For the statistics, the bounds of ``DenseGaps`` skip the pairs
whose responsibility the flush sets to 0 (neither factored nor completed). The statistics
are those of ``DenseGaps``: SYRK per component on the completed rows, plus the conditional
covariances inv(Lambda_k,mm) once per (pattern, component) with the summed
responsibilities, formed only where that sum is not 0.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from scipy.linalg import blas as _blas

from ..terms import GaussianTerms
from .missing import DenseGaps
from .pruning import PRUNE_SLACK_NATS
from .responsibilities import FLUSH_LOG_RATIO

LOG_2PI = math.log(2.0 * math.pi)
#: numba's fast-math subset for the loops below: reassociating sums (vectorised dot
#: products) and fused multiply-adds; no assumption about inf or NaN, which occur (-inf
#: log-weights, skipped pairs)
FAST = {"reassoc", "contract"}


@numba.njit(cache=True, nogil=True)
def _centre(X, order, means, delta):
    """delta[k, i] = X[order[i]] - means[k] with 0 where that row is NaN; X (n, d),
    delta (K, n, d)."""
    d = X.shape[1]
    for k in range(means.shape[0]):
        for i in range(order.size):
            row = X[order[i]]
            for j in range(d):
                x = row[j]
                delta[k, i, j] = 0.0 if x != x else x - means[k, j]


@numba.njit(cache=True, nogil=True, fastmath=FAST)
def _weighted_rows(R, delta, k, nk, s1, G):
    """For component k: nk[k] += sum_i R[k, i], s1[k] += sum_i R[k, i] delta[k, i], and the
    rows sqrt(R[k, i]) delta[k, i] with R[k, i] > 0 into G; returns their number."""
    d = delta.shape[2]
    count = 0
    total = 0.0
    for i in range(R.shape[1]):
        r = R[k, i]
        if r == 0.0:
            continue
        total += r
        root = math.sqrt(r)
        row = delta[k, i]
        for j in range(d):
            s1[k, j] += r * row[j]
            G[count, j] = root * row[j]
        count += 1
    nk[k] += total
    return count


@numba.njit(cache=True, nogil=True)
def _factor(P, cols, c0, m, chol, base):
    """The Cholesky factor of P[m, m] (m = cols[c0:c0+m]), lower and row-major, into
    chol[base : base + m^2]; returns 1/2 log det P[m, m]."""
    for a in range(m):
        row = P[cols[c0 + a]]
        for b in range(a + 1):
            chol[base + a * m + b] = row[cols[c0 + b]]
    # the log of the pivots' product every four pivots: a quarter of the logs, and no
    # product of more than four pivots (no overflow)
    half, product = 0.0, 1.0
    for j in range(m):
        rj = base + j * m
        s = chol[rj + j]
        for q in range(j):
            s -= chol[rj + q] * chol[rj + q]
        s = math.sqrt(s)
        chol[rj + j] = s
        product *= s
        if j % 4 == 3:
            half += math.log(product)
            product = 1.0
        inv = 1.0 / s
        for i in range(j + 1, m):
            ri = base + i * m
            t = chol[ri + j]
            for q in range(j):
                t -= chol[ri + q] * chol[rj + q]
            chol[ri + j] = t * inv
    return half + math.log(product)


@numba.njit(cache=True, nogil=True, fastmath=FAST)
def _marginal_rows(delta, g, row_start, cols, col_start, precisions, factor_of, base,
                   prune, log_diag, inv_low, log_low, usable, floor_offset, chol,
                   chol_start, factored, half_logdet, L):
    """L[k, i] = log pi_k + log N(x_o; mu_ko, Sigma_k,oo) and delta[k, i] completed at m,
    for rows sorted by pattern (pattern p: rows row_start[p]:row_start[p+1]).

    With Lambda_mm = L L^T (factored once per pattern and precision, when a pair needs
    it) and b = g at m: y = L^-1 b, t = -L^-T y, and the quadratic form is
    q_0 + t . b = q_0 - |y|^2. ``prune``: pairs whose upper bound lies more than
    -floor_offset below the largest lower bound of their row are -inf (the bounds of
    ``DenseGaps``), and are neither factored nor completed."""
    n_components, _, d = delta.shape
    y = np.empty(d)
    q0 = np.empty(n_components)
    upper = np.empty(n_components)
    sum_log_diag = np.zeros(n_components)
    for p in range(col_start.size - 1):
        c0 = col_start[p]
        m = col_start[p + 1] - c0
        mc = cols[c0:c0 + m]
        for k in range(n_components):
            t = 0.0
            for a in range(m):
                t += log_diag[k, mc[a]]
            sum_log_diag[k] = t
        for i in range(row_start[p], row_start[p + 1]):
            best_lower = -np.inf
            for k in range(n_components):
                dr = delta[k, i]
                gr = g[k, i]
                q = 0.0
                for j in range(d):
                    q += dr[j] * gr[j]
                q0[k] = q
                if prune:
                    b_sq = 0.0
                    for a in range(m):
                        v = gr[mc[a]]
                        b_sq += v * v
                    b_sq *= inv_low[k]
                    lower_q = max(q - b_sq - 1e-8 * (q + b_sq), 0.0)
                    c = base[k] + 0.5 * m * LOG_2PI
                    upper[k] = c - 0.5 * (m * log_low[k] + lower_q) if usable[k] else np.inf
                    best_lower = max(best_lower, c - 0.5 * (sum_log_diag[k] + q * (1.0 + 1e-8)))
            floor = best_lower + floor_offset
            for k in range(n_components):
                if prune and upper[k] < floor:
                    L[k, i] = -np.inf
                    continue
                f = factor_of[k]
                cb = chol_start[p] + f * m * m
                if not factored[p, f]:
                    factored[p, f] = True
                    half_logdet[p, f] = _factor(precisions[f], cols, c0, m, chol, cb)
                q = q0[k]
                gr = g[k, i]
                dr = delta[k, i]
                for a in range(m):
                    s = gr[mc[a]]
                    for c in range(a):
                        s -= chol[cb + a * m + c] * y[c]
                    y[a] = s / chol[cb + a * m + a]
                    q -= y[a] * y[a]
                for a in range(m - 1, -1, -1):
                    s = y[a]
                    for c in range(a + 1, m):
                        s -= chol[cb + c * m + a] * y[c]
                    y[a] = s / chol[cb + a * m + a]
                    dr[mc[a]] = -y[a]
                L[k, i] = base[k] + 0.5 * m * LOG_2PI - half_logdet[p, f] - 0.5 * q


@numba.njit(cache=True, nogil=True)
def _add_pattern_covariances(R, row_start, cols, col_start, chol, chol_start, factor_of,
                             s2):
    """s2[k][m, m] += (sum of R[k] over the pattern's rows) inv(Lambda_k,mm), per pattern;
    the inverse L^-T L^-1 is formed only for the (pattern, component) pairs that count."""
    d = s2.shape[1]
    inv_l = np.zeros((d, d))
    for p in range(col_start.size - 1):
        c0 = col_start[p]
        m = col_start[p + 1] - c0
        if m == 0:
            continue
        for k in range(R.shape[0]):
            w = 0.0
            for i in range(row_start[p], row_start[p + 1]):
                w += R[k, i]
            if w == 0.0:
                continue
            f = factor_of[k]
            A = chol[chol_start[p] + f * m * m : chol_start[p] + (f + 1) * m * m]
            for j in range(m):
                inv_l[j, j] = 1.0 / A[j * m + j]
                for i in range(j + 1, m):
                    t = 0.0
                    for q in range(j, i):
                        t -= A[i * m + q] * inv_l[q, j]
                    inv_l[i, j] = t / A[i * m + i]
            for a in range(m):
                for b in range(a + 1):
                    t = 0.0
                    for q in range(a, m):
                        t += inv_l[q, a] * inv_l[q, b]
                    s2[k, cols[c0 + a], cols[c0 + b]] += w * t


def _pattern_groups(missing_rows: np.ndarray):
    """(order (n,), row_start (P+1,), cols, col_start (P+1,)) for a block's NaN mask
    (n, d): the rows sorted by pattern, where each pattern's rows start, and the
    patterns' missing columns, concatenated."""
    n = missing_rows.shape[0]
    packed = np.packbits(missing_rows, axis=1)
    order = np.lexsort(packed.T[::-1]) if n else np.zeros(0, dtype=np.intp)
    packed = packed[order]
    new = np.ones(n, dtype=bool)
    if n > 1:
        np.any(packed[1:] != packed[:-1], axis=1, out=new[1:])
    first = np.flatnonzero(new)
    row_start = np.append(first, n)
    pattern_rows = missing_rows[order[first]]
    cols = np.nonzero(pattern_rows)[1]
    col_start = np.zeros(first.size + 1, dtype=np.int64)
    np.cumsum(pattern_rows.sum(axis=1), out=col_start[1:])
    return order, row_start, cols, col_start


class CompiledDenseGaps(DenseGaps):
    """``DenseGaps`` with the per-row work compiled (see the module docstring)."""

    def __init__(self, terms: GaussianTerms):
        super().__init__(terms)
        k = self.n_components
        self.factor_of = np.arange(k) if self.U.shape[0] > 1 else np.zeros(k, dtype=np.int64)
        self.base = self.const - 0.5 * self.n_features * LOG_2PI

    def log_prob(self, X: np.ndarray, prune: bool = False) -> np.ndarray:
        """(K, n) log pi_k + log N(x_o; mu_ko, Sigma_k,oo); keeps the completed rows.

        ``prune`` (statistics only): pairs that provably fall under FLUSH_LOG_RATIO of
        their row's largest are -inf and are neither factored nor completed.
        """
        k_all, d = self.n_components, self.n_features
        n_factors = self.U.shape[0]
        order, row_start, cols, col_start = _pattern_groups(np.isnan(X))
        m = np.diff(col_start)
        chol_start = np.zeros(m.size + 1, dtype=np.int64)
        np.cumsum(n_factors * m**2, out=chol_start[1:])
        chol = np.empty(int(chol_start[-1]))
        half_logdet = np.empty((m.size, n_factors))
        factored = np.zeros((m.size, n_factors), dtype=bool)
        n = X.shape[0]
        self.deltas = delta = self._buffer("deltas", (k_all, n, d))
        _centre(np.ascontiguousarray(X), order, self.means, delta)
        L = self._buffer("L", (k_all, n))
        g = self._buffer("g", (k_all, n, d))
        if n_factors > 1:
            np.matmul(delta, self.precisions, out=g)
        else:
            np.matmul(delta.reshape(k_all * n, d), self.precisions[0],
                      out=g.reshape(k_all * n, d))
        if prune:
            log_diag, inv_low, log_low, usable = self._bound_data()
        else:  # unused
            log_diag, inv_low = np.zeros((k_all, d)), np.zeros(k_all)
            log_low, usable = inv_low, np.zeros(k_all, dtype=bool)
        _marginal_rows(delta, g, row_start, cols, col_start, self.precisions, self.factor_of,
                       self.base, prune, log_diag, inv_low, log_low, usable,
                       FLUSH_LOG_RATIO - PRUNE_SLACK_NATS, chol, chol_start, factored,
                       half_logdet, L)
        return self._finish_block(order, L, row_start, cols, col_start, chol, chol_start)

    def _finish_block(self, order, L, *patterns):
        """Keep the block's patterns for the statistics; L (K, n) in the rows' order."""
        self.order = order
        self._patterns = patterns
        out = np.empty_like(L)
        out[:, order] = L
        return out

    def _add_completed_rows(self, R: np.ndarray) -> None:
        R = np.ascontiguousarray(R)
        G = self._buffer("weighted_rows", (R.shape[1], self.n_features))
        for k in range(self.n_components):
            count = _weighted_rows(R, self.deltas, k, self.nk, self.s1, G)
            if count:
                # lower triangle of s2[k] += G^T G (the upper one of its Fortran view)
                _blas.dsyrk(1.0, G[:count].T, beta=1.0, c=self.s2[k].T, trans=0,
                            overwrite_c=1)

    def _add_conditional_covariances(self, R: np.ndarray) -> None:
        row_start, cols, col_start, chol, chol_start = self._patterns
        _add_pattern_covariances(np.ascontiguousarray(R), row_start, cols, col_start, chol,
                                 chol_start, self.factor_of, self.s2)
