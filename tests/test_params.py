import numpy as np
import pytest
from helpers import COVARIANCE_TYPES, random_covariances

from dgmm.core.families import family
from dgmm.core.params import GMMParams
from dgmm.errors import ConfigError, FitError


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precision_factor_round_trip(covariance_type):
    cov = random_covariances(covariance_type, 3, 4)
    chol = family(covariance_type).precision_cholesky(cov)
    np.testing.assert_allclose(family(covariance_type).covariances_from_precision_cholesky(chol),
                               cov, rtol=1e-12, atol=1e-12)
    params = GMMParams.from_covariances(np.ones(3) / 3, np.zeros((3, 4)), cov, covariance_type)
    again = family(covariance_type).precision_cholesky_from_precisions(params.precisions)
    np.testing.assert_allclose(again, chol, rtol=1e-10, atol=1e-12)
    if covariance_type in ("full", "tied"):
        mats = cov if covariance_type == "full" else cov[None]
        precs = params.precisions if covariance_type == "full" else params.precisions[None]
        for c, p in zip(mats, precs, strict=True):
            np.testing.assert_allclose(c @ p, np.eye(4), atol=1e-10)


def test_not_positive_definite_is_a_fit_error():
    cov = np.stack([np.eye(2), np.array([[1.0, 2.0], [2.0, 1.0]])])
    with pytest.raises(FitError, match="increase reg_covar"):
        GMMParams.from_covariances(np.ones(2) / 2, np.zeros((2, 2)), cov, "full")
    with pytest.raises(FitError, match="ill-defined empirical covariance"):
        GMMParams.from_covariances(np.ones(2) / 2, np.zeros((2, 2)), np.zeros((2, 2)), "diag")


def test_shape_and_type_are_checked():
    with pytest.raises(ConfigError, match=r"covariances for covariance_type='diag' must have shape "
                       r"\(2, 3\)"):
        GMMParams(np.ones(2) / 2, np.zeros((2, 3)), np.ones((2, 2)), np.ones((2, 2)), "diag")
    with pytest.raises(ConfigError, match="covariance_type must be one of"):
        GMMParams(np.ones(2) / 2, np.zeros((2, 3)), np.ones(2), np.ones(2), "round")


def test_params_are_read_only():
    p = GMMParams.from_covariances(np.ones(2) / 2, np.zeros((2, 2)), np.ones(2), "spherical")
    with pytest.raises(ValueError):
        p.means[0, 0] = 1.0


def test_dask_token_sees_every_entry():
    from dask.base import tokenize

    rng = np.random.default_rng(0)
    cov = np.stack([np.eye(64)] * 16)
    a = GMMParams.from_covariances(np.full(16, 1 / 16), rng.normal(size=(16, 64)), cov, "full")
    means = np.array(a.means)
    means[8, 30] += 1e-9  # deep inside the array: elided when printed
    b = GMMParams(a.weights, means, a.covariances, a.precisions_cholesky, "full")
    assert tokenize(a) != tokenize(b)
    assert tokenize(a) == tokenize(GMMParams(**a.to_arrays(), covariance_type="full"))
