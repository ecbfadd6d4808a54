"""The per-component terms of the E-step's log-density, ``GaussianTerms``.

Every model kind the engine fits (``dgmm.core.model_kinds``) gives the E-step, per
component k, a Gaussian with mean mu_k and precision factor U_k (precision U_k U_k^T) plus
two additive terms; the kernels evaluate

    log p(x, k) = log_weights_k + log_det_k - d/2 log 2pi - 1/2 |U_k^T (x - mu_k)|^2

and collect the statistics (``SuffStats``) in the layout of ``covariance_type``'s family.
For maximum likelihood log_weights_k = log pi_k and log_det_k = log det U_k; a variational
Bayesian mixture puts E[log pi_k] and 1/2 E[log det Lambda_k] - d / (2 beta_k) there, with
U_k = sqrt(nu_k) chol(W_k). See docs/design.md, "Model kinds".
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .families import CovarianceFamily, family


@dataclass(frozen=True, eq=False)
class GaussianTerms:
    """What the E-step evaluates per component (see the module docstring).

    Attributes
    ----------
    means : (K, d) the Gaussians' means, also the shift of the statistics.
    precisions_cholesky : the precision factors, shaped as the family's
        ``precisions_cholesky`` ((K, d, d) full, (d, d) tied, (K, d) diag, (K,) spherical).
    log_weights : (K,) the first additive term (log pi_k for maximum likelihood).
    log_det : (K,) or a scalar for a shared factor: the second additive term (log det U_k
        for maximum likelihood).
    covariance_type : the family of the factors and of the statistics collected.
    """

    means: np.ndarray
    precisions_cholesky: np.ndarray
    log_weights: np.ndarray
    log_det: np.ndarray | float
    covariance_type: str
    family: CovarianceFamily = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "family", family(self.covariance_type))

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    def gaussian_terms(self) -> GaussianTerms:
        """These terms (the kernels ask any parameters for their terms this way)."""
        return self

    def __dask_tokenize__(self):
        # by the arrays' bytes: new terms give new task keys, equal terms share them
        digest = hashlib.sha256(self.covariance_type.encode())
        for value in (self.means, self.precisions_cholesky, self.log_weights, self.log_det):
            array = np.ascontiguousarray(value)
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
        return (type(self).__name__, digest.hexdigest())
