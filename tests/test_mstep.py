import numpy as np
import pytest
from helpers import COVARIANCE_TYPES, make_blobs, params_for

from dgmm.core import kernels
from dgmm.core.mstep import m_step
from dgmm.core.params import GMMParams
from dgmm.errors import FitError


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_m_step_matches_weighted_moments(covariance_type, offset):
    X = make_blobs(400, 3, 3, seed=8) + offset
    rng = np.random.default_rng(1)
    resp = rng.dirichlet(np.ones(3), size=400)
    w = rng.uniform(0.5, 2.0, size=400)
    shift = X[:3] + rng.normal(size=(3, 3))  # any shift gives the same answer
    stats = kernels.chunk_stats_from_resp(X, resp, shift, covariance_type, w)
    params = m_step(stats, reg_covar=1e-6).params
    rw = resp * w[:, None]
    for k in range(3):
        mean = np.average(X, axis=0, weights=rw[:, k])
        np.testing.assert_allclose(params.means[k], mean, rtol=1e-12)
    np.testing.assert_allclose(params.weights, rw.sum(0) / rw.sum(), rtol=1e-12)
    covs = np.stack([np.cov(X.T, aweights=rw[:, k], bias=True) for k in range(3)])
    covs += 1e-6 * np.eye(3)
    expected = {
        "full": covs,
        "tied": np.einsum("k,kij->ij", rw.sum(0), covs - 1e-6 * np.eye(3)) / rw.sum()
        + 1e-6 * np.eye(3),
        "diag": np.diagonal(covs, axis1=1, axis2=2),
        "spherical": np.diagonal(covs, axis1=1, axis2=2).mean(1),
    }[covariance_type]
    np.testing.assert_allclose(params.covariances, expected, rtol=1e-8)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_empty_component_keeps_its_previous_parameters(covariance_type):
    X = make_blobs(300, 2, 2, seed=9)
    previous = params_for(covariance_type, X, k=3)
    far = np.array(previous.means)
    far[2] = [1e3, 1e3]  # nothing near: component 2 gets no responsibility at all
    previous = GMMParams(previous.weights, far, previous.covariances,
                         previous.precisions_cholesky, covariance_type)
    stats = kernels.chunk_stats(X, previous)
    result = m_step(stats, 1e-6, previous=previous)
    assert result.empty == (2,)
    p = result.params
    for arr in p.to_arrays().values():
        assert np.isfinite(arr).all()
    np.testing.assert_array_equal(p.means[2], far[2])
    if covariance_type != "tied":
        np.testing.assert_array_equal(p.covariances[2], previous.covariances[2])
    assert p.weights[2] < 1e-12
    np.testing.assert_allclose(p.weights.sum(), 1.0)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_collapsed_component_gets_reg_covar_not_nan(covariance_type):
    X = np.vstack([make_blobs(200, 2, 2, seed=1), np.full((50, 2), 30.0)])
    resp = np.zeros((250, 2))
    resp[:200, 0] = 1
    resp[200:, 1] = 1
    stats = kernels.chunk_stats_from_resp(X, resp, np.zeros((2, 2)), covariance_type)
    p = m_step(stats, reg_covar=1e-4).params
    np.testing.assert_allclose(p.means[1], [30.0, 30.0], rtol=1e-12)
    if covariance_type == "full":
        np.testing.assert_allclose(p.covariances[1], 1e-4 * np.eye(2), atol=1e-12)
    elif covariance_type in ("diag", "spherical"):
        np.testing.assert_allclose(p.covariances[1], 1e-4, rtol=1e-7)
    for arr in p.to_arrays().values():
        assert np.isfinite(arr).all()
    if covariance_type != "tied":
        with pytest.raises(FitError, match="increase reg_covar"):
            m_step(stats, reg_covar=0.0)
