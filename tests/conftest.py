"""Shared fixtures: a real distributed LocalCluster and reference data sets."""
from __future__ import annotations

import numpy as np
import pytest

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@pytest.fixture(scope="session")
def cluster_client():
    """A real LocalCluster: 2 worker processes x 1 thread, shared by the session."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
        memory_limit="2GiB",
    )
    client = Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


def make_blobs(n_samples=600, n_features=3, n_components=3, seed=0, spread=4.0, offset=0.0):
    """Rows from a mixture of well separated anisotropic Gaussians, shape (n, d)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(n_components, n_features))
    labels = rng.integers(n_components, size=n_samples)
    mixing = rng.normal(size=(n_components, n_features, n_features)) * 0.4
    mixing += np.eye(n_features)
    noise = rng.normal(size=(n_samples, n_features))
    X = centers[labels] + np.einsum("nij,nj->ni", mixing[labels], noise)
    return X + offset


@pytest.fixture
def blobs():
    return make_blobs()
