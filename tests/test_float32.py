"""float32 data: the E-step runs in float32, the statistics are summed in float64.

A fit on float32 data must reach the mean log-likelihood of the float64 fit of the same
values from the same start within 1e-6 (relative), for every covariance type, also far from
the origin (the chunks are centred on their means before any expansion). Mid-way the two
paths may part by more: where EM moves fast, a rounding-sized change of the parameters
shifts the whole path a little.
"""
import dask.array as da
import numpy as np
import pytest
from helpers import COVARIANCE_TYPES, make_blobs, params_for

import dgmm
from dgmm.core import kernels


def fit(X, covariance_type, start):
    gm = dgmm.GaussianMixture(
        3, covariance_type=covariance_type, max_iter=500, tol=1e-7,
        weights_init=start.weights, means_init=start.means,
        precisions_init=start.precisions,
    )
    gm.fit(da.from_array(X, chunks=(1500, X.shape[1])))
    assert gm.converged_
    return gm


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e6])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_fit_follows_the_float64_fit(covariance_type, offset):
    X32 = make_blobs(6000, 5, 3, seed=11, offset=offset).astype(np.float32)
    X64 = X32.astype(np.float64)  # the same values
    # a start near but not at the optimum, so that the iterations move the parameters
    start = params_for(covariance_type, X64 + 0.3)
    a, b = fit(X32, covariance_type, start), fit(X64, covariance_type, start)
    assert a.n_iter_ > 5 and b.n_iter_ > 5
    assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=1e-6)
    # the data's own score under both models (float64 both ways)
    X64d = da.from_array(X64, chunks=(1500, 5))
    assert a.score(X64d) == pytest.approx(b.score(X64d), rel=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n_features", [4, 40])  # 40: the pruned full E-step and SYRKs
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_chunk_statistics_are_float64_sums_close_to_the_float64_ones(
        covariance_type, n_features, weighted):
    X32 = make_blobs(3000, n_features, 3, seed=6, offset=1e3).astype(np.float32)
    X64 = X32.astype(np.float64)
    params = params_for(covariance_type, X64)
    w = np.random.default_rng(2).uniform(0.5, 2.0, 3000) if weighted else None
    a = kernels.chunk_stats(X32, params, w)
    b = kernels.chunk_stats(X64, params, w)
    assert kernels.compute_dtype(X32) == np.float32
    assert kernels.compute_dtype(X64) == np.float64
    for name in ("nk", "s1", "s2"):
        assert getattr(a, name).dtype == np.float64
    assert a.loglik == pytest.approx(b.loglik, rel=1e-6)
    np.testing.assert_allclose(a.nk, b.nk, rtol=1e-5)
    # s1, s2 are about the component means: compare against their magnitude per component
    np.testing.assert_allclose(a.s1, b.s1, rtol=0, atol=1e-5 * np.abs(b.s2).max())
    np.testing.assert_allclose(a.s2, b.s2, rtol=0, atol=1e-5 * np.abs(b.s2).max())
    # and a float32 result can fail: the float64 statistics of other parameters differ
    other = kernels.chunk_stats(X64, params_for(covariance_type, X64 + 0.5))
    assert not np.allclose(other.s2, b.s2, rtol=0, atol=1e-5 * np.abs(b.s2).max())
