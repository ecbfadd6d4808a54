"""Covariance families: everything that depends on the covariance type, in one place.

One object per type (``FULL``, ``TIED``, ``DIAG``, ``SPHERICAL``), found by name with
``family(name)``. Code outside this module and the per-type kernels asks the family and
never compares the type's name, as scikit-learn's mixture code dispatches from its tables.

Shapes (K components, d features):

==========  ===================  ================================  ====================
type        covariances          precisions_cholesky               second moments (s2)
==========  ===================  ================================  ====================
full        (K, d, d)            (K, d, d) upper triangular        (K, d(d+1)/2) packed
tied        (d, d)               (d, d) upper triangular           (d(d+1)/2,) packed
diag        (K, d)               (K, d)                            (K, d)
spherical   (K,)                 (K,)                              (K, d)
==========  ===================  ================================  ====================

Each precision matrix is kept as a factor U with ``precision = U @ U.T`` and
``U = inv(cholesky(covariance)).T``. Symmetric second moments travel as packed lower
triangles (the triangle Cholesky reads).
"""
from __future__ import annotations

import functools
from typing import Literal, get_args

import numpy as np
from scipy import linalg

from ..errors import FitError
from .structured import CovarianceEstimate, decompose

CovarianceType = Literal["full", "tied", "diag", "spherical", "EII", "VII", "EEI", "VEI", "EVI",
                         "VVI", "EEE", "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV"]
COVARIANCE_TYPES: tuple[str, ...] = get_args(CovarianceType)
#: scikit-learn's names (of VVV, EEE, VVI, VII)
SKLEARN_TYPES: tuple[str, ...] = COVARIANCE_TYPES[:4]
#: mclust's fourteen models, in mclust's order (``dgmm.core.mclust_families``)
MCLUST_MODELS: tuple[str, ...] = COVARIANCE_TYPES[4:]

ILL_DEFINED_COVARIANCE = (
    "Fitting the mixture model failed because some components have ill-defined "
    "empirical covariance (for instance caused by singleton or collapsed samples). "
    "Try to decrease the number of components, increase reg_covar, or scale the "
    "input data."
)


def _upper_factor_of_inverse(matrix: np.ndarray) -> np.ndarray:
    """U upper triangular with inv(matrix) = U @ U.T, via the Cholesky of ``matrix``."""
    try:
        chol = linalg.cholesky(matrix, lower=True)
    except linalg.LinAlgError:
        raise FitError(ILL_DEFINED_COVARIANCE) from None
    eye = np.eye(matrix.shape[0], dtype=matrix.dtype)
    return linalg.solve_triangular(chol, eye, lower=True).T


def _flip(matrix: np.ndarray) -> np.ndarray:
    return matrix[::-1, ::-1]


def _upper_factor(precision: np.ndarray) -> np.ndarray:
    """U upper triangular with U @ U.T = precision (scikit-learn's exchange-matrix trick)."""
    return _flip(linalg.cholesky(_flip(precision), lower=True))


def _covariance_from_factor(u: np.ndarray) -> np.ndarray:
    """Sigma = inv(U @ U.T) = inv(U).T @ inv(U)."""
    u_inv = linalg.solve_triangular(u, np.eye(u.shape[0]), lower=False)
    return u_inv.T @ u_inv


def _random_rotation(rng, d: int) -> np.ndarray:
    """A random orthogonal (d, d) matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _is_spd(matrix: np.ndarray) -> bool:
    return bool(np.allclose(matrix, matrix.T) and np.all(np.linalg.eigvalsh(matrix) > 0))


@functools.lru_cache(maxsize=64)
def _tril_indices(d: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.tril_indices(d)
    rows.setflags(write=False)
    cols.setflags(write=False)
    return rows, cols


def pack_lower(matrices: np.ndarray) -> np.ndarray:
    """Lower triangles of (..., d, d) matrices as (..., d(d+1)/2), row by row."""
    d = matrices.shape[-1]
    rows, cols = _tril_indices(d)
    return matrices[..., rows, cols]


def unpack_lower(packed: np.ndarray, d: int) -> np.ndarray:
    """Symmetric (..., d, d) matrices from their packed lower triangles."""
    rows, cols = _tril_indices(d)
    out = np.zeros(packed.shape[:-1] + (d, d))
    out[..., rows, cols] = packed
    out[..., cols, rows] = packed
    return out


class CovarianceFamily:
    """The type-specific parts of a Gaussian mixture (see the module docstring).

    Subclasses implement the per-type functions; ``kernel`` names the per-chunk E-step and
    scatter implementation in ``dgmm.core.kernels``.
    """

    name: str
    #: nesting depth of ``covariances`` / ``precisions_init`` as nested lists
    depth: int
    #: the E-step/scatter implementation in ``dgmm.core.kernels``: 'triangular' (one
    #: factor per component), 'shared' (one factor for all) or 'diagonal'
    kernel: str
    #: whether the covariances hold one entry per component (all but tied)
    per_component: bool = True
    #: mclust's name: volume, shape and orientation each Equal, Variable or Identity
    mclust_name: str

    def __reduce__(self):
        return (family, (self.name,))  # unpickles to the registry's one object

    def __repr__(self):
        return f"<covariance family {self.name!r}>"

    # -- shapes and counts -----------------------------------------------------------
    def covariance_shape(self, n_components: int, n_features: int) -> tuple:
        raise NotImplementedError

    def n_covariance_parameters(self, n_components: int, n_features: int) -> float:
        raise NotImplementedError

    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Free parameters of the mixture (for BIC/AIC), as scikit-learn counts them."""
        k, d = n_components, n_features
        return int(self.n_covariance_parameters(k, d) + d * k + k - 1)

    def s2_shape(self, n_components: int, n_features: int) -> tuple:
        """Shape of the (packed) second moments carried by the statistics."""
        raise NotImplementedError

    # -- conversions -----------------------------------------------------------------
    def precision_cholesky(self, covariances: np.ndarray) -> np.ndarray:
        """Precision factors; ``FitError`` when a covariance is not positive definite."""
        raise NotImplementedError

    def covariances_from_precision_cholesky(self, precisions_cholesky) -> np.ndarray:
        raise NotImplementedError

    def precision_cholesky_from_precisions(self, precisions) -> np.ndarray:
        raise NotImplementedError

    def precisions(self, precisions_cholesky: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def log_det_cholesky(self, precisions_cholesky: np.ndarray, n_features: int):
        """log det U per component, (K,) (a scalar for tied); = -1/2 log det Sigma."""
        raise NotImplementedError

    def precisions_problem(self, precisions: np.ndarray) -> str | None:
        """Why user-given precisions are unusable (scikit-learn's words), or None."""
        raise NotImplementedError

    def full_covariances(self, covariances: np.ndarray, n_components: int,
                         n_features: int) -> np.ndarray:
        """(K, d, d) covariance matrices (for drawing ellipses and sampling)."""
        raise NotImplementedError

    def point_covariances(self, n_components: int, n_features: int, variance: float):
        """Covariances ``variance * I`` for every component (initialisation)."""
        raise NotImplementedError

    def from_full(self, covariances: np.ndarray) -> np.ndarray:
        """This type's covariances from (K, d, d) matrices (their best approximation)."""
        raise NotImplementedError

    # -- M-step ----------------------------------------------------------------------
    def estimate_covariances(self, nk: np.ndarray, delta: np.ndarray, s2: np.ndarray,
                             reg_covar: float) -> np.ndarray:
        """Covariances from shifted moments: nk (K,) with 10 eps added, delta = S1 / N_k
        (K, d) the mean minus the shift, s2 packed as ``s2_shape``."""
        raise NotImplementedError

    def fit_covariances(self, nk: np.ndarray, delta: np.ndarray, s2: np.ndarray,
                        reg_covar: float, previous: np.ndarray | None = None
                        ) -> CovarianceEstimate:
        """``estimate_covariances`` with how its inner iterations ended; ``previous`` (the
        covariances the E-step used, or None) starts the iterative structured models."""
        return CovarianceEstimate(self.estimate_covariances(nk, delta, s2, reg_covar))

    def decomposition(self, covariances: np.ndarray, n_components: int, n_features: int):
        """(volumes, shapes, orientations) of mclust's Sigma_k = lambda_k D_k A_k D_k^T,
        each shared (one value) where the model shares it: ``structured.decompose``."""
        full = self.full_covariances(covariances, n_components, n_features)
        return decompose(np.asarray(full, dtype=np.float64), self.mclust_name,
                         diagonal=self.kernel == "diagonal")

    def keep_previous(self, covariances: np.ndarray, previous: np.ndarray,
                      empty: np.ndarray) -> None:
        """Empty components keep their previous covariances (in place)."""
        covariances[empty] = previous[empty]

    # -- moments ---------------------------------------------------------------------
    def pack_s2(self, s2: np.ndarray) -> np.ndarray:
        """The statistics' form of second moments computed by the kernels."""
        return s2

    def unpack_s2(self, s2: np.ndarray, n_features: int) -> np.ndarray:
        """Second moments as matrices (full (K, d, d), tied (d, d)) or diagonals (K, d)."""
        return s2

    def move_s2(self, s2: np.ndarray, nk: np.ndarray, s1: np.ndarray,
                delta: np.ndarray) -> np.ndarray:
        """Second moments about a new shift c' from those about c (packed as ``s2_shape``).

        nk (K,), s1 (K, d) about c, delta = c - c' (K, d):
        sum r (x - c')(x - c')^T = S2 + S1 delta^T + delta S1^T + N delta delta^T.
        """
        raise NotImplementedError

    def moments_of(self, weights: np.ndarray, covariances: np.ndarray, reg_covar: float,
                   n_features: int) -> np.ndarray:
        """Average second moments about the means (packed as ``s2_shape``) whose M-step,
        with nk = ``weights`` and S1 = 0, gives back ``covariances``."""
        raise NotImplementedError

    # -- rows with missing entries (``dgmm.core.kernels.missing``) ----------------------------
    #: True when features are independent within a component (diag, spherical): missing
    #: entries then drop out of the density and enter the statistics as mu_km, sigma^2_km
    independent_features: bool = False

    def precision_factors(self, precisions_cholesky: np.ndarray) -> np.ndarray:
        """Upper precision factors as (F, d, d): F = K per component, or 1 when shared."""
        raise NotImplementedError

    def feature_precisions_cholesky(self, precisions_cholesky: np.ndarray,
                                    n_features: int) -> np.ndarray:
        """Per-feature precision factors 1 / sigma_kj, (K, d) (independent features only)."""
        raise NotImplementedError

    def s2_from_components(self, s2: np.ndarray) -> np.ndarray:
        """The statistics' form of second moments given per component: (K, d, d)
        matrices for full and tied, (K, d) diagonals for diag and spherical."""
        return s2

    # -- sampling --------------------------------------------------------------------
    def random_covariances(self, rng, n_components: int, n_features: int, low: float,
                           high: float) -> np.ndarray:
        """Random covariances with variances (eigenvalues) uniform in [low, high], along
        random axes where the type has them."""
        raise NotImplementedError

    def symmetrized(self, covariances: np.ndarray) -> np.ndarray:
        """Covariance matrices made exactly symmetric (diagonal types unchanged)."""
        return covariances

    def scale_standard_normal(self, Z: np.ndarray, labels: np.ndarray,
                              covariances: np.ndarray) -> np.ndarray:
        """Rows of standard normal draws Z (n, d) given each its component's covariance
        (labels (n,)): the centred rows of the mixture."""
        raise NotImplementedError

    def largest_variance(self, covariances: np.ndarray) -> float:
        """The largest variance along any direction of any component."""
        return float(np.max(covariances))

    def sample(self, rng, means: np.ndarray, covariances: np.ndarray, counts) -> np.ndarray:
        """Rows drawn per component (``counts[k]`` from component k), stacked in order."""
        raise NotImplementedError


class _Full(CovarianceFamily):
    name, depth, kernel = "full", 3, "triangular"
    mclust_name = "VVV"

    def covariance_shape(self, k, d):
        return (k, d, d)

    def n_covariance_parameters(self, k, d):
        return k * d * (d + 1) / 2.0

    def s2_shape(self, k, d):
        return (k, d * (d + 1) // 2)

    def precision_cholesky(self, covariances):
        return np.stack([_upper_factor_of_inverse(c) for c in covariances])

    def covariances_from_precision_cholesky(self, precisions_cholesky):
        return np.stack([_covariance_from_factor(u) for u in precisions_cholesky])

    def precision_cholesky_from_precisions(self, precisions):
        return np.stack([_upper_factor(p) for p in precisions])

    def precisions(self, precisions_cholesky):
        return np.einsum("kij,klj->kil", precisions_cholesky, precisions_cholesky)

    def log_det_cholesky(self, precisions_cholesky, n_features):
        return np.log(np.diagonal(precisions_cholesky, axis1=1, axis2=2)).sum(axis=1)

    def precisions_problem(self, precisions):
        if not all(_is_spd(p) for p in precisions):
            return f"'{self.name} precision' should be symmetric, positive-definite"
        return None

    def full_covariances(self, covariances, k, d):
        return np.array(covariances)

    def from_full(self, covariances):
        return np.array(covariances, dtype=np.float64)

    def point_covariances(self, k, d, variance):
        return np.broadcast_to(np.eye(d) * variance, (k, d, d))

    def estimate_covariances(self, nk, delta, s2, reg_covar):
        d = delta.shape[1]
        out = unpack_lower(s2, d) / nk[:, None, None] - delta[:, :, None] * delta[:, None, :]
        out[:, np.arange(d), np.arange(d)] += reg_covar
        return out

    def pack_s2(self, s2):
        return pack_lower(s2)

    def unpack_s2(self, s2, n_features):
        return unpack_lower(s2, n_features)

    def random_covariances(self, rng, k, d, low, high):
        return np.stack([(q * rng.uniform(low, high, d)) @ q.T
                         for q in (_random_rotation(rng, d) for _ in range(k))])

    def largest_variance(self, covariances):
        return max(np.linalg.eigvalsh(c).max() for c in covariances)

    def symmetrized(self, covariances):
        return 0.5 * (covariances + np.swapaxes(covariances, -1, -2))

    def scale_standard_normal(self, Z, labels, covariances):
        for component in range(covariances.shape[0]):
            rows = labels == component
            Z[rows] = Z[rows] @ np.linalg.cholesky(covariances[component]).T
        return Z

    def move_s2(self, s2, nk, s1, delta):
        cross = s1[:, :, None] * delta[:, None, :]
        outer = nk[:, None, None] * (delta[:, :, None] * delta[:, None, :])
        return s2 + pack_lower(cross + cross.transpose(0, 2, 1) + outer)

    def moments_of(self, weights, covariances, reg_covar, n_features):
        centred = covariances - reg_covar * np.eye(n_features)
        return pack_lower(weights[:, None, None] * centred)

    def precision_factors(self, precisions_cholesky):
        return np.asarray(precisions_cholesky)

    def s2_from_components(self, s2):
        return pack_lower(s2)

    def sample(self, rng, means, covariances, counts):
        return np.vstack([rng.multivariate_normal(m, c, int(n))
                          for m, c, n in zip(means, covariances, counts, strict=True)])


class _Tied(CovarianceFamily):
    name, depth, kernel = "tied", 2, "shared"
    mclust_name = "EEE"
    per_component = False

    def covariance_shape(self, k, d):
        return (d, d)

    def n_covariance_parameters(self, k, d):
        return d * (d + 1) / 2.0

    def s2_shape(self, k, d):
        return (d * (d + 1) // 2,)

    def precision_cholesky(self, covariances):
        return _upper_factor_of_inverse(covariances)

    def covariances_from_precision_cholesky(self, precisions_cholesky):
        return _covariance_from_factor(precisions_cholesky)

    def precision_cholesky_from_precisions(self, precisions):
        return _upper_factor(precisions)

    def precisions(self, precisions_cholesky):
        return precisions_cholesky @ precisions_cholesky.T

    def log_det_cholesky(self, precisions_cholesky, n_features):
        return np.log(np.diag(precisions_cholesky)).sum()

    def precisions_problem(self, precisions):
        if not _is_spd(precisions):
            return f"'{self.name} precision' should be symmetric, positive-definite"
        return None

    def full_covariances(self, covariances, k, d):
        return np.broadcast_to(covariances, (k, d, d)).copy()

    def from_full(self, covariances):
        return np.asarray(covariances, dtype=np.float64).mean(axis=0)

    def point_covariances(self, k, d, variance):
        return np.eye(d) * variance

    def estimate_covariances(self, nk, delta, s2, reg_covar):
        d = delta.shape[1]
        out = (unpack_lower(s2, d) - (delta.T * nk) @ delta) / nk.sum()
        out.flat[:: d + 1] += reg_covar
        return out

    def keep_previous(self, covariances, previous, empty):
        pass  # one covariance shared by all components: nothing per component to keep

    def pack_s2(self, s2):
        return pack_lower(s2)

    def unpack_s2(self, s2, n_features):
        return unpack_lower(s2, n_features)

    def random_covariances(self, rng, k, d, low, high):
        q = _random_rotation(rng, d)
        return (q * rng.uniform(low, high, d)) @ q.T

    def largest_variance(self, covariances):
        return np.linalg.eigvalsh(covariances).max()

    def symmetrized(self, covariances):
        return 0.5 * (covariances + np.swapaxes(covariances, -1, -2))

    def scale_standard_normal(self, Z, labels, covariances):
        return Z @ np.linalg.cholesky(covariances).T

    def move_s2(self, s2, nk, s1, delta):
        cross = s1.T @ delta
        return s2 + pack_lower(cross + cross.T + (delta.T * nk) @ delta)

    def moments_of(self, weights, covariances, reg_covar, n_features):
        return pack_lower(weights.sum() * (covariances - reg_covar * np.eye(n_features)))

    def precision_factors(self, precisions_cholesky):
        return np.asarray(precisions_cholesky)[None]

    def s2_from_components(self, s2):
        return pack_lower(s2.sum(axis=0))

    def sample(self, rng, means, covariances, counts):
        return np.vstack([rng.multivariate_normal(m, covariances, int(n))
                          for m, n in zip(means, counts, strict=True)])


class _Diagonal(CovarianceFamily):
    """Shared by diag and spherical: independent features within a component."""

    kernel = "diagonal"
    independent_features = True

    def s2_shape(self, k, d):
        return (k, d)

    def precision_cholesky(self, covariances):
        if np.any(~(covariances > 0.0)):
            raise FitError(ILL_DEFINED_COVARIANCE)
        return 1.0 / np.sqrt(covariances)

    def covariances_from_precision_cholesky(self, precisions_cholesky):
        return 1.0 / precisions_cholesky**2

    def precision_cholesky_from_precisions(self, precisions):
        return np.sqrt(precisions)

    def precisions(self, precisions_cholesky):
        return precisions_cholesky**2

    def precisions_problem(self, precisions):
        if np.any(~(precisions > 0)):
            return f"'{self.name} precision' should be positive"
        return None

    def diagonal_precisions(self, precisions_cholesky, n_features):
        """Per-feature precisions (K, d) for the diagonal kernel."""
        raise NotImplementedError

    def move_s2(self, s2, nk, s1, delta):
        return s2 + 2.0 * s1 * delta + nk[:, None] * delta**2

    def sample(self, rng, means, covariances, counts):
        d = means.shape[1]
        return np.vstack([m + rng.standard_normal(size=(int(n), d)) * np.sqrt(c)
                          for m, c, n in zip(means, covariances, counts, strict=True)])


class _Diag(_Diagonal):
    name, depth = "diag", 2
    mclust_name = "VVI"

    def covariance_shape(self, k, d):
        return (k, d)

    def n_covariance_parameters(self, k, d):
        return k * d

    def log_det_cholesky(self, precisions_cholesky, n_features):
        return np.log(precisions_cholesky).sum(axis=1)

    def diagonal_precisions(self, precisions_cholesky, n_features):
        return precisions_cholesky**2

    def full_covariances(self, covariances, k, d):
        return np.stack([np.diag(c) for c in covariances])

    def from_full(self, covariances):
        return np.diagonal(np.asarray(covariances, dtype=np.float64), axis1=1, axis2=2).copy()

    def point_covariances(self, k, d, variance):
        return np.full((k, d), variance)

    def random_covariances(self, rng, k, d, low, high):
        return rng.uniform(low, high, (k, d))

    def scale_standard_normal(self, Z, labels, covariances):
        Z *= np.sqrt(covariances)[labels]
        return Z

    def estimate_covariances(self, nk, delta, s2, reg_covar):
        return s2 / nk[:, None] - delta**2 + reg_covar

    def moments_of(self, weights, covariances, reg_covar, n_features):
        return weights[:, None] * (covariances - reg_covar)

    def feature_precisions_cholesky(self, precisions_cholesky, n_features):
        return np.asarray(precisions_cholesky)


class _Spherical(_Diagonal):
    name, depth = "spherical", 1
    mclust_name = "VII"

    def covariance_shape(self, k, d):
        return (k,)

    def n_covariance_parameters(self, k, d):
        return k

    def log_det_cholesky(self, precisions_cholesky, n_features):
        return n_features * np.log(precisions_cholesky)

    def diagonal_precisions(self, precisions_cholesky, n_features):
        return np.repeat((precisions_cholesky**2)[:, None], n_features, 1)

    def full_covariances(self, covariances, k, d):
        return np.stack([np.eye(d) * c for c in covariances])

    def from_full(self, covariances):
        covariances = np.asarray(covariances, dtype=np.float64)
        return np.diagonal(covariances, axis1=1, axis2=2).mean(axis=1)

    def point_covariances(self, k, d, variance):
        return np.full(k, variance)

    def random_covariances(self, rng, k, d, low, high):
        return rng.uniform(low, high, k)

    def scale_standard_normal(self, Z, labels, covariances):
        Z *= np.sqrt(covariances)[labels][:, None]
        return Z

    def estimate_covariances(self, nk, delta, s2, reg_covar):
        return (s2 / nk[:, None] - delta**2 + reg_covar).mean(axis=1)

    def moments_of(self, weights, covariances, reg_covar, n_features):
        per_feature = (weights * (covariances - reg_covar))[:, None]
        return np.repeat(per_feature, n_features, axis=1)

    def feature_precisions_cholesky(self, precisions_cholesky, n_features):
        return np.repeat(np.asarray(precisions_cholesky)[:, None], n_features, axis=1)


FULL, TIED, DIAG, SPHERICAL = _Full(), _Tied(), _Diag(), _Spherical()
#: every family by name; ``dgmm.core.mclust_families`` adds mclust's fourteen when the
#: ``dgmm.core`` package is imported (its ``__init__``)
FAMILIES: dict[str, CovarianceFamily] = {f.name: f for f in (FULL, TIED, DIAG, SPHERICAL)}


def family(name: str) -> CovarianceFamily:
    """The family of a covariance type name; ``ValueError`` naming the allowed ones."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}, got {name!r}."
        ) from None

