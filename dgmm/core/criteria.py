"""Information criteria: BIC, AIC and ICL in scikit-learn's lower-is-better sign.

BIC = -2 log L + p log n, AIC = -2 log L + 2 p, and ICL = BIC - 2 sum_i w_i log max_k r_ik
(Biernacki, Celeux and Govaert 2000; mclust's ICL is its negative). The classification term
needs the responsibilities, so it is one more pass: ``classification_chunk`` returns a small
mergeable value per chunk.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import kernels
from .kernels import missing
from .nonfinite import nonfinite_rule, row_masks
from .params import GMMParams


def information_criteria(mean_log_likelihood: float, n_rows: int, n_parameters: int):
    """(BIC, AIC) of a model with ``n_parameters`` free parameters on ``n_rows`` rows."""
    total = -2.0 * mean_log_likelihood * n_rows
    return total + n_parameters * math.log(n_rows), total + 2.0 * n_parameters


@dataclass(frozen=True)
class ClassificationSum:
    """sum_i w_i log max_k r_ik over a set of rows, and their total weight."""

    total: float = 0.0
    weight: float = 0.0

    def merge(self, other: ClassificationSum) -> ClassificationSum:
        return ClassificationSum(self.total + other.total, self.weight + other.weight)


def log_max_responsibility(X: np.ndarray, params: GMMParams, marginalize: bool = False):
    """log max_k r_ik per row (n_samples,); NaN for rows that do not count (non-finite,
    or with ``marginalize`` rows holding inf or no observed entry; rows with some NaN
    entries then use the marginal density of their observed features)."""
    X = np.asarray(X)
    out = np.full(X.shape[0], np.nan)
    finite, gaps = row_masks(X)
    if finite.any():
        out[finite] = np.log(kernels.log_prob_resp(X[finite], params)[1].max(axis=1))
    if marginalize and gaps.any():
        out[gaps] = np.log(missing.log_prob_resp(X[gaps], params)[1].max(axis=1))
    return out


def classification_chunk(block, weights, row_offset, params: GMMParams,
                         nonfinite: str = "drop") -> ClassificationSum:
    """The classification term of one chunk (a pass function, see ``dgmm.engine``)."""
    values = log_max_responsibility(block, params,
                                    marginalize=nonfinite_rule(nonfinite).missing_values)
    counted = np.isfinite(values)
    w = np.ones(values.shape[0]) if weights is None else np.asarray(weights, np.float64)
    return ClassificationSum(float(w[counted] @ values[counted]), float(w[counted].sum()))
