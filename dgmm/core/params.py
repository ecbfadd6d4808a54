"""The parameters of a Gaussian mixture, ``GMMParams`` (shapes: ``dgmm.core.families``)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from .families import CovarianceFamily, CovarianceType, family
from .terms import GaussianTerms


@dataclass(frozen=True, eq=False)
class GMMParams:
    """One set of mixture parameters theta = (weights, means, covariances).

    Attributes
    ----------
    weights : (K,) mixing proportions, summing to 1.
    means : (K, d) component means.
    covariances : per covariance type, see the module docstring.
    precisions_cholesky : same shape as ``covariances``; the precision factors.
    covariance_type : 'full' | 'tied' | 'diag' | 'spherical'.
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    covariance_type: CovarianceType
    family: CovarianceFamily = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "family", family(self.covariance_type))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        for name in ("weights", "means", "covariances", "precisions_cholesky"):
            arr = np.array(getattr(self, name), dtype=np.float64, copy=True)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        n_components, n_features = self.means.shape
        expected = self.family.covariance_shape(n_components, n_features)
        for name in ("covariances", "precisions_cholesky"):
            if getattr(self, name).shape != expected:
                raise ConfigError(
                    f"{name} for covariance_type={self.covariance_type!r} must have shape "
                    f"{expected}, got {getattr(self, name).shape}."
                )
        if self.weights.shape != (n_components,):
            raise ConfigError(
                f"weights must have shape ({n_components},), got {self.weights.shape}."
            )

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    @classmethod
    def from_covariances(cls, weights, means, covariances, covariance_type) -> GMMParams:
        """Build from covariances; the precision factors are computed."""
        covariances = np.asarray(covariances, dtype=np.float64)
        return cls(
            weights=weights,
            means=means,
            covariances=covariances,
            precisions_cholesky=family(covariance_type).precision_cholesky(covariances),
            covariance_type=covariance_type,
        )

    @classmethod
    def from_precisions_cholesky(
        cls, weights, means, precisions_cholesky, covariance_type
    ) -> GMMParams:
        """Build from precision factors; the covariances are computed."""
        precisions_cholesky = np.asarray(precisions_cholesky, dtype=np.float64)
        return cls(
            weights=weights,
            means=means,
            covariances=family(covariance_type).covariances_from_precision_cholesky(
                precisions_cholesky),
            precisions_cholesky=precisions_cholesky,
            covariance_type=covariance_type,
        )

    @property
    def precisions(self) -> np.ndarray:
        return self.family.precisions(self.precisions_cholesky)

    def n_free_parameters(self) -> int:
        """Number of free parameters (for BIC/AIC), as scikit-learn counts them."""
        return self.family.n_parameters(self.n_components, self.n_features)

    def log_det_cholesky(self):
        """log det U per component, (K,) (a scalar for tied); = -1/2 log det Sigma."""
        return self.family.log_det_cholesky(self.precisions_cholesky, self.n_features)

    def gaussian_terms(self) -> GaussianTerms:
        """The E-step's terms of these parameters (maximum likelihood): log pi_k (``-inf``
        for a zero weight) and log det U_k beside the means and precision factors. One
        object per parameter object, so that what the kernels cache per terms (the
        pruning bound's eigen-data) serves every chunk given these parameters."""
        terms = self.__dict__.get("_terms")
        if terms is None:
            with np.errstate(divide="ignore"):
                log_weights = np.log(self.weights)
            terms = GaussianTerms(self.means, self.precisions_cholesky, log_weights,
                                  self.log_det_cholesky(), self.covariance_type)
            object.__setattr__(self, "_terms", terms)
        return terms

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays by name (for saving)."""
        return {
            "weights": self.weights,
            "means": self.means,
            "covariances": self.covariances,
            "precisions_cholesky": self.precisions_cholesky,
        }

    def __dask_tokenize__(self):
        # by the arrays' bytes: a new parameter set gives new task keys
        digest = hashlib.sha256(self.covariance_type.encode())
        for array in self.to_arrays().values():
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return (type(self).__name__, digest.hexdigest())

    def allclose(self, other: GMMParams, rtol: float = 0.0, atol: float = 0.0) -> bool:
        """True when every array matches ``other`` within the tolerances."""
        return self.covariance_type == other.covariance_type and all(
            np.allclose(a, b, rtol=rtol, atol=atol)
            for a, b in zip(self.to_arrays().values(), other.to_arrays().values(), strict=True)
        )
