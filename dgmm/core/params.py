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

    Parameters
    ----------
    weights : array-like of shape (K,)
        Mixing proportions, summing to 1.
    means : array-like of shape (K, d)
        Component means.
    covariances : array-like
        Per covariance type: full: (K, d, d), tied: (d, d), diag: (K, d), spherical: (K,).
    precisions_cholesky : array-like
        The precision factors, shaped as ``covariances``.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
        The form of the covariances.
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
        """Build from covariances; the precision factors are computed.

        Parameters
        ----------
        weights : array-like of shape (K,)
            Mixing proportions, summing to 1.
        means : array-like of shape (K, d)
            Component means.
        covariances : array-like
            Per covariance type: full: (K, d, d), tied: (d, d), diag: (K, d), spherical: (K,).
        covariance_type : {'full', 'tied', 'diag', 'spherical'}
            The form of ``covariances``.

        Returns
        -------
        GMMParams
        """
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
        """Build from precision factors; the covariances are computed.

        Parameters
        ----------
        weights : array-like of shape (K,)
            Mixing proportions, summing to 1.
        means : array-like of shape (K, d)
            Component means.
        precisions_cholesky : array-like
            The precision factors, per covariance type: full: (K, d, d), tied:
            (d, d), diag: (K, d), spherical: (K,).
        covariance_type : {'full', 'tied', 'diag', 'spherical'}
            The form of the factors.

        Returns
        -------
        GMMParams
        """
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
        """Number of free parameters (for BIC/AIC), as scikit-learn counts them.

        Returns
        -------
        int
        """
        return self.family.n_parameters(self.n_components, self.n_features)

    def log_det_cholesky(self):
        """log det U of the precision factors; equals -1/2 log det Sigma.

        Returns
        -------
        ndarray of shape (K,), or float for ``tied``
        """
        return self.family.log_det_cholesky(self.precisions_cholesky, self.n_features)

    def gaussian_terms(self) -> GaussianTerms:
        """The E-step's terms of these parameters (maximum likelihood): log pi_k (``-inf``
        for a zero weight) and log det U_k beside the means and precision factors. One
        object per parameter object, so that what the kernels cache per terms (the
        pruning bound's eigen-data) serves every chunk given these parameters.

        Returns
        -------
        GaussianTerms
            Built once, then the same object.
        """
        terms = self.__dict__.get("_terms")
        if terms is None:
            with np.errstate(divide="ignore"):
                log_weights = np.log(self.weights)
            terms = GaussianTerms(self.means, self.precisions_cholesky, log_weights,
                                  self.log_det_cholesky(), self.covariance_type)
            object.__setattr__(self, "_terms", terms)
        return terms

    def __getstate__(self):
        # the cached terms are rebuilt where needed, not shipped with the parameters
        return {k: v for k, v in self.__dict__.items() if k != "_terms"}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays by name (for saving).

        Returns
        -------
        dict of str to ndarray
            ``weights``, ``means``, ``covariances``, ``precisions_cholesky``.
        """
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
        """Whether every array matches ``other`` within the tolerances.

        Parameters
        ----------
        other : GMMParams
            The parameters to compare with.
        rtol, atol : float, default=0
            Relative and absolute tolerances of ``numpy.allclose`` (0: equal).

        Returns
        -------
        bool
            Also False when the covariance types differ.
        """
        return self.covariance_type == other.covariance_type and all(
            np.allclose(a, b, rtol=rtol, atol=atol)
            for a, b in zip(self.to_arrays().values(), other.to_arrays().values(), strict=True)
        )
