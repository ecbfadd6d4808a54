"""The M-step: new parameters as a pure function of the reduced sufficient statistics.

mu_k = c_k + S1_k / N_k, Sigma_k = S2_k / N_k - (mu_k - c_k)(mu_k - c_k)^T + reg_covar I,
pi_k = N_k / sum_j N_j. A component with ``N_k`` below ``EMPTY_FRACTION * n`` keeps its
previous mean and covariance with a weight of about 0 (``MStepResult.empty``); a
covariance still not positive definite raises ``FitError`` (increase ``reg_covar``).
See docs/design.md, "Sufficient statistics and the M-step".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .families import family
from .params import GMMParams
from .stats import SuffStats
from .structured import EMPTY_FRACTION
from .threads import single_blas_thread


@dataclass(frozen=True)
class MStepResult:
    params: GMMParams
    mean_loglik: float
    empty: tuple[int, ...]
    #: inner iterations of an iterative structured M-step (0 for closed forms), and
    #: whether they stopped at their cap before meeting their tolerance
    inner_iterations: int = 0
    inner_capped: bool = False


def mean_log_likelihood(stats: SuffStats) -> float:
    """Weighted mean log-likelihood per row of the parameters the pass started with."""
    return stats.loglik / stats.n if stats.n > 0 else float("nan")


@single_blas_thread()
def m_step(stats: SuffStats, reg_covar: float, previous: GMMParams | None = None) -> MStepResult:
    """New parameters from merged statistics; ``previous`` supplies empty components.

    stats: merged over all rows, with ``stats.shift`` the previous means (K, d).
    reg_covar: non-negative float added to the covariances' diagonals.
    Raises ``FitError`` when a covariance is not positive definite.
    """
    kind = family(stats.covariance_type)
    eps = np.finfo(np.float64).eps
    nk = stats.nk + 10 * eps
    means = stats.shift + stats.s1 / nk[:, None]
    estimate = kind.fit_covariances(nk, stats.s1 / nk[:, None], stats.s2, reg_covar,
                                    None if previous is None else previous.covariances)
    covariances = estimate.covariances
    empty = np.flatnonzero(stats.nk <= EMPTY_FRACTION * max(stats.n, eps))
    if empty.size and previous is not None:
        means[empty] = previous.means[empty]
        kind.keep_previous(covariances, previous.covariances, empty)
    weights = nk / nk.sum()
    params = GMMParams.from_covariances(weights, means, covariances, kind.name)
    return MStepResult(params, mean_log_likelihood(stats), tuple(int(i) for i in empty),
                       estimate.n_iter, not estimate.converged)
