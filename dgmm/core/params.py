"""The parameters of a Gaussian mixture, ``GMMParams``, and their conversions.

Shapes by covariance type (K components, d features):

==========  ===================  ===========================
type        covariances          precisions_cholesky
==========  ===================  ===========================
full        (K, d, d)            (K, d, d) upper triangular
tied        (d, d)               (d, d) upper triangular
diag        (K, d)               (K, d)
spherical   (K,)                 (K,)
==========  ===================  ===========================

As in scikit-learn, each precision matrix is kept as a factor U with
``precision = U @ U.T`` and ``U = inv(cholesky(covariance)).T``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from .types import COVARIANCE_TYPES, CovarianceType
from ..errors import ConfigError, FitError

ILL_DEFINED_COVARIANCE = (
    "Fitting the mixture model failed because some components have ill-defined "
    "empirical covariance (for instance caused by singleton or collapsed samples). "
    "Try to decrease the number of components, increase reg_covar, or scale the "
    "input data."
)


def covariance_shape(covariance_type: str, n_components: int, n_features: int) -> tuple:
    """Shape of ``covariances`` (and of ``precisions_cholesky``) for a covariance type."""
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]


def _upper_factor_of_inverse(matrix: np.ndarray) -> np.ndarray:
    """U upper triangular with inv(matrix) = U @ U.T, via the Cholesky of ``matrix``."""
    try:
        chol = linalg.cholesky(matrix, lower=True)
    except linalg.LinAlgError:
        raise FitError(ILL_DEFINED_COVARIANCE) from None
    eye = np.eye(matrix.shape[0], dtype=matrix.dtype)
    return linalg.solve_triangular(chol, eye, lower=True).T


def precision_cholesky_from_covariances(
    covariances: np.ndarray, covariance_type: str
) -> np.ndarray:
    """Precision factors from covariances; raises ``FitError`` if one is not positive definite."""
    covariances = np.asarray(covariances)
    if covariance_type == "full":
        return np.stack([_upper_factor_of_inverse(c) for c in covariances])
    if covariance_type == "tied":
        return _upper_factor_of_inverse(covariances)
    if np.any(~(covariances > 0.0)):
        raise FitError(ILL_DEFINED_COVARIANCE)
    return 1.0 / np.sqrt(covariances)


def _flip(matrix: np.ndarray) -> np.ndarray:
    return matrix[::-1, ::-1]


def precision_cholesky_from_precisions(
    precisions: np.ndarray, covariance_type: str
) -> np.ndarray:
    """Upper factors U with U @ U.T = precision (scikit-learn's exchange-matrix trick)."""
    precisions = np.asarray(precisions, dtype=np.float64)
    if covariance_type == "full":
        return np.stack([_flip(linalg.cholesky(_flip(p), lower=True)) for p in precisions])
    if covariance_type == "tied":
        return _flip(linalg.cholesky(_flip(precisions), lower=True))
    return np.sqrt(precisions)


def covariances_from_precision_cholesky(
    precisions_cholesky: np.ndarray, covariance_type: str
) -> np.ndarray:
    """Covariances from precision factors: Sigma = inv(U @ U.T) = inv(U).T @ inv(U)."""
    if covariance_type in ("full", "tied"):
        factors = precisions_cholesky if covariance_type == "full" else [precisions_cholesky]
        out = []
        for u in factors:
            u_inv = linalg.solve_triangular(u, np.eye(u.shape[0]), lower=False)
            out.append(u_inv.T @ u_inv)
        return np.stack(out) if covariance_type == "full" else out[0]
    return 1.0 / precisions_cholesky**2


def precisions_from_precision_cholesky(
    precisions_cholesky: np.ndarray, covariance_type: str
) -> np.ndarray:
    """Precision matrices (full/tied) or precisions (diag/spherical) from their factors."""
    if covariance_type == "full":
        return np.einsum("kij,klj->kil", precisions_cholesky, precisions_cholesky)
    if covariance_type == "tied":
        return precisions_cholesky @ precisions_cholesky.T
    return precisions_cholesky**2


def log_det_cholesky(precisions_cholesky: np.ndarray, covariance_type: str, n_features: int):
    """log det U per component, shape (K,) (a scalar for tied); = -1/2 log det Sigma."""
    if covariance_type == "full":
        return np.log(np.diagonal(precisions_cholesky, axis1=1, axis2=2)).sum(axis=1)
    if covariance_type == "tied":
        return np.log(np.diag(precisions_cholesky)).sum()
    if covariance_type == "diag":
        return np.log(precisions_cholesky).sum(axis=1)
    return n_features * np.log(precisions_cholesky)


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

    def __post_init__(self) -> None:
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ConfigError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, got "
                f"{self.covariance_type!r}."
            )
        for name in ("weights", "means", "covariances", "precisions_cholesky"):
            arr = np.array(getattr(self, name), dtype=np.float64, copy=True)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        n_components, n_features = self.means.shape
        expected = covariance_shape(self.covariance_type, n_components, n_features)
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
    def from_covariances(cls, weights, means, covariances, covariance_type) -> "GMMParams":
        """Build from covariances; the precision factors are computed."""
        covariances = np.asarray(covariances, dtype=np.float64)
        return cls(
            weights=weights,
            means=means,
            covariances=covariances,
            precisions_cholesky=precision_cholesky_from_covariances(covariances, covariance_type),
            covariance_type=covariance_type,
        )

    @classmethod
    def from_precisions_cholesky(
        cls, weights, means, precisions_cholesky, covariance_type
    ) -> "GMMParams":
        """Build from precision factors; the covariances are computed."""
        precisions_cholesky = np.asarray(precisions_cholesky, dtype=np.float64)
        return cls(
            weights=weights,
            means=means,
            covariances=covariances_from_precision_cholesky(precisions_cholesky, covariance_type),
            precisions_cholesky=precisions_cholesky,
            covariance_type=covariance_type,
        )

    @property
    def precisions(self) -> np.ndarray:
        return precisions_from_precision_cholesky(self.precisions_cholesky, self.covariance_type)

    def n_free_parameters(self) -> int:
        """Number of free parameters (for BIC/AIC), as scikit-learn counts them."""
        k, d = self.means.shape
        cov_params = {
            "full": k * d * (d + 1) / 2.0,
            "diag": k * d,
            "tied": d * (d + 1) / 2.0,
            "spherical": k,
        }[self.covariance_type]
        return int(cov_params + d * k + k - 1)

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

    def allclose(self, other: "GMMParams", rtol: float = 0.0, atol: float = 0.0) -> bool:
        """True when every array matches ``other`` within the tolerances."""
        return self.covariance_type == other.covariance_type and all(
            np.allclose(a, b, rtol=rtol, atol=atol)
            for a, b in zip(self.to_arrays().values(), other.to_arrays().values())
        )
