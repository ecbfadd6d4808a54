"""The kernel kinds: which design, log-probability and moments classes each covariance
family's kernel (``CovarianceFamily.kernel``) uses."""
from __future__ import annotations

from ..families import family
from . import blas
from .logprob import DiagDesign, DiagLogProb, FullDesign, FullLogProb, TiedDesign, TiedLogProb
from .moments import DiagMoments, FullMoments, FullSyrkMoments, Moments, TiedMoments


class Kernel:
    """The per-chunk parts of one kernel kind (``CovarianceFamily.kernel``)."""

    def __init__(self, design, log_prob, moments, syrk_moments=None):
        self.design, self.log_prob = design, log_prob
        self._moments, self._syrk_moments = moments, syrk_moments

    def moments(self, n_components, n_features, ws, dense_rows=None) -> Moments:
        syrk = self._syrk_moments is not None and n_features >= blas.TRIANGULAR_MIN_FEATURES
        cls = self._syrk_moments if syrk else self._moments
        return cls(n_components, n_features, ws, dense_rows)


KERNELS = {
    "triangular": Kernel(FullDesign, FullLogProb, FullMoments, FullSyrkMoments),
    "shared": Kernel(TiedDesign, TiedLogProb, TiedMoments),
    "diagonal": Kernel(DiagDesign, DiagLogProb, DiagMoments),
}


def kernel_of(covariance_type: str) -> Kernel:
    return KERNELS[family(covariance_type).kernel]
