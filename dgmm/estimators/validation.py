"""Checks of an estimator's input: the data, the row weights and the user-given initial
parameters, as scikit-learn checks them, with messages that say how to fix them."""
from __future__ import annotations

import dask.array as da
import numpy as np
from sklearn.utils import check_array
from sklearn.utils.validation import check_is_fitted, validate_data

from ..core.families import family
from ..errors import ConfigError, DataError

__all__ = ["check_X", "check_initial_parameters", "check_sample_weight"]


def _is_dask(X) -> bool:
    return isinstance(X, da.Array)


def _check_shape(array: np.ndarray, shape: tuple, name: str, fix: str) -> None:
    """scikit-learn's shape message for a user-given initial parameter, plus the fix."""
    if array.shape != shape:
        raise ConfigError(
            f"The parameter '{name}' should have the shape of {shape}, but got "
            f"{array.shape}. {fix}"
        )


def _init_array(value, name: str, allow_nd: bool = False) -> np.ndarray:
    try:
        return check_array(value, dtype=[np.float64, np.float32], ensure_2d=False,
                           allow_nd=allow_nd, input_name=name)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def check_X(estimator, X, *, fitting: bool):
    """X as a float array (NumPy or Dask), checked as scikit-learn does.

    Parameters
    ----------
    estimator : GaussianMixture
        Gets ``n_features_in_`` when fitting; otherwise must be fitted with as many.
    X : array-like or dask.array.Array of shape (n_samples, n_features)
        The rows.
    fitting : bool
        Whether X is the data of a fit (at least 2 rows).

    Returns
    -------
    ndarray or dask.array.Array of shape (n_samples, n_features)
        float64 or float32.
    """
    if not fitting:
        check_is_fitted(estimator)
    if _is_dask(X):
        return _check_dask_X(estimator, X, fitting=fitting)
    try:
        return validate_data(estimator, X, reset=fitting, dtype=[np.float64, np.float32],
                             ensure_min_samples=2 if fitting else 1,
                             ensure_all_finite=False)
    except ValueError as exc:
        raise DataError(str(exc)) from None

def _check_dask_X(estimator, X, *, fitting: bool):
    if X.ndim != 2:
        raise DataError(
            f"Expected a 2-D array of shape (n_samples, n_features), got {X.ndim}-D "
            f"shape {X.shape}. Reshape it, e.g. X.reshape(-1, 1) for a single feature."
        )
    if X.dtype.kind not in "fiub":
        raise DataError(f"Expected numeric data, got dtype {X.dtype}.")
    if X.dtype not in (np.float64, np.float32):
        X = X.astype(np.float64)
    n_samples, n_features = X.shape
    if n_features < 1:
        raise DataError(f"Found array with 0 feature(s) (shape={X.shape}) while a "
                        "minimum of 1 is required.")
    if fitting:
        if n_samples < 2:
            raise DataError(f"Found array with {n_samples} sample(s) (shape={X.shape}) "
                            "while a minimum of 2 is required.")
        estimator.n_features_in_ = n_features
        if hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    elif n_features != estimator.n_features_in_:
        raise DataError(
            f"X has {n_features} features, but {type(estimator).__name__} is expecting "
            f"{estimator.n_features_in_} features as input."
        )
    return X

def check_initial_parameters(estimator, n_features: int) -> None:
    """The user-given weights, means and precisions of ``estimator``, checked as
    scikit-learn does; ``ConfigError`` says what is wrong and how to fix it.

    Parameters
    ----------
    estimator : GaussianMixture
        Its ``weights_init`` (K,), ``means_init`` (K, d) and ``precisions_init`` (full:
        (K, d, d), tied: (d, d), diag: (K, d), spherical: (K,)) are checked.
    n_features : int
        d, the features of the data.
    """
    k, d = estimator.n_components, n_features
    covariance = family(estimator.covariance_type)
    if estimator.weights_init is not None:
        weights = _init_array(estimator.weights_init, "weights_init")
        _check_shape(weights, (k,), "weights",
                     f"Give weights_init one weight per component (n_components={k}).")
        if np.any(weights < 0) or np.any(weights > 1):
            raise ConfigError(
                "The parameter 'weights' should be in the range [0, 1], but got max "
                f"value {weights.max():.5f}, min value {weights.min():.5f}. Give "
                "weights_init as proportions."
            )
        atol = 1e-6 if weights.dtype == np.float32 else 1e-8
        if not np.allclose(abs(1.0 - weights.sum()), 0.0, atol=atol):
            raise ConfigError(
                "The parameter 'weights' should be normalized, but got sum(weights) = "
                f"{weights.sum():.5f}. Divide weights_init by its sum."
            )
    if estimator.means_init is not None:
        means = _init_array(estimator.means_init, "means_init")
        _check_shape(means, (k, d), "means",
                     f"Give means_init one row of n_features={d} numbers per component "
                     f"(n_components={k}).")
    if estimator.precisions_init is not None:
        precisions = _init_array(estimator.precisions_init, "precisions_init",
                                 allow_nd=covariance.depth > 2)
        shape = covariance.covariance_shape(k, d)
        _check_shape(precisions, shape, f"{covariance.name} precision",
                     f"Give precisions_init the shape {shape} of covariance_type="
                     f"{covariance.name!r} for n_components={k}, n_features={d}.")
        problem = covariance.precisions_problem(precisions)
        if problem:
            raise ConfigError(f"{problem}. Check precisions_init.")


def check_sample_weight(sample_weight, n_samples):
    """Row weights of shape (n_samples,): a Dask array as given, else finite, non-negative
    float64 weights with a positive sum; ``DataError`` otherwise."""
    if _is_dask(sample_weight):
        if sample_weight.shape != (n_samples,):
            raise DataError(f"sample_weight must have shape ({n_samples},), got "
                            f"{sample_weight.shape}.")
        return sample_weight
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n_samples,):
        raise DataError(f"sample_weight must have shape ({n_samples},), got {w.shape}.")
    if np.any(w < 0) or not np.isfinite(w).all():
        raise DataError("sample_weight must be finite and non-negative.")
    if w.sum() <= 0:
        raise DataError("sample_weight sums to 0 (every weight is zero): at least one row "
                        "needs a positive weight.")
    return w
