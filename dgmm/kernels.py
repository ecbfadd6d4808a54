"""Per-chunk kernels: pure NumPy, no Dask, no files.

Every function here takes one chunk of rows ``X`` of shape (n_samples, n_features) and
returns arrays or a small value. Work is done in row blocks of a few MiB so that the
(block, n_components * n_features) temporaries stay in cache, and the flops go to BLAS-3
calls (one GEMM for all components at once), never to Python loops over rows.

Numerics: inside a chunk the rows are centred on the chunk's mean ``ref`` before any
expansion, so data far from the origin (|mean| >> std) lose no digits; the statistics are
returned relative to the per-component shift ``c_k`` (see ``stats.SuffStats``).
"""
from __future__ import annotations

import math

import numpy as np

from .params import GMMParams, log_det_cholesky
from .stats import SuffStats, s2_shape

#: target size in bytes of the largest (block rows x K x d) temporary
BLOCK_BYTES = 1 << 21
LOG_2PI = math.log(2.0 * math.pi)


def block_rows(n_components: int, n_features: int) -> int:
    """Rows per cache block for a model of this size (between 256 and 16384)."""
    rows = BLOCK_BYTES // (8 * max(1, n_components * max(n_features, 4)))
    return int(min(16384, max(256, rows)))


def split_finite(X: np.ndarray, sample_weight: np.ndarray | None, row_offset: int = 0):
    """Drop rows holding NaN or inf.

    Returns ``(X, sample_weight, n_nonfinite, first_nonfinite)`` where the last is the
    global index (``row_offset`` + local index) of the first dropped row, or -1.
    """
    finite = np.isfinite(X).all(axis=1)
    if sample_weight is not None:
        finite &= np.isfinite(sample_weight)
    if finite.all():
        return X, sample_weight, 0, -1
    bad = np.flatnonzero(~finite)
    X = X[finite]
    if sample_weight is not None:
        sample_weight = sample_weight[finite]
    return X, sample_weight, int(bad.size), int(row_offset + bad[0])


class _Plan:
    """Per-chunk constants of the E-step: the parameters re-expressed around ``ref``."""

    def __init__(self, params: GMMParams, ref: np.ndarray):
        self.covariance_type = params.covariance_type
        k, d = params.means.shape
        self.n_components, self.n_features = k, d
        means_c = params.means - ref  # (K, d), means relative to the chunk's centre
        prec_chol = params.precisions_cholesky
        with np.errstate(divide="ignore"):
            log_weights = np.log(params.weights)
        self.const = (
            -0.5 * d * LOG_2PI
            + log_det_cholesky(prec_chol, self.covariance_type, d)
            + log_weights
        )
        if self.covariance_type == "full":
            # y_k = (x - mu_k) @ U_k for all k in one GEMM: X @ [U_1 | ... | U_K] - b
            self.W = np.ascontiguousarray(prec_chol.transpose(1, 0, 2).reshape(d, k * d))
            self.b = np.einsum("ki,kij->kj", means_c, prec_chol).reshape(k * d)
        elif self.covariance_type == "tied":
            self.W = prec_chol
            self.b = means_c @ prec_chol  # (K, d)
            self.b_sq = (self.b**2).sum(axis=1)
        elif self.covariance_type == "diag":
            prec = prec_chol**2  # (K, d)
            self.P_T = np.ascontiguousarray(prec.T)
            self.MP_T = np.ascontiguousarray((-2.0 * means_c * prec).T)
            self.m_sq = (means_c**2 * prec).sum(axis=1)
        else:
            prec = prec_chol**2  # (K,)
            self.prec = prec
            self.M_T = np.ascontiguousarray((-2.0 * means_c).T)
            self.m_sq = (means_c**2).sum(axis=1)

    def weighted_log_prob(self, Xc: np.ndarray) -> np.ndarray:
        """log pi_k + log N(x | mu_k, Sigma_k) for centred rows Xc, shape (rows, K)."""
        k, d = self.n_components, self.n_features
        if self.covariance_type == "full":
            Y = Xc @ self.W
            Y -= self.b
            np.square(Y, out=Y)
            maha = Y.reshape(Xc.shape[0], k, d).sum(axis=2)
        elif self.covariance_type == "tied":
            Y = Xc @ self.W
            maha = (Y**2).sum(axis=1)[:, None] - 2.0 * (Y @ self.b.T) + self.b_sq
        elif self.covariance_type == "diag":
            maha = (Xc * Xc) @ self.P_T + Xc @ self.MP_T + self.m_sq
        else:
            x_sq = (Xc * Xc).sum(axis=1)[:, None]
            maha = (x_sq + Xc @ self.M_T + self.m_sq) * self.prec
        # the expansions above can round a tiny distance to a tiny negative number
        np.maximum(maha, 0.0, out=maha)
        maha *= -0.5
        maha += self.const
        return maha


def _log_resp(weighted_log_prob: np.ndarray):
    """(log p(x_i), responsibilities r_ik) from log pi_k + log p(x_i | k), in place."""
    top = weighted_log_prob.max(axis=1)
    top[~np.isfinite(top)] = 0.0
    weighted_log_prob -= top[:, None]
    np.exp(weighted_log_prob, out=weighted_log_prob)
    total = weighted_log_prob.sum(axis=1)
    weighted_log_prob /= total[:, None]
    with np.errstate(divide="ignore"):
        return top + np.log(total), weighted_log_prob


def _scatter(Xc, resp_w, shift_c, covariance_type, s2_out, nk_out, s1_out, row_weight):
    """Add the block's weighted moments about ``shift_c`` to the output accumulators.

    Xc: (rows, d) rows centred on ``ref``; resp_w: (rows, K) responsibilities times row
    weights; shift_c: (K, d) the shift c_k minus ``ref``; row_weight: (rows,) or None.
    Moments are formed about ``ref`` with BLAS-3 and moved to c_k exactly:
    sum r (x - c)(x - c)^T = A - c s^T - s c^T + N c c^T with s = sum r x, A = sum r x x^T.
    """
    rows, d = Xc.shape
    k = resp_w.shape[1]
    nk = resp_w.sum(axis=0)
    s = resp_w.T @ Xc  # (K, d) = sum_i r_ik (x_i - ref)
    nk_out += nk
    s1_out += s - nk[:, None] * shift_c
    if covariance_type == "full":
        RX = (resp_w[:, :, None] * Xc[:, None, :]).reshape(rows, k * d)
        A = (Xc.T @ RX).reshape(d, k, d).transpose(1, 0, 2)
        cs = shift_c[:, :, None] * s[:, None, :]
        s2_out += A - cs - cs.transpose(0, 2, 1) + nk[:, None, None] * (
            shift_c[:, :, None] * shift_c[:, None, :]
        )
    elif covariance_type == "tied":
        WX = Xc if row_weight is None else Xc * row_weight[:, None]
        A = Xc.T @ WX
        cs = shift_c.T @ s
        s2_out += A - cs - cs.T + (shift_c.T * nk) @ shift_c
    else:
        A = resp_w.T @ (Xc * Xc)  # (K, d)
        s2_out += A - 2.0 * shift_c * s + nk[:, None] * shift_c**2


def _as_float(X) -> np.ndarray:
    """The chunk as a float array (float32 stays float32; blocks are promoted one by one)."""
    X = np.asarray(X)
    return X if X.dtype.kind == "f" else X.astype(np.float64)


def _chunk_ref(X: np.ndarray) -> np.ndarray:
    """The chunk's column means in float64: the centre every block is expanded about."""
    return X.mean(axis=0, dtype=np.float64) if X.shape[0] else np.zeros(X.shape[1])


def chunk_stats(
    X: np.ndarray,
    params: GMMParams,
    sample_weight: np.ndarray | None = None,
    row_offset: int = 0,
) -> SuffStats:
    """E-step on one chunk: its sufficient statistics under ``params`` (shift = means).

    X: (n_samples, n_features) float; sample_weight: (n_samples,) or None for ones;
    row_offset: global index of the chunk's first row (to report non-finite rows).
    Rows with NaN or inf are skipped and counted.
    """
    X = _as_float(X)
    X, sample_weight, n_bad, first_bad = split_finite(X, sample_weight, row_offset)
    k, d = params.means.shape
    cov = params.covariance_type
    nk = np.zeros(k)
    s1 = np.zeros((k, d))
    s2 = np.zeros(s2_shape(cov, k, d))
    ref = _chunk_ref(X)
    plan = _Plan(params, ref)
    shift_c = params.means - ref
    loglik = 0.0
    step = block_rows(k, d)
    for start in range(0, X.shape[0], step):
        Xc = X[start : start + step] - ref
        w = None if sample_weight is None else sample_weight[start : start + step]
        log_norm, resp = _log_resp(plan.weighted_log_prob(Xc))
        if w is None:
            loglik += float(log_norm.sum())
        else:
            loglik += float(w @ log_norm)
            resp *= w[:, None]
        _scatter(Xc, resp, shift_c, cov, s2, nk, s1, w)
    n = float(X.shape[0]) if sample_weight is None else float(sample_weight.sum())
    return SuffStats(
        covariance_type=cov,
        shift=params.means,
        n=n,
        loglik=loglik,
        nk=nk,
        s1=s1,
        s2=s2,
        n_rows=int(X.shape[0]),
        n_nonfinite=n_bad,
        first_nonfinite=first_bad,
    )


def chunk_stats_from_labels(
    X: np.ndarray,
    labels: np.ndarray,
    shift: np.ndarray,
    covariance_type: str,
    sample_weight: np.ndarray | None = None,
) -> SuffStats:
    """Statistics for hard assignments (one-hot responsibilities), about ``shift`` (K, d).

    ``X`` must hold finite rows only; ``labels`` (n_samples,) int in [0, K).
    ``loglik`` is 0: no likelihood is defined before the first parameters exist.
    """
    k, d = shift.shape
    nk = np.zeros(k)
    s1 = np.zeros((k, d))
    s2 = np.zeros(s2_shape(covariance_type, k, d))
    ref = _chunk_ref(X)
    shift_c = shift - ref
    step = block_rows(k, d)
    for start in range(0, X.shape[0], step):
        Xc = X[start : start + step] - ref
        lab = labels[start : start + step]
        resp = np.zeros((Xc.shape[0], k))
        w = None if sample_weight is None else sample_weight[start : start + step]
        resp[np.arange(Xc.shape[0]), lab] = 1.0 if w is None else w
        _scatter(Xc, resp, shift_c, covariance_type, s2, nk, s1, w)
    n = float(X.shape[0]) if sample_weight is None else float(sample_weight.sum())
    return SuffStats(covariance_type, shift, n, 0.0, nk, s1, s2, n_rows=int(X.shape[0]))


def chunk_stats_from_resp(
    X: np.ndarray,
    resp: np.ndarray,
    shift: np.ndarray,
    covariance_type: str,
    sample_weight: np.ndarray | None = None,
) -> SuffStats:
    """Statistics for given soft responsibilities ``resp`` (n_samples, K), about ``shift``."""
    k, d = shift.shape
    nk = np.zeros(k)
    s1 = np.zeros((k, d))
    s2 = np.zeros(s2_shape(covariance_type, k, d))
    ref = _chunk_ref(X)
    resp_w = resp if sample_weight is None else resp * sample_weight[:, None]
    _scatter(X - ref, resp_w, shift - ref, covariance_type, s2, nk, s1, sample_weight)
    n = float(X.shape[0]) if sample_weight is None else float(sample_weight.sum())
    return SuffStats(covariance_type, shift, n, 0.0, nk, s1, s2, n_rows=int(X.shape[0]))


def estimate_weighted_log_prob(X: np.ndarray, params: GMMParams) -> np.ndarray:
    """log pi_k + log N(x_i | mu_k, Sigma_k), shape (n_samples, K). Rows must be finite."""
    X = _as_float(X)
    ref = _chunk_ref(X)
    plan = _Plan(params, ref)
    step = block_rows(params.n_components, params.n_features)
    out = np.empty((X.shape[0], params.n_components))
    for start in range(0, X.shape[0], step):
        out[start : start + step] = plan.weighted_log_prob(X[start : start + step] - ref)
    return out


def log_prob_resp(X: np.ndarray, params: GMMParams):
    """(log p(x_i) of shape (n_samples,), responsibilities of shape (n_samples, K))."""
    return _log_resp(estimate_weighted_log_prob(X, params))


def score_samples(X: np.ndarray, params: GMMParams) -> np.ndarray:
    """Per-row log-likelihood log p(x_i), shape (n_samples,)."""
    return log_prob_resp(X, params)[0]


def predict_proba(X: np.ndarray, params: GMMParams) -> np.ndarray:
    """Responsibilities, shape (n_samples, K); rows sum to 1."""
    return log_prob_resp(X, params)[1]


def predict(X: np.ndarray, params: GMMParams) -> np.ndarray:
    """Most probable component per row, shape (n_samples,), int64."""
    return estimate_weighted_log_prob(X, params).argmax(axis=1)
