"""Missing entries (NaN) marginalised exactly: E-step, statistics, EM, init, predictions."""
import warnings

import numpy as np
import pytest
from helpers import COVARIANCE_TYPES, assert_stats_close, make_blobs, params_for
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from dgmm.core import kernels, nonfinite
from dgmm.core.kernels import compiled, missing
from dgmm.core.params import GMMParams
from dgmm.data import outputs
from dgmm.engine import em
from dgmm.engine import passes as engine
from dgmm.errors import DataError
from dgmm.estimators import GaussianMixture

MARGINALIZE = "marginalize"


def with_gaps(X, share, seed, empty_rows=()):
    """X with a ``share`` of its entries set to NaN at random, and whole rows emptied."""
    rng = np.random.default_rng(seed)
    X = np.array(X, dtype=np.float64)
    X[rng.random(X.shape) < share] = np.nan
    for row in empty_rows:
        X[row] = np.nan
    return X


# ------------------------------------------------------------ the per-row reference


def gaussian_logpdf(x, mean, cov):
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    delta = x - mean
    return -0.5 * (x.size * np.log(2 * np.pi) + logdet + delta @ np.linalg.solve(cov, delta))


def reference_pass(X, w, params):
    """One EM iteration, row by row: (mean log-likelihood of ``params``, new moments).

    Returns (loglik, n, N (K,), first moments (K, d), second moments (K, d, d)) with the
    missing entries replaced by their conditional means and the conditional covariance
    added, all from the textbook formulas on Sigma (no precision, no shift, no blocks).
    """
    k_all, d = params.means.shape
    cov = params.family.full_covariances(params.covariances, k_all, d)
    w = np.ones(X.shape[0]) if w is None else w
    loglik = n = 0.0
    nk, s1, s2 = np.zeros(k_all), np.zeros((k_all, d)), np.zeros((k_all, d, d))
    for x, wi in zip(X, w, strict=True):
        o = ~np.isnan(x)
        if not o.any():
            continue
        m = ~o
        logp = np.array([np.log(params.weights[k])
                         + gaussian_logpdf(x[o], params.means[k][o], cov[k][np.ix_(o, o)])
                         for k in range(k_all)])
        total = logsumexp(logp)
        resp = np.exp(logp - total)
        loglik += wi * total
        n += wi
        for k in range(k_all):
            x_hat = x.copy()
            extra = np.zeros((d, d))
            if m.any():
                c_oo, c_mo = cov[k][np.ix_(o, o)], cov[k][np.ix_(m, o)]
                x_hat[m] = params.means[k][m] + c_mo @ np.linalg.solve(
                    c_oo, x[o] - params.means[k][o])
                extra[np.ix_(m, m)] = cov[k][np.ix_(m, m)] - c_mo @ np.linalg.solve(c_oo, c_mo.T)
            nk[k] += wi * resp[k]
            s1[k] += wi * resp[k] * x_hat
            s2[k] += wi * resp[k] * (np.outer(x_hat, x_hat) + extra)
    return loglik / n, n, nk, s1, s2


def reference_m_step(params, n, nk, s1, s2, reg_covar):
    k_all, d = params.means.shape
    nk = nk + 10 * np.finfo(np.float64).eps
    means = s1 / nk[:, None]
    full = s2 / nk[:, None, None] - means[:, :, None] * means[:, None, :]
    full += reg_covar * np.eye(d)
    if params.family.name == "tied":
        covariances = (full * nk[:, None, None]).sum(axis=0) / nk.sum()
    else:
        covariances = params.family.from_full(full)
    return GMMParams.from_covariances(nk / nk.sum(), means, covariances,
                                      params.covariance_type)


def reference_em(X, w, params, n_iter, reg_covar=1e-6):
    history = []
    for _ in range(n_iter):
        mean_loglik, *moments = reference_pass(X, w, params)
        history.append(mean_loglik)
        params = reference_m_step(params, *moments, reg_covar)
    return params, history


def fit(X, params, n_iter, w=None, chunk_rows=64, **settings):
    data = engine.prepare(X, w, chunk_rows=chunk_rows)
    settings = em.EMSettings(params.n_components, params.covariance_type, tol=0.0,
                             max_iter=n_iter, nonfinite=settings.pop("nonfinite", MARGINALIZE),
                             **settings)
    return em.fit_em(data, settings, seed=0, fixed_init=lambda data, i: params)


def small_problem(covariance_type, seed=0, offset=0.0, n=240, d=4, k=3, share=0.3):
    X = make_blobs(n, d, k, seed=seed)
    params = params_for(covariance_type, X, k, seed=seed + 1)
    return with_gaps(X, share, seed + 2, empty_rows=(5, 77)) + offset, params


def shifted(params, offset):
    return GMMParams(params.weights, params.means + offset, params.covariances,
                     params.precisions_cholesky, params.covariance_type)


def assert_params_close(a, b, rtol, atol=0.0):
    for name, x in a.to_arrays().items():
        np.testing.assert_allclose(x, b.to_arrays()[name], rtol=rtol, atol=atol, err_msg=name)


# ------------------------------------------------------------------------- E-step


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_marginal_log_density_matches_scipy_on_the_observed_features(covariance_type):
    X, params = small_problem(covariance_type, seed=3, share=0.4)
    X = X[~np.isnan(X).all(axis=1)]
    k, d = params.means.shape
    cov = params.family.full_covariances(params.covariances, k, d)
    expected = np.array([[
        np.log(params.weights[j])
        + multivariate_normal(params.means[j][~np.isnan(x)],
                              cov[j][np.ix_(~np.isnan(x), ~np.isnan(x))]).logpdf(x[~np.isnan(x)])
        for j in range(k)] for x in X])
    np.testing.assert_allclose(missing.weighted_log_prob(X, params), expected, rtol=1e-12)
    log_norm, resp = missing.log_prob_resp(X, params)
    np.testing.assert_allclose(log_norm, logsumexp(expected, axis=1), rtol=1e-12)
    np.testing.assert_allclose(resp, np.exp(expected - logsumexp(expected, axis=1)[:, None]),
                               rtol=1e-10, atol=1e-14)


def test_complete_rows_through_the_missing_path_give_the_kernels_density():
    X = make_blobs(300, 5, 3, seed=8)
    for covariance_type in COVARIANCE_TYPES:
        params = params_for(covariance_type, X, 3, seed=9)
        np.testing.assert_allclose(missing.weighted_log_prob(X, params),
                                   kernels.estimate_weighted_log_prob(X, params), rtol=1e-11)


# ------------------------------------------------------------ EM against the reference


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_em_matches_the_per_row_reference(covariance_type, weighted):
    X, params = small_problem(covariance_type, seed=11)
    w = np.random.default_rng(12).uniform(0.2, 3.0, X.shape[0]) if weighted else None
    n_iter = 6
    expected, history = reference_em(X, w, params, n_iter)
    result = fit(X, params, n_iter, w)
    np.testing.assert_allclose(result.history, history, rtol=1e-8)
    assert_params_close(result.params, expected, rtol=1e-8, atol=1e-10)
    n_empty = int(np.isnan(X).all(axis=1).sum())  # rows 5, 77 and any emptied at random
    assert n_empty >= 2 and result.n_nonfinite == n_empty
    assert result.n_rows == X.shape[0] - n_empty


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_observed_data_log_likelihood_never_decreases(covariance_type):
    X = with_gaps(make_blobs(1500, 6, 4, seed=21, spread=2.0), 0.25, 22)
    params = params_for(covariance_type, np.nan_to_num(X, nan=0.0), 4, seed=23)
    history = fit(X, params, 40, chunk_rows=300).history
    assert np.all(np.diff(history) >= -1e-12 * np.abs(history[1:]))
    assert history[-1] > history[0]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_data_without_gaps_give_exactly_todays_results(covariance_type):
    X = make_blobs(700, 4, 3, seed=31)
    params = params_for(covariance_type, X, 3, seed=32)
    w = np.random.default_rng(33).uniform(0.5, 2.0, X.shape[0])
    today = fit(X, params, 5, w, chunk_rows=128, nonfinite="raise")
    marginal = fit(X, params, 5, w, chunk_rows=128)
    assert marginal.history == today.history
    for a, b in zip(marginal.params.to_arrays().values(), today.params.to_arrays().values(),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    for rows in (X, X.astype(np.float32)):
        a = kernels.chunk_stats(rows, params, w, 0, nonfinite=nonfinite.MARGINALIZE)
        b = kernels.chunk_stats(rows, params, w, 0)
        assert a.loglik == b.loglik and a.n == b.n
        for name in ("nk", "s1", "s2"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_statistics_and_fits_do_not_depend_on_the_chunking(covariance_type):
    X, params = small_problem(covariance_type, seed=41, n=600)
    w = np.random.default_rng(42).uniform(0.5, 2.0, X.shape[0])
    whole = kernels.chunk_stats(X, params, w, 0, nonfinite=nonfinite.MARGINALIZE)
    for size in (1, 7, 64, 250):
        parts = [kernels.chunk_stats(X[i:i + size], params, w[i:i + size], i,
                                     nonfinite=nonfinite.MARGINALIZE)
                 for i in range(0, X.shape[0], size)]
        merged = parts[0]
        for part in parts[1:]:
            merged = merged.merge(part)
        assert_stats_close(merged, whole, rtol=1e-10)
        assert merged.n_nonfinite == whole.n_nonfinite >= 2 and merged.first_nonfinite == 5
    a, b = fit(X, params, 5, w, chunk_rows=600), fit(X, params, 5, w, chunk_rows=37)
    np.testing.assert_allclose(a.history, b.history, rtol=1e-10)
    assert_params_close(a.params, b.params, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_data_far_from_the_origin_stay_exact(covariance_type):
    X, params = small_problem(covariance_type, seed=51)
    offset = 1e6
    near = fit(X, params, 5)
    far = fit(X + offset, shifted(params, offset), 5)
    # the data themselves are only stored to 1e6 * 1.1e-16 = 1.1e-10 absolute
    np.testing.assert_allclose(far.history, near.history, rtol=1e-9)
    np.testing.assert_allclose(far.params.means - offset, near.params.means, atol=1e-8)
    np.testing.assert_allclose(far.params.covariances, near.params.covariances,
                               rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(far.params.weights, near.params.weights, rtol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_weights_act_as_repeated_rows(covariance_type):
    X, params = small_problem(covariance_type, seed=61, n=150)
    counts = np.random.default_rng(62).integers(1, 4, X.shape[0])
    weighted = fit(X, params, 4, counts.astype(float))
    repeated = fit(np.repeat(X, counts, axis=0), params, 4)
    np.testing.assert_allclose(weighted.history, repeated.history, rtol=1e-10)
    assert_params_close(weighted.params, repeated.params, rtol=1e-9, atol=1e-12)


def test_rows_with_every_entry_missing_are_skipped_and_counted():
    X, params = small_problem("full", seed=71)
    empty = np.isnan(X).all(axis=1)
    with_empty = fit(X, params, 4, chunk_rows=1000)
    without = fit(X[~empty], params, 4, chunk_rows=1000)
    assert with_empty.n_nonfinite == empty.sum() >= 2 and without.n_nonfinite == 0
    assert with_empty.n_rows == without.n_rows == X.shape[0] - empty.sum()
    np.testing.assert_allclose(with_empty.history, without.history, rtol=1e-12)
    assert_params_close(with_empty.params, without.params, rtol=1e-12, atol=1e-14)
    stats = kernels.chunk_stats(X[70:80], params, None, 70, nonfinite=nonfinite.MARGINALIZE)
    assert (stats.n_nonfinite, stats.first_nonfinite) == (1, 77)


def test_infinite_entries_are_bad_data_named_by_row():
    X, params = small_problem("diag", seed=81)
    X[133, 2] = -np.inf
    with pytest.raises(DataError, match="Row 133 .*infinite"):
        fit(X, params, 2)
    with pytest.raises(DataError, match="Row 133 .*infinite"):
        GaussianMixture(3, nonfinite=MARGINALIZE, random_state=0).fit(X)
    w = np.ones(X.shape[0])
    w[40] = np.nan
    with pytest.raises(DataError, match="row 40"):
        kernels.chunk_stats(X[:100], params, w[:100], 0, nonfinite=nonfinite.MARGINALIZE)
    model = GaussianMixture(3, nonfinite=MARGINALIZE, random_state=0).fit(X[:130])
    with pytest.raises(DataError, match="first at row 133"):
        model.predict(X)


# --------------------------------------------------------------------- init, estimator


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_init_works_with_gaps(init_params):
    X = with_gaps(make_blobs(900, 4, 3, seed=91, spread=6.0), 0.3, 92, empty_rows=(3,))
    model = GaussianMixture(3, init_params=init_params, nonfinite=MARGINALIZE, random_state=1,
                            max_iter=200, tol=1e-6).fit(X)
    assert model.converged_ and model.n_nonfinite_ == np.isnan(X).all(axis=1).sum() >= 1
    for value in model.params_.to_arrays().values():
        assert np.isfinite(value).all()
    assert np.all(np.diff(model.lower_bounds_) >= -1e-12 * np.abs(model.lower_bounds_[1:]))


def test_init_imputes_column_means_for_itself_only():
    from dgmm.engine import init
    from dgmm.engine.models import FetchRows, Pass, run_alone

    X = np.array([[1.0, np.nan], [3.0, 4.0], [np.nan, np.nan], [5.0, 8.0]])
    data = engine.prepare(X, chunk_rows=2)
    expected = np.array([[1.0, 6.0], [3.0, 4.0], [np.nan, np.nan], [5.0, 8.0]])

    def seen_blocks():  # an "initialisation" that returns what its passes and reads see
        blocks = yield Pass(_concatenated_rows, ())
        rows = yield FetchRows((0, 2))
        return blocks, rows

    blocks, rows = run_alone(data, init._imputed_steps(seen_blocks()))
    np.testing.assert_array_equal(blocks.rows, expected)
    np.testing.assert_array_equal(rows, expected[[0, 2]])
    assert np.isnan(data.array.compute()[0, 1])  # the data themselves are untouched


class _Rows:
    def __init__(self, rows):
        self.rows = rows

    def merge(self, other):
        return _Rows(np.vstack([self.rows, other.rows]))


def _concatenated_rows(block, weights, row_offset):
    return _Rows(np.asarray(block))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_predictions_on_rows_with_gaps_use_the_marginal_density(covariance_type, tmp_path):
    X = make_blobs(400, 4, 3, seed=101)
    model = GaussianMixture(3, covariance_type=covariance_type, nonfinite=MARGINALIZE,
                            random_state=0).fit(X)
    Xg = with_gaps(X[:60], 0.4, 102, empty_rows=(9,))
    Xg[17, 1] = np.inf
    usable = ~np.isnan(Xg).all(axis=1) & ~np.isinf(Xg).any(axis=1)
    log_norm, resp = missing.log_prob_resp(Xg[usable], model.params_)
    # the reference: each usable row's density over its observed features
    k, d = model.params_.means.shape
    cov = model.params_.family.full_covariances(model.params_.covariances, k, d)
    ref = np.array([logsumexp([
        np.log(model.weights_[j]) + multivariate_normal(
            model.means_[j][~np.isnan(x)], cov[j][np.ix_(~np.isnan(x), ~np.isnan(x))]
        ).logpdf(x[~np.isnan(x)]) for j in range(k)]) for x in Xg[usable]])
    np.testing.assert_allclose(log_norm, ref, rtol=1e-11)

    lazy = engine.as_row_chunked(Xg, 16)
    for got in (model.score_samples(np.where(np.isinf(Xg), np.nan, Xg)),
                model.score_samples(lazy).compute()):
        np.testing.assert_allclose(got[usable], log_norm, rtol=1e-12)
        assert np.isnan(got[~usable]).all()
    np.testing.assert_allclose(model.predict_proba(lazy).compute()[usable], resp, rtol=1e-12)
    labels = model.predict(lazy).compute()
    np.testing.assert_array_equal(labels[usable], resp.argmax(axis=1))
    assert (labels[~usable] == -1).all()

    path = outputs.write_predictions(lazy, model.params_, tmp_path / "p.zarr",
                                     marginalize=True)
    import zarr

    group = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(group["labels"][:][usable], resp.argmax(axis=1))
    np.testing.assert_allclose(group["log_likelihood"][:][usable], log_norm, rtol=1e-12)
    np.testing.assert_allclose(group["probabilities"][:][usable], resp, rtol=1e-12)
    assert (group["labels"][:][~usable] == -1).all()
    # without marginalize the written rows with gaps stay -1, as before
    plain = outputs.predict_block(Xg, model.params_)
    assert (plain[~np.isfinite(Xg).all(axis=1), 0] == -1).all()


def test_estimator_accepts_marginalize_and_scores_rows_with_gaps():
    X = with_gaps(make_blobs(600, 3, 2, seed=111), 0.2, 112, empty_rows=(0,))
    model = GaussianMixture(2, nonfinite=MARGINALIZE, random_state=0).fit(X)
    empty = np.isnan(X).all(axis=1)
    assert model.n_nonfinite_ == empty.sum() >= 1
    scores = model.score_samples(X)
    assert np.isnan(scores[empty]).all() and np.isfinite(scores[~empty]).all()
    mean, count = model.score_and_count(X)
    assert count == (~empty).sum() and mean == pytest.approx(scores[~empty].mean(), rel=1e-12)
    assert model.score(X) == pytest.approx(model.lower_bound_, abs=5e-3)
    with pytest.raises(ValueError, match=r"'nonfinite' parameter .*'marginalize'.*'impute'"):
        GaussianMixture(2, nonfinite="impute").fit(X)


# ------------------------------------------------------------------------- recovery


def _matched_errors(params, means, covariances):
    """(sum of mean errors, sum of relative covariance errors) after matching components."""
    cost = ((params.means[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    fitted = params.family.full_covariances(params.covariances, *params.means.shape)
    mean_error = sum(np.linalg.norm(params.means[i] - means[j])
                     for i, j in zip(rows, cols, strict=True))
    cov_error = sum(np.linalg.norm(fitted[i] - covariances[j]) / np.linalg.norm(covariances[j])
                    for i, j in zip(rows, cols, strict=True))
    return mean_error, cov_error


def test_recovery_with_30_percent_missing_beats_dropping_and_mean_imputation():
    rng = np.random.default_rng(2024)
    d, k, n = 8, 4, 8000
    means = rng.normal(scale=3.0, size=(k, d))
    covariances = []
    for _ in range(k):
        a = rng.normal(size=(d, d)) * 0.5
        covariances.append(a @ a.T + 0.5 * np.eye(d))
    covariances = np.array(covariances)
    labels = rng.integers(k, size=n)
    X = np.stack([rng.multivariate_normal(means[j], covariances[j]) for j in labels])
    Xg = with_gaps(X, 0.3, 2025)
    complete_rows = ~np.isnan(Xg).any(axis=1)
    imputed = np.where(np.isnan(Xg), np.nanmean(Xg, axis=0), Xg)
    # every fit starts from the true means (rows of its own data would differ per fit)
    start = dict(means_init=means, random_state=0, tol=1e-8, max_iter=500)

    def errors(data, **kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = GaussianMixture(k, **start, **kw).fit(data)
        return _matched_errors(model.params_, means, covariances)

    complete = errors(X)
    marginal = errors(Xg, nonfinite=MARGINALIZE)
    dropped = errors(Xg[complete_rows])
    mean_imputed = errors(imputed)
    assert complete_rows.mean() < 0.1  # dropping leaves few rows
    for which in (0, 1):  # means, then covariances
        assert marginal[which] <= 1.5 * complete[which]
        assert marginal[which] < dropped[which]
        assert marginal[which] < mean_imputed[which]


# -------------------------------------------------------------------------- workflow


def test_workflow_marginalizes_and_writes_real_predictions_for_rows_with_gaps(tmp_path):
    import subprocess
    import sys

    import yaml
    import zarr

    from dgmm.data.model_io import load_params

    X = with_gaps(make_blobs(3000, 3, 3, seed=121, spread=6.0), 0.2, 122)
    store = zarr.open_array(str(tmp_path / "data.zarr"), mode="w", shape=X.shape,
                            chunks=(700, 3), dtype="f8")
    store[:] = X
    workflow = {
        "name": "gaps",
        "data": {"source": "zarr", "path": "data.zarr", "nonfinite": MARGINALIZE},
        "model": {"n_components": 3, "covariance_type": "full", "random_state": 0,
                  "max_iter": 100, "tol": 1e-4},
        "cluster": {"kind": "local", "n_workers": 1, "threads_per_worker": 2,
                    "processes": False, "dashboard_address": None},
        "outputs": {"model": "model", "predictions": "pred.zarr"},
        "steps": ["fit", "predict"],
    }
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(workflow))
    proc = subprocess.run([sys.executable, "-m", "dgmm.cli", "run", "wf.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    params, _ = load_params(tmp_path / "model")
    usable = ~np.isnan(X).all(axis=1)
    gaps = usable & np.isnan(X).any(axis=1)
    assert gaps.sum() > 1000
    log_norm, resp = missing.log_prob_resp(X[usable], params)
    pred = zarr.open_group(str(tmp_path / "pred.zarr"), mode="r")
    np.testing.assert_array_equal(pred["labels"][:][usable], resp.argmax(axis=1))
    np.testing.assert_allclose(pred["log_likelihood"][:][usable], log_norm, rtol=1e-10)
    assert (pred["labels"][:][~usable] == -1).all()


def test_missing_blocks_are_inverted_once_per_pattern_not_per_row(monkeypatch):
    X = make_blobs(3000, 6, 3, seed=131)
    patterns = np.array([[1, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], bool)
    which = np.random.default_rng(132).integers(-1, 3, X.shape[0])  # -1: complete row
    for j, pattern in enumerate(patterns):
        X[np.ix_(which == j, pattern)] = np.nan
    params = params_for("full", np.nan_to_num(X), 3, seed=133)
    monkeypatch.setenv(compiled.SWITCH, "0")  # the NumPy reference (tests/test_compiled.py)
    batches = []
    original = missing._spd_inverse

    def recording(A):
        batches.append(A.shape)
        return original(A)

    monkeypatch.setattr(missing, "_spd_inverse", recording)
    stats = kernels.chunk_stats(X, params, None, 0, nonfinite=nonfinite.MARGINALIZE)
    # one batched call per group of equal missing count, at most one matrix per
    # (component, pattern): never one per row
    assert sorted(shape[1:] for shape in batches) == [(1, 1), (2, 2), (3, 3)]
    assert all(1 <= shape[0] <= 3 for shape in batches)
    monkeypatch.setattr(missing, "_spd_inverse", original)
    expected = reference_pass(X, None, params)[0]  # the mean log-likelihood
    assert stats.loglik / stats.n == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------- with the model grid and mini-batch EM


def test_a_grid_candidate_with_gaps_equals_its_own_fit():
    from dgmm.estimators import GaussianMixtureSelection

    X = with_gaps(make_blobs(600, 3, 3, seed=131), 0.2, 132, empty_rows=(5,))
    grid = GaussianMixtureSelection(n_components=[2, 3], covariance_type=["full", "diag"],
                                    nonfinite=MARGINALIZE, n_init=2, random_state=4,
                                    max_iter=30).fit(X)
    for k, c in [(2, "diag"), (3, "full")]:
        alone = GaussianMixture(k, covariance_type=c, nonfinite=MARGINALIZE, n_init=2,
                                random_state=4, max_iter=30).fit(X)
        rows = grid.results_[(grid.results_.n_components == k)
                             & (grid.results_.covariance_type == c)]
        assert max(rows.lower_bound) == alone.lower_bound_
    best = grid.best_estimator_
    assert np.isfinite(best.score_samples(X)[~np.isnan(X).all(axis=1)]).all()


def test_minibatch_with_gaps_marginalises_and_without_gaps_equals_drop():
    from dgmm import MiniBatchGaussianMixture

    X = make_blobs(2000, 3, 3, seed=141)
    kwargs = dict(batch_size=200, max_iter=2, random_state=0, init_params="random_from_data")
    drop = MiniBatchGaussianMixture(3, nonfinite="drop", **kwargs).fit(X)
    marg = MiniBatchGaussianMixture(3, nonfinite=MARGINALIZE, **kwargs).fit(X)
    np.testing.assert_array_equal(drop.means_, marg.means_)  # no gaps: the same steps
    Xg = with_gaps(X, 0.15, 142, empty_rows=(7,))
    gaps = MiniBatchGaussianMixture(3, nonfinite=MARGINALIZE, batch_size=200, max_iter=8,
                                    random_state=0).fit(Xg)
    assert gaps.n_nonfinite_ == np.isnan(Xg).all(axis=1).sum() >= 1  # every entry missing
    full = GaussianMixture(3, nonfinite=MARGINALIZE, random_state=0, tol=1e-8).fit(Xg)
    # the stepwise fit reaches batch EM's optimum of the observed-data likelihood
    assert gaps.score(Xg) == pytest.approx(full.score(Xg), abs=0.02)
    with pytest.raises(DataError, match="infinite"):
        bad = Xg.copy()
        bad[3, 1] = np.inf
        MiniBatchGaussianMixture(3, nonfinite=MARGINALIZE, **kwargs).fit(bad)
