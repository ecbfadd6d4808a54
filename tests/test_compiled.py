"""The compiled (numba) kernels against the NumPy reference kernels, and their switch."""
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import COVARIANCE_TYPES, assert_stats_close, make_blobs, params_for

from dgmm.core import kernels
from dgmm.core.kernels import compiled, missing
from dgmm.core.nonfinite import MARGINALIZE
from dgmm.core.params import GMMParams

pytestmark = pytest.mark.skipif(not compiled.enabled(), reason="compiled kernels are off")


def with_gaps(X, share, seed):
    rng = np.random.default_rng(seed)
    X = np.array(X, dtype=np.float64)
    X[rng.random(X.shape) < share] = np.nan
    X[7] = np.nan  # a row with every entry missing: skipped and counted
    X[11, 1:] = np.nan  # one observed entry
    return X


def both(monkeypatch, run):
    """run() with the NumPy kernels, then with the compiled ones."""
    monkeypatch.setenv(compiled.SWITCH, "0")
    reference = run()
    monkeypatch.delenv(compiled.SWITCH)
    return reference, run()


def ill_conditioned(params):
    """The same model with the first component squeezed to a condition number ~1e8."""
    cov = params.family.full_covariances(params.covariances, *params.means.shape)
    if params.covariance_type != "full":
        return params
    d = cov.shape[1]
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(d, d)))
    cov = cov.copy()
    cov[0] = (q * np.geomspace(1e-4, 1e4, d)) @ q.T
    return GMMParams.from_covariances(params.weights, params.means, cov, "full")


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("n_features", [3, 12, 40])
@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_missing_value_statistics_match_the_numpy_kernels(monkeypatch, covariance_type,
                                                          n_features, offset):
    X = make_blobs(1500, n_features, 4, seed=n_features) + offset
    params = params_for(covariance_type, X - offset, 4, seed=5)
    params = GMMParams(params.weights, params.means + offset, params.covariances,
                       params.precisions_cholesky, covariance_type)
    X = with_gaps(X, 0.15, seed=n_features + 1)
    w = np.random.default_rng(9).uniform(0.2, 3.0, X.shape[0])
    for weights in (None, w):
        a, b = both(monkeypatch, lambda weights=weights: kernels.chunk_stats(
            X, params, weights, 100, nonfinite=MARGINALIZE))
        assert_stats_close(b, a, rtol=1e-12)
        assert b.n_nonfinite >= 1 and b.first_nonfinite == 107
    rows = X[~np.isnan(X).all(axis=1)]
    for method in (missing.score_samples, missing.predict_proba, missing.weighted_log_prob):
        a, b = both(monkeypatch, lambda method=method: method(rows, params))
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12 * np.abs(a).max())
    a, b = both(monkeypatch, lambda: missing.predict(rows, params))
    assert (a == b).mean() > 0.999  # ties may break either way


def test_missing_value_statistics_match_for_an_ill_conditioned_component(monkeypatch):
    """Condition number 1e8: the two kernels (sweeps against Cholesky) agree to about
    cond * eps, and the pruning bounds keep every pair that counts."""
    X = make_blobs(2000, 16, 3, seed=2)
    params = ill_conditioned(params_for("full", X, 3, seed=4))
    X = with_gaps(X, 0.1, seed=6)
    a, b = both(monkeypatch, lambda: kernels.chunk_stats(X, params, None, 0,
                                                          nonfinite=MARGINALIZE))
    assert a.loglik == pytest.approx(b.loglik, rel=1e-10)
    np.testing.assert_allclose(b.nk, a.nk, rtol=1e-6, atol=1e-12 * a.n)
    np.testing.assert_allclose(b.s2, a.s2, rtol=1e-6, atol=1e-10 * np.abs(a.s2).max())


def test_float32_data_with_gaps_match(monkeypatch):
    X = make_blobs(1200, 8, 3, seed=21)
    params = params_for("full", X, 3, seed=22)
    X32 = with_gaps(X, 0.2, seed=23).astype(np.float32)
    a, b = both(monkeypatch, lambda: kernels.chunk_stats(X32, params, None, 0,
                                                          nonfinite=MARGINALIZE))
    assert_stats_close(b, a, rtol=1e-5)


def test_rows_are_grouped_by_their_missing_pattern():
    gaps = compiled.load("gaps_compiled")
    mask = np.zeros((9, 5), dtype=bool)
    mask[[0, 4, 8], 1] = True
    mask[[2, 6], 3:] = True
    order, row_start, cols, col_start = gaps._pattern_groups(mask)
    groups = [sorted(order[row_start[p]:row_start[p + 1]].tolist())
              for p in range(row_start.size - 1)]
    patterns = [cols[col_start[p]:col_start[p + 1]].tolist() for p in range(len(groups))]
    assert sorted(zip(patterns, groups, strict=True)) == [([], [1, 3, 5, 7]), ([1], [0, 4, 8]),
                                            ([3, 4], [2, 6])]


def test_switching_off_runs_the_numpy_kernels(monkeypatch):
    X = with_gaps(make_blobs(300, 4, 2, seed=31), 0.2, seed=32)
    params = params_for("tied", np.nan_to_num(X), 2, seed=33)
    monkeypatch.setenv(compiled.SWITCH, "0")
    assert type(missing._model(params.gaussian_terms(), X)) is missing.DenseGaps
    monkeypatch.delenv(compiled.SWITCH)
    assert type(missing._model(params.gaussian_terms(), X)).__name__ == "CompiledDenseGaps"


def test_a_read_only_install_caches_under_the_temporary_directory(tmp_path):
    """Neither the package's __pycache__ nor the user's cache writable: numba gets a
    directory under TMPDIR, and a second process loads from it instead of compiling."""
    code = ("import os, numba\n"
            "from dgmm.core.kernels import compiled\n"
            "compiled._writable = lambda directory: False\n"
            "compiled.load('gaps_compiled')\n"
            "print(numba.config.CACHE_DIR)\n")
    env = dict(os.environ, TMPDIR=str(tmp_path))
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip().startswith(str(tmp_path))
