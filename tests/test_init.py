import numpy as np
import pytest
from helpers import COVARIANCE_TYPES

from dgmm.engine import passes as engine
from dgmm.engine.init import initial_params, kmeans_centers


def separated(n=3000, d=2, k=4, seed=50):
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0], [20, 0], [0, 20], [20, 20]], float)[:k]
    labels = rng.integers(k, size=n)
    X = centers[labels] + rng.normal(size=(n, d))
    # the k-means optimum for blobs this far apart: each blob's own sample mean
    return X, np.stack([X[labels == j].mean(0) for j in range(k)])


def match(found, truth):
    d = ((found[:, None] - truth[None]) ** 2).sum(-1)
    return np.sqrt(d.min(0)).max()


@pytest.mark.parametrize("chunk_rows", [100, 3000])
def test_kmeans_parallel_finds_the_centers(chunk_rows):
    X, truth = separated()
    data = engine.prepare(X, chunk_rows=chunk_rows)
    centers, first = kmeans_centers(data, 4, seed=0, split_every=4, client=None)
    assert match(centers, truth) < 1e-3
    assert first.n_rows == 3000 and first.n_nonfinite == 0


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("method", ["kmeans", "k-means++", "random_from_data", "random"])
def test_initial_params_are_valid_and_reproducible(method, covariance_type):
    X, truth = separated()
    data = engine.prepare(X, chunk_rows=500)
    a = initial_params(data, 4, covariance_type, method, 1e-6, seed=3)
    b = initial_params(data, 4, covariance_type, method, 1e-6, seed=3)
    for x, y in zip(a.params.to_arrays().values(), b.params.to_arrays().values(), strict=True):
        np.testing.assert_array_equal(x, y)
        assert np.isfinite(x).all()
    np.testing.assert_allclose(a.params.weights.sum(), 1.0)
    if method in ("k-means++", "random_from_data"):
        # every initial mean is a row of the data
        for m in a.params.means:
            assert np.isclose(X, m, rtol=0, atol=0).all(axis=1).any()
    if method == "kmeans":
        assert match(a.params.means, truth) < 1e-3
    if method == "k-means++":
        assert match(a.params.means, truth) < 6  # one seed per blob, with high probability


def test_init_does_not_depend_on_the_worker(cluster_client):
    X, _ = separated()
    data = engine.prepare(X, chunk_rows=250)
    local = initial_params(data, 4, "full", "kmeans", 1e-6, seed=11)
    remote = initial_params(data, 4, "full", "kmeans", 1e-6, seed=11, client=cluster_client)
    np.testing.assert_array_equal(local.params.means, remote.params.means)
    np.testing.assert_array_equal(local.params.covariances, remote.params.covariances)
