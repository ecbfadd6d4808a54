import numpy as np
import pytest

from dgmm.core import kernels
from dgmm.core.params import GMMParams
from dgmm.core.stats import SuffStats, merge_all

from conftest import COVARIANCE_TYPES, make_blobs
from test_params import random_covariances


def params_for(covariance_type, X, k=3, seed=1):
    rng = np.random.default_rng(seed)
    means = X[rng.choice(X.shape[0], k, replace=False)]
    cov = random_covariances(covariance_type, k, X.shape[1], seed)
    return GMMParams.from_covariances(np.full(k, 1 / k), means, cov, covariance_type)


def assert_stats_close(a: SuffStats, b: SuffStats, rtol=1e-12):
    assert a.n == pytest.approx(b.n, rel=rtol)
    assert a.loglik == pytest.approx(b.loglik, rel=rtol)
    for name in ("nk", "s1", "s2"):
        x, y = getattr(a, name), getattr(b, name)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * np.abs(y).max())
    assert a.n_rows == b.n_rows and a.n_nonfinite == b.n_nonfinite
    assert a.first_nonfinite == b.first_nonfinite


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("splits", [[1], [5, 200], [17, 18, 300, 599]])
def test_any_split_of_the_rows_gives_the_same_statistics(covariance_type, splits):
    X = make_blobs(600, 4, 3, seed=3)
    params = params_for(covariance_type, X)
    whole = kernels.chunk_stats(X, params)
    edges = [0, *splits, X.shape[0]]
    parts = [kernels.chunk_stats(X[a:b], params, row_offset=a) for a, b in zip(edges, edges[1:])]
    assert_stats_close(merge_all(parts), whole)
    # merge is commutative and has a zero
    zero = SuffStats.zeros(covariance_type, params.means)
    assert_stats_close(merge_all([zero, *reversed(parts)]), whole)


def test_merge_keeps_the_first_nonfinite_row_and_counts():
    X = make_blobs(100, 2, 2)
    X[[7, 40, 41]] = np.nan
    X[90, 1] = np.inf
    params = params_for("diag", X[np.isfinite(X).all(1)], k=2)
    a = kernels.chunk_stats(X[:50], params, row_offset=0)
    b = kernels.chunk_stats(X[50:], params, row_offset=50)
    total = b.merge(a)
    assert (total.n_nonfinite, total.first_nonfinite) == (4, 7)
    assert (b.n_nonfinite, b.first_nonfinite) == (1, 90)
    assert total.n_rows == 96
    clean = kernels.chunk_stats(X[np.isfinite(X).all(1)], params)
    np.testing.assert_allclose(total.s2, clean.s2, rtol=1e-12)
