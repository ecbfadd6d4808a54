"""The pruning bound of the 'full' E-step of the statistics: (row, component) pairs that
provably fall under ``FLUSH_LOG_RATIO`` of their row's largest are never computed."""
from __future__ import annotations

import weakref

import numpy as np

from ..terms import GaussianTerms
from .blas import Workspace, gather_rows
from .responsibilities import FLUSH_LOG_RATIO

#: from this many features on, the full-covariance E-step of the statistics skips the
#: (row, component) pairs that provably fall under FLUSH_LOG_RATIO (see ``LogProb``)
PRUNE_MIN_FEATURES = 32
#: a block is pruned only when at most this share of its (row, component) pairs remain
#: (otherwise the dense GEMM over all components is cheaper)
PRUNE_MAX_SHARE = 0.5
#: nats of slack on the pruning bounds (their rounding is many orders below it)
PRUNE_SLACK_NATS = 1.0
#: eigen-directions per component kept exactly in the pruning bound: covers components
#: stretched along a few axes (e.g. one spanning two clusters early in a fit)
PRUNE_DIRECTIONS = 4
#: when pruning is possible, rows per block are this multiple of ``block_rows``: the
#: per-component products on gathered rows need a few hundred rows each to run well
PRUNE_BLOCK_FACTOR = 4


#: the pruning bounds' eigen-data per ``GaussianTerms`` object: every chunk task of a pass
#: on a worker receives the same deserialized terms, so the K eigen-decompositions
#: (about the cost of 1000 rows' E-step) run once per worker and pass, not per chunk
_SOFTEST_DIRECTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _softest_directions(terms: GaussianTerms, r: int):
    """(lam_r (K,), gaps (K, r), V (K, d, r)) for the pruning bound of 'full' parameters.

    V holds the eigenvectors of each precision U_k U_k^T for its r smallest eigenvalues
    lam_1..lam_r, gaps = lam_{r+1} - lam_j, and lam_r is lam_{r+1} less tau = 8 d eps
    lam_max: the computed eigenpairs are exact for a matrix within tau of the precision
    (forming U U^T and eigh each lose a few ulps of lam_max), so with lam_r - tau the bound
    holds for the precision itself, which matters when it is ill-conditioned (a tiny
    reg_covar with collinear or badly scaled features).
    """
    cached = _SOFTEST_DIRECTIONS.get(terms)
    if cached is not None and cached[0] == r:
        return cached[1]
    prec_chol = terms.precisions_cholesky
    d = prec_chol.shape[1]
    lam, vec = np.linalg.eigh(prec_chol @ prec_chol.transpose(0, 2, 1))
    lam = np.maximum(lam, 0.0)
    tau = 8 * d * np.finfo(np.float64).eps * lam[:, -1]
    value = (np.maximum(lam[:, r] - tau, 0.0), lam[:, r, None] - lam[:, :r],
             np.ascontiguousarray(vec[:, :, :r]))
    _SOFTEST_DIRECTIONS[terms] = (r, value)
    return value


class PrunedLogProb:
    """The 'full' E-step of the statistics, skipping pairs the flush would zero.

    Per component: W_k = [-b_k; U_k] (d+1, d) for the exact values on gathered rows, and
    the bound data: the precision's PRUNE_DIRECTIONS smallest eigenvalues and their
    eigenvectors V_k (see ``_softest_directions``), which bound the Mahalanobis distance
    from below (see ``fill``).
    """

    def __init__(self, terms: GaussianTerms, means_c: np.ndarray, b: np.ndarray,
                 const: np.ndarray, ws: Workspace):
        prec_chol = terms.precisions_cholesky
        k, d = means_c.shape
        self.n_components, self.n_features = k, d
        self.const = const  # (K, 1), in the compute type
        #: relative rounding slack on |x|^2 + |mu|^2 in the bound: the expansion in the
        #: compute type loses a few d eps of it; 1e-10 for float64, 1e-4 for float32
        self.slack = 1e-10 if ws.dtype == np.float64 else 1e-4
        self.ws = ws
        self.W_k = np.empty((k, d + 1, d))
        self.W_k[:, 0] = -b
        self.W_k[:, 1:] = prec_chol
        r = min(PRUNE_DIRECTIONS, d - 1)
        lam_r, gaps, V = _softest_directions(terms, r)
        self.lam_r = lam_r[None, :]  # (1, K)
        # [1 | Xc] @ bounds_w = [projections of x - mu_k on V_k (K r columns) |
        # |mu_k|^2 - 2 x.mu_k (K columns)]; the rounding slack (1e-10 of
        # |x|^2 + |mu|^2 in float64, see fill) is folded in as the factor 1 - slack
        self.bounds_w = np.empty((d + 1, k * r + k))
        self.bounds_w[0, : k * r] = -np.einsum("kd,kdr->kr", means_c, V).reshape(-1)
        self.bounds_w[1:, : k * r] = V.transpose(1, 0, 2).reshape(d, k * r)
        self.bounds_w[0, k * r :] = (means_c**2).sum(axis=1) * (1.0 - self.slack)
        self.bounds_w[1:, k * r :] = -2.0 * means_c.T
        # sum_j (lam_r - lam_j) p_j^2 for all k as one product with the squares
        self.gap_w = np.zeros((k * r, k))
        for j in range(k):
            self.gap_w[j * r : (j + 1) * r, j] = gaps[j]
        self.n_directions = r
        self.W_k = self.W_k.astype(ws.dtype, copy=False)
        self.bounds_w = self.bounds_w.astype(ws.dtype, copy=False)
        self.gap_w = self.gap_w.astype(ws.dtype, copy=False)
        self.lam_r = self.lam_r.astype(ws.dtype, copy=False)

    def fill(self, Z: np.ndarray, L: np.ndarray) -> bool:
        """Fill L (K, m) for a 'full' block computing only the pairs that may matter.

        With delta = x_i - mu_k, p_j its projections on the r eigenvectors of the
        precision with the smallest eigenvalues lam_1 <= ... <= lam_r (all others are
        >= lam_r):  maha_ik >= lam_r |delta|^2 - sum_j (lam_r - lam_j) p_j^2, so
        log p_ik <= c_k - that / 2. Each row's most promising component (largest upper
        bound) is computed exactly first; every other pair whose upper bound lies more
        than -FLUSH_LOG_RATIO (+ slack) below that exact value is set to -inf (the flush
        would have zeroed it anyway) and the rest are computed exactly, per component on
        its gathered rows. Returns False when more than PRUNE_MAX_SHARE of the pairs
        remain (L then holds nothing usable; the caller computes the block densely).
        """
        k, m = self.n_components, Z.shape[0]
        r = self.n_directions
        ws = self.ws
        both = ws.get("bounds", (m, k * r + k))
        np.matmul(Z, self.bounds_w, out=both)
        proj, dist = both[:, : k * r], both[:, k * r :]
        np.square(proj, out=proj)
        upper = ws.get("upper", (m, k))
        np.matmul(proj, self.gap_w, out=upper)  # sum_j (lam_r - lam_j) p_j^2
        x_sq = ws.get("x_sq", (m, 1))
        np.einsum("rd,rd->r", Z[:, 1:], Z[:, 1:], out=x_sq[:, 0])
        x_sq *= 1.0 - self.slack
        dist += x_sq  # |x - mu_k|^2 less the slack, (m, K)
        # maha >= lam_r (|delta|^2 - slack) - sum_j gap_j p_j^2; the slack (1e-10 of
        # |x|^2 + |mu|^2) is orders above what the expansion and projections lose
        dist *= self.lam_r
        np.subtract(dist, upper, out=upper)
        np.maximum(upper, 0.0, out=upper)
        upper *= -0.5
        upper += self.const[:, 0]  # upper bounds of log p, (m, K)
        best = np.argmax(upper, axis=1)
        # a first count against the largest upper bound (above the exact best, so fewer
        # pairs pass than will): when even these are too many, go dense at once
        keep = ws.get("keep", (m, k), dtype=np.bool_)
        optimistic = np.take_along_axis(upper, best[:, None], axis=1)
        optimistic += FLUSH_LOG_RATIO - PRUNE_SLACK_NATS
        np.greater_equal(upper, optimistic, out=keep)
        if np.count_nonzero(keep) > PRUNE_MAX_SHARE * k * m:
            return False
        L.fill(-np.inf)
        for j in range(k):
            self.exact(Z, L, j, np.flatnonzero(best == j))
        floor = L[best, np.arange(m)]
        floor += FLUSH_LOG_RATIO - PRUNE_SLACK_NATS
        np.greater_equal(upper, floor[:, None], out=keep)
        keep[np.arange(m), best] = False
        kept = np.count_nonzero(keep, axis=0)
        if kept.sum() + m > PRUNE_MAX_SHARE * k * m:
            return False
        for j in range(k):
            if kept[j]:
                self.exact(Z, L, j, np.flatnonzero(keep[:, j]))
        return True

    def exact(self, Z: np.ndarray, L: np.ndarray, j: int, rows: np.ndarray) -> None:
        """L[j, rows] = log pi_j + log N(x_rows | mu_j, Sigma_j), on the gathered rows."""
        if not rows.size:
            return
        ws = self.ws
        Zg = gather_rows(Z, rows, ws)
        Y = ws.get("Y_gathered", (rows.size, self.n_features))
        np.matmul(Zg, self.W_k[j], out=Y)
        maha = ws.get("maha_gathered", (rows.size,))
        np.einsum("rd,rd->r", Y, Y, out=maha)
        maha *= -0.5
        maha += self.const[j, 0]
        L[j, rows] = maha
