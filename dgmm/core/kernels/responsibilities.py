"""From weighted log-probabilities to responsibilities: the normaliser, the flush of
negligible responsibilities, and the finiteness test of a chunk's rows."""
from __future__ import annotations

import numpy as np

from .blas import Workspace

#: in the statistics (not in predict_proba), a responsibility below exp(-50) ~ 2e-22
#: times the row's largest (which is at least 1/K) is set to exactly 0. A row's share of
#: N_k then moves by under 2e-22, so N_k moves by under 2e-22 N: below float64 rounding
#: (1.1e-16 N_k) for every component holding more than 2e-6 of the data, and under 1e-12
#: of N_k for any weight above 2e-10. Two things are gained: no subnormal numbers (from
#: exp, then from their products with the data) reach the GEMMs, where each costs 10-100x
#: a normal one; and the full-covariance scatter skips the rows that do not belong to a
#: component (see ``Moments.add``): with separated components, most of them
FLUSH_LOG_RATIO = -50.0


def all_finite(a: np.ndarray) -> bool:
    """True when no entry is NaN or inf (one fast pass; exact, never a false 'True')."""
    if a.size == 0 or a.dtype.kind not in "fc":
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(a, axis=None)
    # NaN and inf propagate through the sum; a finite sum proves every entry finite.
    # An overflowing sum of finite entries only sends the caller to the exact check.
    return bool(np.isfinite(total))


def split_finite(X: np.ndarray, sample_weight: np.ndarray | None, row_offset: int = 0):
    """Drop rows holding NaN or inf.

    Returns ``(X, sample_weight, n_nonfinite, first_nonfinite)`` where the last is the
    global index (``row_offset`` + local index) of the first dropped row, or -1.
    """
    if all_finite(X) and (sample_weight is None or all_finite(sample_weight)):
        return X, sample_weight, 0, -1
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



def log_resp_inplace(L: np.ndarray, ws: Workspace, flush: bool = False) -> np.ndarray:
    """Turn (K, m) weighted log-probabilities into responsibilities in place.

    Returns log p(x_i) (m,), a workspace view. Rows where every component has probability
    zero give log p = -inf (and NaN responsibilities), as before any max is subtracted.
    ``flush``: responsibilities below exp(FLUSH_LOG_RATIO) times the row's largest become
    exactly 0 (for the statistics only, see ``FLUSH_LOG_RATIO``).
    """
    m = L.shape[1]
    top = np.max(L, axis=0, out=ws.get("top", (m,)))
    if not all_finite(top):
        top[~np.isfinite(top)] = 0.0
    L -= top
    if flush:
        tiny = ws.get("tiny", L.shape, dtype=np.bool_)
        np.less(L, FLUSH_LOG_RATIO, out=tiny)
        np.copyto(L, -np.inf, where=tiny)
    np.exp(L, out=L)
    total = np.sum(L, axis=0, out=ws.get("total", (m,)))
    with np.errstate(divide="ignore", invalid="ignore"):
        L /= total
        np.log(total, out=total)
    total += top
    return total
