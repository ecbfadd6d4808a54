"""The sample pass, the in-memory search, and fits that read the data a few times."""
import warnings

import dask.array as da
import numpy as np
import pytest
from helpers import COVARIANCE_TYPES, REPO, RowCounter

from dgmm import GaussianMixture, GaussianMixtureSelection
from dgmm.core import search as core_search
from dgmm.data.synthetic import sample_chunk, true_params
from dgmm.engine import passes as engine
from dgmm.engine.sample import chunk_quota, row_uniforms, sample_pass
from dgmm.errors import DataError


def mixture(n, d=4, k=3, seed=0, separation=2.5, covariance_type="full"):
    params = true_params(d, k, covariance_type, seed=seed, separation=separation)
    return sample_chunk(n, 0, seed, params)


def reference_sample(X, size, seed, weights=None):
    """The rows with the smallest keys, computed directly over all rows at once."""
    finite = np.isfinite(X).all(axis=1)
    index = np.flatnonzero(finite).astype(np.uint64)
    u = row_uniforms(seed, index)
    with np.errstate(divide="ignore"):
        keys = u if weights is None else -np.log(u) / weights[finite]
    order = np.argsort(keys, kind="stable")[:size]
    order = order[np.isfinite(keys[order])]
    return X[finite][order]


@pytest.mark.parametrize("chunk_rows", [10_000, 997, 64])
def test_sample_is_the_smallest_keys_whatever_the_chunking(chunk_rows):
    X = mixture(10_000)
    X[[5, 4321]] = np.nan
    data = engine.prepare(X, chunk_rows=chunk_rows)
    sample = sample_pass(data, 500, seed=7)
    np.testing.assert_array_equal(sample.rows, reference_sample(X, 500, 7))
    assert (sample.n_rows, sample.n_nonfinite, sample.first_nonfinite) == (9998, 2, 5)
    assert np.all(np.diff(sample.keys) > 0)


def test_weighted_sample_follows_the_weights():
    rng = np.random.default_rng(0)
    X = np.arange(100_000, dtype=float)[:, None]
    weights = rng.uniform(size=100_000)
    weights[:25_000] = 0.0
    weights[25_000:50_000] *= 10  # 10x the weight of the rows from 50,000 on
    data = engine.prepare(X, weights, chunk_rows=4000)
    sample = sample_pass(data, 1000, seed=3)
    np.testing.assert_array_equal(sample.rows, reference_sample(X, 1000, 3, weights))
    drawn = sample.rows[:, 0]
    assert not (drawn < 25_000).any()
    heavy, light = ((drawn >= 25_000) & (drawn < 50_000)).sum(), (drawn >= 50_000).sum()
    assert 3.8 < heavy / light < 6.5  # 10x weight per row, half as many rows: ~5x


def test_chunk_quota_is_the_share_with_a_wide_margin():
    assert chunk_quota(1000, 100, 10**9) == 33  # share 1e-4 plus 32 rows
    assert chunk_quota(1000, 10**6, 10**7) == 100 + 80 + 32
    assert chunk_quota(1000, 10**6, 10**6) == 1000  # never above the sample's size
    assert chunk_quota(10**6, 10**6, 10**9) == 1000 + 253 + 32


def test_search_finds_the_mixture_on_separated_data():
    X = mixture(20_000, separation=6.0, seed=2)
    truth = true_params(4, 3, "full", seed=2, separation=6.0)
    settings = core_search.SearchSettings(3, "full")
    starts = core_search.search(X, settings, seed=0, n_starts=2)
    assert len(starts) == 2 and starts[0].loglik >= starts[1].loglik
    found = starts[0].params.means
    gaps = np.linalg.norm(found[:, None] - truth.means[None], axis=2).min(axis=0)
    assert gaps.max() < 0.1
    again = core_search.search(X, settings, seed=0, n_starts=2)
    np.testing.assert_array_equal(again[0].params.means, found)


def test_a_collapsed_component_is_reseeded():
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(size=(3000, 2)), rng.normal(size=(3000, 2)) + 8.0])
    settings = core_search.SearchSettings(2, "diag")
    start = core_search.initial_params(X, settings, rng)
    # both components on the first blob: the second blob is what the model explains worst
    sitting = type(start).from_covariances(
        np.array([0.5, 0.5]), np.array([[0.0, 0.0], [0.1, 0.1]]),
        np.ones((2, 2)), "diag")
    moved = core_search.reseed(X, sitting, np.array([1]), settings)
    assert moved.means[1].min() > 4.0
    assert core_search.collapsed(sitting, 1e-6).size == 0
    flat = type(start).from_covariances(np.array([0.5, 0.5]), sitting.means,
                                        np.array([[1.0, 1.0], [1e-6, 1.0]]), "diag")
    np.testing.assert_array_equal(core_search.collapsed(flat, 1e-6), [1])


def test_sample_rows_rule():
    # p / tol rows, at least the restarts' prefix, at most the memory cap
    assert core_search.sample_rows(8, 16, "full", 1e-3) == 1223 * 1000
    assert core_search.sample_rows(1, 2, "spherical", 1e-3) == core_search.SEARCH_ROWS_MIN
    assert core_search.sample_rows(8, 16, "full", 0.0) == core_search.SAMPLE_MEMORY // 128


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_default_fit_reads_three_times_and_matches_the_best_full_data_fit(covariance_type):
    # 60,000 rows, more than the sample: the sample is a real sample
    X = mixture(60_000, d=3, k=3, seed=4, separation=2.0, covariance_type=covariance_type)
    size = core_search.sample_rows(3, 3, covariance_type, 1e-3)
    assert size < 60_000
    counter = RowCounter(X, f"default-{covariance_type}")
    model = GaussianMixture(3, covariance_type=covariance_type, random_state=0)
    model.fit(da.from_array(counter, chunks=(6000, 3)))
    assert counter.reads() <= 3.0
    assert model.converged_ and model.n_sample_rows_ == size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        best = max(GaussianMixture(3, covariance_type=covariance_type, init_params=m,
                                   init_size=0, random_state=0, tol=1e-6).fit(X).score(X)
                   for m in ("kmeans", "k-means++", "random_from_data"))
    assert model.score(X) > best - 0.002


def test_small_data_is_its_own_sample_and_init_size_zero_reads_all_rows():
    X = mixture(3000)
    model = GaussianMixture(3, random_state=0).fit(X)
    assert model.n_sample_rows_ == 3000
    counter = RowCounter(X, "init-size-zero")
    GaussianMixture(3, random_state=0, init_size=0).fit(da.from_array(counter, chunks=500))
    assert counter.reads() > 4  # k-means|| and Lloyd passes over all rows


def test_restarts_start_from_the_best_starts_and_n_init_keeps_the_best():
    X = mixture(5000, k=4, separation=1.5, seed=5)
    a = GaussianMixture(4, n_init=3, random_state=1).fit(X)
    first = [r.history[0] for r in a.fit_state_.restarts]
    assert a.lower_bound_ == max(r.lower_bound for r in a.fit_state_.restarts)
    assert len(first) == 3
    b = GaussianMixture(4, n_init=3, random_state=1).fit(da.from_array(X, chunks=700))
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-9)


def test_nonfinite_rows_raise_in_the_sample_pass():
    X = mixture(2000)
    X[17, 1] = np.inf
    with pytest.raises(DataError, match="row 17"):
        GaussianMixture(2, random_state=0).fit(da.from_array(X, chunks=500))
    model = GaussianMixture(2, random_state=0, nonfinite="drop").fit(X)
    assert model.n_nonfinite_ == 1


def test_search_with_missing_entries():
    X = mixture(4000, seed=6, separation=4.0)
    X[np.random.default_rng(0).uniform(size=X.shape) < 0.1] = np.nan
    model = GaussianMixture(3, random_state=0, nonfinite="marginalize").fit(X)
    reference = GaussianMixture(3, random_state=0, nonfinite="marginalize", init_size=0,
                                n_init=3).fit(X)
    assert model.score(X) > reference.score(X) - 0.002


def test_old_faithful_picks_tied_three_in_two_passes():
    X = np.loadtxt(REPO / "tests/fixtures/mclust/faithful.csv", delimiter=",", skiprows=1)
    counter = RowCounter(X, "faithful")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        selection = GaussianMixtureSelection(
            range(1, 10), covariance_type=["full", "tied", "diag", "spherical"], n_init=2,
            random_state=0).fit(da.from_array(counter, chunks=100))
    assert selection.best_params_ == {"n_components": 3, "covariance_type": "tied"}
    assert counter.reads() <= 5.0
    # mclust's EEE, K=3: BIC 2314.32 in mclust's sign (higher is better)
    assert selection.best_estimator_.bic(X) == pytest.approx(2314.3, abs=0.1)


def test_default_task_size_follows_the_rule_of_docs_scaling():
    from dgmm.engine.tasks import task_bytes

    mib = 2**20
    # 43 (o x r) W with o x r = 256 kB: about 11 MiB per worker, at least 16 MiB
    assert task_bytes(1) == 16 * mib
    assert task_bytes(6) / mib == pytest.approx(62.7, abs=0.1)
    assert task_bytes(100) / mib == pytest.approx(1045, abs=1)
    assert task_bytes(100, persisted=True) / mib == pytest.approx(557, abs=1)
    # balance: two tasks per worker; memory: a tenth of a worker's limit
    assert task_bytes(10, nbytes=100 * mib) == 5 * mib
    assert task_bytes(100, memory_limit=4 * 2**30) == 4 * 2**30 // 10


def test_a_batch_job_profile_plans_its_task_size_for_its_full_size(cluster_client):
    """An adaptive SLURM profile whose jobs have not started: the task size is that of
    its maximum (so a resume sees the same chunking); a LocalCluster's comes from its
    live workers."""
    from dgmm.engine.tasks import cluster_task_bytes, task_bytes
    from dgmm.workflow.cluster_config import LocalClusterConfig, SlurmClusterConfig
    from dgmm.workflow.runner import default_task_bytes

    adaptive = SlurmClusterConfig(cores=8, memory="32GiB", processes=2,
                                  adaptive={"minimum": 0, "maximum": 10})
    assert adaptive.planned_workers() == (80, 16 * 2**30)
    assert default_task_bytes(adaptive, cluster_client) == task_bytes(
        80, memory_limit=16 * 2**30)
    fixed = SlurmClusterConfig(cores=4, memory="8GiB", jobs=3)
    assert default_task_bytes(fixed, None) == task_bytes(12, memory_limit=8 * 2**30)
    assert default_task_bytes(LocalClusterConfig(), cluster_client) == cluster_task_bytes(
        cluster_client) == task_bytes(2, memory_limit=2 * 2**30)


def test_a_fit_with_tol_zero_searches_to_the_default_tolerance():
    """tol=0 with a large max_iter asks the fit on all rows to run every iteration; the
    search still stops: scikit-learn's tol, at most SEARCH_MAX_ITER iterations, and the
    sample that tolerance asks for (not the memory cap)."""
    from dgmm.engine import em
    from dgmm.engine import search as engine_search

    endless = em.EMSettings(n_components=3, tol=0.0, max_iter=10_000)
    usual = em.EMSettings(n_components=3, max_iter=10_000)
    found = engine_search.search_settings(endless)
    assert found.tol == 1e-3 and found.max_iter == engine_search.SEARCH_MAX_ITER
    assert (engine_search.model_sample_rows(endless, 4)
            == engine_search.model_sample_rows(usual, 4) < 2**20)
