"""Shared test helpers: reference data, parameters and comparisons (no tests here)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from dask.callbacks import Callback
from scipy.stats import wishart

from dgmm.core.families import COVARIANCE_TYPES
from dgmm.core.params import GMMParams
from dgmm.core.stats import SuffStats

__all__ = ["COVARIANCE_TYPES", "make_blobs", "random_covariances", "params_for",
           "assert_stats_close", "ComputeCounter", "REPO", "MINIMAL_WORKFLOW", "write_file"]

#: the project root (shipped workflows/, configs/, docs/)
REPO = Path(__file__).resolve().parents[1]

#: the smallest valid workflow file: a zarr source and the fit step
MINIMAL_WORKFLOW = """\
data:
  source: zarr
  path: data/x.zarr
steps: [fit]
"""


def write_file(root: Path, text: str, name: str = "workflows/w.yaml") -> Path:
    """Write dedented ``text`` to ``root/name`` (parents created); returns the path."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


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


def random_covariances(covariance_type, k, d, seed=0):
    """Random covariances of a type: Wishart(d + 2, I) matrices, variances in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    if covariance_type == "full":
        return np.stack([wishart(d + 2, np.eye(d)).rvs(random_state=rng) for _ in range(k)])
    if covariance_type == "tied":
        return wishart(d + 2, np.eye(d)).rvs(random_state=rng)
    if covariance_type == "diag":
        return rng.uniform(0.5, 2.0, size=(k, d))
    return rng.uniform(0.5, 2.0, size=k)


def params_for(covariance_type, X, k=3, seed=1):
    """Parameters of a type with means at k rows of X and random covariances."""
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


class ComputeCounter(Callback):
    """Counts the graphs computed on the local scheduler and their sizes."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def _start(self, dsk):
        self.sizes.append(len(dsk))
