import numpy as np
import pytest
from helpers import COVARIANCE_TYPES, assert_stats_close, make_blobs, params_for

from dgmm.core import kernels
from dgmm.core.stats import SuffStats, merge_all


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("splits", [[1], [5, 200], [17, 18, 300, 599]])
def test_any_split_of_the_rows_gives_the_same_statistics(covariance_type, splits):
    X = make_blobs(600, 4, 3, seed=3)
    params = params_for(covariance_type, X)
    whole = kernels.chunk_stats(X, params)
    edges = [0, *splits, X.shape[0]]
    parts = [kernels.chunk_stats(X[a:b], params, row_offset=a)
             for a, b in zip(edges, edges[1:], strict=False)]
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
