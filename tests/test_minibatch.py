"""Stepwise (mini-batch) EM: the core step, the engine's chunk loop, the estimator."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import dask.array as da
import numpy as np
import pytest
from helpers import COVARIANCE_TYPES, make_blobs, params_for
from sklearn.utils._param_validation import InvalidParameterError

from dgmm import MiniBatchGaussianMixture
from dgmm.core import kernels
from dgmm.core.mstep import m_step
from dgmm.core.params import GMMParams
from dgmm.core.stepwise import (
    as_average,
    blend,
    moved_to,
    statistics_of,
    step_size,
    stepwise_update,
)
from dgmm.engine import em
from dgmm.engine import minibatch as stepwise
from dgmm.engine import passes as engine
from dgmm.errors import ConfigError, DataError

ARRAYS = ("weights", "means", "covariances", "precisions_cholesky")


def assert_params_equal(a: GMMParams, b: GMMParams):
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def assert_states_equal(a: stepwise.StepwiseState, b: stepwise.StepwiseState):
    assert_params_equal(a.params, b.params)
    for name in ("shift", "nk", "s1", "s2"):
        np.testing.assert_array_equal(getattr(a.running, name), getattr(b.running, name))
    assert (a.n_steps, a.n_passes, a.history) == (b.n_steps, b.n_passes, b.history)


def init_kwargs(params: GMMParams) -> dict:
    return dict(weights_init=params.weights, means_init=params.means,
                precisions_init=params.precisions)


# ------------------------------------------------------------------ core: one step


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_moving_the_shift_equals_statistics_about_the_new_shift(covariance_type):
    X = make_blobs(500, 3, 3, seed=2) + 1e3
    rng = np.random.default_rng(0)
    resp = rng.dirichlet(np.ones(3), size=500)
    w = rng.uniform(0.5, 2.0, size=500)
    old, new = X[:3] + rng.normal(size=(3, 3)), X[3:6] + rng.normal(size=(3, 3))
    about_old = kernels.chunk_stats_from_resp(X, resp, old, covariance_type, w)
    about_new = kernels.chunk_stats_from_resp(X, resp, new, covariance_type, w)
    moved = moved_to(about_old, new)
    np.testing.assert_array_equal(moved.shift, new)
    np.testing.assert_allclose(moved.s1, about_new.s1, rtol=1e-9,
                               atol=1e-9 * abs(about_new.s1).max())
    np.testing.assert_allclose(moved.s2, about_new.s2, rtol=1e-9,
                               atol=1e-9 * abs(about_new.s2).max())


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_the_initial_running_statistics_give_back_their_parameters(covariance_type):
    X = make_blobs(300, 3, 3, seed=3)
    params = params_for(covariance_type, X)
    back = m_step(statistics_of(params, 1e-3), 1e-3).params
    for name in ARRAYS:
        np.testing.assert_allclose(getattr(back, name), getattr(params, name), rtol=1e-12)


def test_step_size_and_blend():
    assert step_size(0, 1.0) == 0.5 and step_size(2, 0.5) == 0.5
    X = make_blobs(200, 2, 2, seed=4)
    p = params_for("diag", X, k=2)
    a = as_average(kernels.chunk_stats(X[:100], p))
    b = as_average(kernels.chunk_stats(X[100:], p))
    mixed = blend(a, b, 0.25)
    np.testing.assert_allclose(mixed.s2, 0.75 * a.s2 + 0.25 * b.s2, rtol=1e-15)
    assert mixed.n == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(ValueError, match="share their shift"):
        blend(a, moved_to(b, b.shift + 1.0), 0.5)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_a_step_with_eta_one_over_all_rows_is_one_batch_em_iteration(covariance_type):
    X = make_blobs(3000, 4, 3, seed=5, offset=50.0)
    w = np.random.default_rng(5).uniform(0.2, 3.0, size=X.shape[0])
    p0 = params_for(covariance_type, X)
    data = engine.prepare(X, w, chunk_rows=700)
    batch = em.fit_em(data, em.EMSettings(3, covariance_type, max_iter=1, tol=0.0),
                      seed=0, fixed_init=lambda d, i: p0)
    # any running statistics: eta = 1 forgets them
    running = statistics_of(params_for(covariance_type, X, seed=9), 1e-6)
    running = moved_to(running, p0.means)
    step = stepwise_update(p0, running, engine.estep_pass(data, p0), 1.0, 1e-6)
    for name in ARRAYS:
        np.testing.assert_allclose(getattr(step.params, name), getattr(batch.params, name),
                                   rtol=1e-10, atol=1e-12, err_msg=name)


# ------------------------------------------------------------------ engine


def test_batches_split_a_chunk_evenly():
    assert [stepwise.batch_count(n, b) for n, b in [(10, 4), (8, 4), (3, 10), (0, 5)]] == [
        3, 2, 1, 1]


@pytest.mark.parametrize("wave_width", [1, 3])
def test_steps_follow_the_documented_schedule(wave_width):
    """A plain reference loop (chunk order, waves of chains from one state, batches dealt
    from the rows and visited in a drawn order, the rows-weighted average of the chains)
    gives the same."""
    X = make_blobs(2000, 3, 3, seed=6)
    p0 = params_for("full", X)
    settings = stepwise.StepwiseSettings(3, "full", batch_size=150, max_iter=2, tol=0.0,
                                         wave_width=wave_width)
    data = engine.prepare(X, chunk_rows=500)
    got = stepwise.fit_stepwise(data, settings, stepwise.StepwiseState.initial(7, p0, 1e-6))

    params, running, t = p0, statistics_of(p0, 1e-6), 0
    for _ in range(2):
        order = stepwise.chunk_order(7, t, 4)
        for first in range(0, 4, wave_width):
            chains = []
            for chain, c in enumerate(order[first:first + wave_width]):
                chunk = X[500 * c: 500 * (c + 1)]
                batches = np.random.default_rng([7, t, 0, chain]).permutation(4)
                p, r, u = params, running, t
                for b in batches:
                    rows = np.arange(b, 500, 4)  # every 4th row from b on
                    step = stepwise_update(p, r, kernels.chunk_stats(chunk[rows], p),
                                           (u + 2.0) ** -0.6, 1e-6)
                    p, r, u = step.params, step.running, u + 1
                chains.append((p, r, u))
            if len(chains) == 1:
                params, running, t = chains[0]
                continue
            # every chunk has 500 rows of weight 1: equal weights
            about = [moved_to(r, params.means) for _, r, _ in chains]
            mean = replace(about[0], **{name: sum(getattr(a, name) for a in about) / len(about)
                                        for name in ("n", "nk", "s1", "s2")})
            params = m_step(mean, 1e-6, previous=params).params
            running, t = moved_to(mean, params.means), max(u for _, _, u in chains)
    assert got.n_steps == t == 2 * (4 // wave_width + (4 % wave_width > 0)) * 4
    assert got.n_passes == 2
    for name in ARRAYS:
        np.testing.assert_allclose(getattr(got.params, name), getattr(params, name),
                                   rtol=1e-12, atol=1e-14, err_msg=name)


def test_a_wave_of_one_step_chains_is_one_step_on_the_union_of_their_chunks():
    """batch_size >= the chunk: each chain is one step with the same eta from the same
    state, and the rows-weighted average of the chains is that step on all their rows."""
    X = make_blobs(3000, 3, 3, seed=8)
    w = np.random.default_rng(8).uniform(0.1, 2.0, size=3000)
    p0 = params_for("tied", X)
    data = engine.prepare(X, w, chunk_rows=1000)
    settings = stepwise.StepwiseSettings(3, "tied", batch_size=1000, wave_width=3)
    state = stepwise.StepwiseState.initial(1, p0, 1e-6)
    got = stepwise.run_pass(data, state, settings)
    expected = stepwise_update(p0, state.running, engine.estep_pass(data, p0),
                               (0 + 2.0) ** -0.6, 1e-6)
    assert got.n_steps == 1 and got.n_rows == 3000
    for name in ARRAYS:
        np.testing.assert_allclose(getattr(got.params, name), getattr(expected.params, name),
                                   rtol=1e-10, err_msg=name)


def _longest_task_chain(delayed) -> int:
    """Tasks on the longest path of dependencies in a Delayed's graph."""
    from dask.core import get_deps

    graph = dict(delayed.__dask_graph__())
    dependencies, _ = get_deps(graph)
    depth: dict = {}

    def visit(key):
        if key not in depth:
            depth[key] = 1 + max((visit(d) for d in dependencies[key]), default=0)
        return depth[key]

    return max(visit(k) for k in graph)


def test_the_longest_task_chain_of_a_pass_grows_with_chunks_over_the_wave_width():
    p0 = params_for("diag", make_blobs(100, 2, 3))
    state = stepwise.StepwiseState.initial(0, p0, 1e-6)

    def longest(n_chunks, wave_width):
        X = da.zeros((n_chunks * 10, 2), chunks=(10, 2))
        settings = stepwise.StepwiseSettings(3, "diag", wave_width=wave_width)
        return _longest_task_chain(stepwise.pass_graph(engine.prepare(X), state, settings))

    # per wave: the chains (one level, side by side) and the task that ends the wave
    base = longest(4, 4) - 2
    assert longest(16, 4) == longest(32, 8) == longest(64, 16) == base + 2 * 4
    assert longest(16, 1) == base + 2 * 16
    assert longest(15, 4) == base + 2 * 4  # a last, shorter wave


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_converges_to_the_batch_em_optimum_on_separated_data(covariance_type):
    X = make_blobs(30000, 3, 3, seed=11, spread=8.0)
    batch = em.fit_em(engine.prepare(X), em.EMSettings(3, covariance_type, tol=1e-10,
                                                       max_iter=500), seed=3)
    p0 = em.fit_em(engine.prepare(X), em.EMSettings(3, covariance_type, max_iter=0),
                   seed=3).params
    model = MiniBatchGaussianMixture(3, covariance_type=covariance_type, batch_size=2000,
                                     max_iter=8, tol=0.0, random_state=0, **init_kwargs(p0))
    with pytest.warns(UserWarning, match="max_iter"):
        model.fit(X)
    assert model.n_passes_ == 8 and model.n_steps_ == 8 * 15
    order = [int(np.argmin(((batch.params.means - m) ** 2).sum(1))) for m in model.means_]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(model.means_, batch.params.means[order], atol=0.02)
    np.testing.assert_allclose(model.weights_, batch.params.weights[order], atol=0.01)
    cov = batch.params.covariances[order] if covariance_type != "tied" else batch.params.covariances
    np.testing.assert_allclose(model.covariances_, cov, rtol=0.05, atol=0.02)
    assert model.score(X) == pytest.approx(batch.lower_bound, abs=2e-3)
    assert model.score(X) <= batch.lower_bound + 1e-6


def test_polish_runs_batch_em_from_the_stepwise_result():
    X = make_blobs(8000, 3, 3, seed=12)
    kwargs = dict(batch_size=500, max_iter=2, random_state=1)
    plain = MiniBatchGaussianMixture(3, tol=0.0, **kwargs)
    with pytest.warns(UserWarning):
        plain.fit(X)
    polished = MiniBatchGaussianMixture(3, tol=1e-4, polish_iter=50, **kwargs).fit(X)
    expected = em.fit_em(engine.prepare(X), em.EMSettings(3, "full", tol=1e-4, max_iter=50),
                         seed=0, warm_start=(plain.params_, -np.inf))
    assert expected.converged and 2 < expected.n_iter < 50
    assert_params_equal(polished.params_, expected.params)
    assert polished.converged_ and polished.n_passes_ == 2
    assert polished.lower_bounds_ == plain.lower_bounds_ + list(expected.history)
    assert polished.lower_bound_ == expected.lower_bound


# ------------------------------------------------------------------ estimator


def test_pieces_through_partial_fit_equal_one_fit_with_the_same_schedule():
    X = make_blobs(6000, 3, 3, seed=13)
    sizes = [2000, 1500, 2500]
    p0 = params_for("full", X)
    kwargs = dict(batch_size=400, random_state=5, wave_width=1, **init_kwargs(p0))
    whole = MiniBatchGaussianMixture(3, max_iter=1, tol=0.0, **kwargs)
    with pytest.warns(UserWarning):
        whole.fit(da.from_array(X, chunks=(tuple(sizes), 3)))
    pieces = np.split(X, np.cumsum(sizes)[:-1])
    online = MiniBatchGaussianMixture(3, **kwargs)
    for c in stepwise.chunk_order(5, 0, 3):
        online.partial_fit(pieces[c])
    assert online.n_steps_ == whole.n_steps_ == 5 + 4 + 7
    assert_params_equal(online.params_, whole.params_)
    for name in ("nk", "s1", "s2"):
        np.testing.assert_array_equal(getattr(online.state_.running, name),
                                      getattr(whole.state_.running, name))


def test_partial_fit_continues_a_fit_and_warm_start_continues_too():
    X = make_blobs(4000, 3, 3, seed=14)
    kwargs = dict(batch_size=500, tol=0.0, random_state=2)
    two = MiniBatchGaussianMixture(3, max_iter=2, **kwargs)
    with pytest.warns(UserWarning):
        two.fit(X)
    one = MiniBatchGaussianMixture(3, max_iter=1, **kwargs)
    with pytest.warns(UserWarning):
        one.fit(X)
    one.partial_fit(X)  # the second pass, from the running statistics and step counter
    assert one.n_steps_ == two.n_steps_ == 16
    assert_params_equal(one.params_, two.params_)
    warm = MiniBatchGaussianMixture(3, max_iter=1, warm_start=True, **kwargs)
    with pytest.warns(UserWarning):
        warm.fit(X)
        warm.fit(X)
    assert_states_equal(warm.state_, two.state_)


def test_tol_stops_on_the_change_of_the_pass_mean_log_likelihood():
    X = make_blobs(4000, 3, 3, seed=22)
    model = MiniBatchGaussianMixture(3, batch_size=200, tol=0.05, max_iter=50,
                                     random_state=0).fit(X)
    changes = np.abs(np.diff(model.lower_bounds_))
    assert model.converged_ and 2 <= model.n_passes_ < 50
    assert changes[-1] < 0.05 and np.all(changes[:-1] >= 0.05)
    assert model.lower_bound_ == model.lower_bounds_[-1]


def test_the_same_seed_gives_the_same_fit_and_another_seed_another_schedule():
    X = make_blobs(3000, 3, 3, seed=15)
    fits = [MiniBatchGaussianMixture(3, batch_size=300, max_iter=2, random_state=s).fit(X)
            for s in (4, 4, 5)]
    assert_states_equal(fits[0].state_, fits[1].state_)
    assert not np.array_equal(fits[0].means_, fits[2].means_)
    labels = MiniBatchGaussianMixture(3, batch_size=300, max_iter=2,
                                      random_state=4).fit_predict(X)
    np.testing.assert_array_equal(labels, fits[0].predict(X))


def test_on_a_cluster_the_waves_of_chunk_tasks_give_the_local_result(cluster_client, tmp_path):
    """A Zarr store read without persisting, weighted rows: the waves of chunk tasks on a
    LocalCluster give exactly the steps run in this process."""
    from dgmm.data import readers, synthetic

    path = str(tmp_path / "x.zarr")
    synthetic.make_gmm_data(path, 6000, 3, 3, chunk_rows=1000, seed=4)
    X, info = readers.open_zarr(path, target_chunk_bytes=1000 * 3 * 8)
    assert info.n_chunks == 6
    w = np.random.default_rng(0).uniform(0.0, 2.0, size=6000)
    kwargs = dict(batch_size=300, max_iter=2, tol=0.0, random_state=3, wave_width=4)
    with pytest.warns(UserWarning):
        local = MiniBatchGaussianMixture(3, **kwargs).fit(X, sample_weight=w)
        remote = MiniBatchGaussianMixture(3, client=cluster_client, **kwargs).fit(
            X, sample_weight=w)
        persisted = MiniBatchGaussianMixture(3, client=cluster_client, **kwargs).fit(
            cluster_client.persist(X), sample_weight=w)
    assert_states_equal(local.state_, remote.state_)
    assert_states_equal(local.state_, persisted.state_)
    assert remote.n_steps_ == 2 * 2 * 4  # two waves (4 and 2 chunks) of 4 steps a pass


def test_a_worker_killed_in_mid_pass_changes_nothing(tmp_path):
    """SIGKILL one of two worker processes while a wave runs: Dask recomputes what was
    lost on the other (the tasks are pure, the state travels as a value) and the fit
    equals the one run in this process, bit for bit."""
    from distributed import Client, LocalCluster

    from dgmm.data import readers, synthetic

    path = str(tmp_path / "x.zarr")
    synthetic.make_gmm_data(path, 8000, 3, 3, chunk_rows=1000, seed=5)
    X, _ = readers.open_zarr(path, target_chunk_bytes=1000 * 3 * 8)
    kwargs = dict(batch_size=100, max_iter=2, tol=0.0, random_state=6, wave_width=2)
    killed = []

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", memory_limit="1GiB") as cluster, \
            Client(cluster, set_as_default=False) as client:
        pids = sorted(client.run(os.getpid).values())

        def kill_one(info):
            if info.phase == "chunk" and info.state.n_passes == 0 and not killed:
                os.kill(pids[0], signal.SIGKILL)  # the next wave is queued and running
                killed.append(info.state.position)

        with pytest.warns(UserWarning):
            remote = MiniBatchGaussianMixture(3, client=client, **kwargs).fit(
                X, callback=kill_one)
        assert killed == [2]
        assert pids[0] not in client.run(os.getpid).values()
    with pytest.warns(UserWarning):
        local = MiniBatchGaussianMixture(3, **kwargs).fit(X)
    assert_states_equal(local.state_, remote.state_)
    assert local.lower_bounds_ == remote.lower_bounds_


def test_sample_weight_equals_repeated_rows_in_the_statistics():
    """Integer weights: each step's statistics equal those of the rows repeated, so one
    chunk in one batch (eta from the same schedule) gives the repeated rows' result."""
    X = make_blobs(600, 3, 3, seed=17)
    counts = np.random.default_rng(1).integers(0, 4, size=600)
    p0 = params_for("diag", X)
    kwargs = dict(batch_size=10**6, max_iter=3, tol=0.0, random_state=0, **init_kwargs(p0))
    kwargs["covariance_type"] = "diag"
    with pytest.warns(UserWarning):
        weighted = MiniBatchGaussianMixture(3, **kwargs).fit(X, sample_weight=counts)
        repeated = MiniBatchGaussianMixture(3, **kwargs).fit(np.repeat(X, counts, axis=0))
    for name in ARRAYS:
        np.testing.assert_allclose(getattr(weighted.params_, name),
                                   getattr(repeated.params_, name), rtol=1e-10)
    assert weighted.lower_bounds_ == pytest.approx(repeated.lower_bounds_, rel=1e-12)


def test_nonfinite_rows_are_dropped_or_named():
    X = make_blobs(2000, 3, 3, seed=18)
    bad = X.copy()
    bad[[5, 700, 1999]] = np.nan
    bad[42, 1] = np.inf
    p0 = params_for("full", X)
    kwargs = dict(batch_size=200, max_iter=1, tol=0.0, random_state=0, **init_kwargs(p0))
    with pytest.raises(DataError, match=r"4 row\(s\) with NaN or inf .*first at row "
                       r"5.*nonfinite='drop'"):
        MiniBatchGaussianMixture(3, **kwargs).fit(bad)
    keep = np.isfinite(bad).all(axis=1)
    with pytest.warns(UserWarning):
        dropped = MiniBatchGaussianMixture(3, nonfinite="drop", **kwargs).fit(bad)
        clean = MiniBatchGaussianMixture(3, **kwargs).fit(X[keep])
    assert_params_equal(dropped.params_, clean.params_)
    assert dropped.n_nonfinite_ == 4 and clean.n_nonfinite_ == 0


def test_an_empty_component_stays_defined(caplog):
    """A component no row reaches keeps its mean and covariance while its weight decays
    with the running statistics (a factor 1 - eta_t per step), until m_step finds it
    empty."""
    X = make_blobs(2000, 2, 2, seed=19)
    p = params_for("full", X, k=3)
    far = np.array(p.means)
    far[2] = [1e3, 1e3]
    kwargs = dict(weights_init=p.weights, means_init=far, precisions_init=p.precisions)
    with pytest.warns(UserWarning), caplog.at_level("WARNING", "dgmm.engine.minibatch"):
        model = MiniBatchGaussianMixture(3, batch_size=20, max_iter=5, tol=0.0, random_state=0,
                                         **kwargs).fit(X)
    assert model.n_steps_ == 500
    # after enough steps its share falls below m_step's empty threshold (1e-12)
    assert "components [2] were empty in steps on rows 0..1999" in caplog.text
    assert all(np.isfinite(a).all() for a in model.params_.to_arrays().values())
    np.testing.assert_array_equal(model.means_[2], far[2])
    # up to the 10 eps that m_step adds to N_k, which counts once N_k is tiny
    np.testing.assert_allclose(model.covariances_[2], p.covariances[2], rtol=1e-2)
    decay = np.prod([1 - (t + 2.0) ** -0.6 for t in range(model.n_steps_)])
    assert model.weights_[2] == pytest.approx(p.weights[2] * decay, rel=1e-6)
    assert model.weights_[2] < 1e-12


def test_parameters_are_checked_with_clear_messages():
    X = make_blobs(100, 2, 2)
    with pytest.raises(InvalidParameterError,
                       match=r"'step_power' parameter .* range \(0.5, 1.0\]"):
        MiniBatchGaussianMixture(2, step_power=0.5).fit(X)
    with pytest.raises(InvalidParameterError, match=r"'batch_size' parameter"):
        MiniBatchGaussianMixture(2, batch_size=0).fit(X)
    model = MiniBatchGaussianMixture(2, max_iter=1).fit(X)
    with pytest.raises(ConfigError, match="X has 3 features, but MiniBatchGaussianMixture is "
                       "expecting 2 features"):
        model.partial_fit(np.ones((10, 3)))


# ------------------------------------------------------------------ SIGKILL and resume

_CHILD = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    sys.path.insert(0, {tests!r})
    from helpers import make_blobs
    from dgmm import MiniBatchGaussianMixture
    ckpt = {ckpt!r}

    def save(info):
        arrays, meta = info.state.to_record()
        np.savez(ckpt + ".tmp.npz", **arrays)
        with open(ckpt + ".tmp.json", "w") as f:
            json.dump(meta, f)
        os.replace(ckpt + ".tmp.npz", ckpt + ".npz")
        os.replace(ckpt + ".tmp.json", ckpt + ".json")
        if info.phase == "chunk" and info.state.n_passes == 1 and info.state.position == 2:
            open(ckpt + ".ready", "w").close()
            time.sleep(600)  # killed here, in the middle of the second pass

    import dask.array as da
    X = da.from_array(make_blobs(4000, 3, 3, seed=20), chunks=(1000, 3))
    MiniBatchGaussianMixture(3, **{kwargs!r}).fit(X, callback=save)
""")


def test_sigkill_in_mid_pass_then_resume_is_bit_identical(tmp_path):
    kwargs = dict(batch_size=250, max_iter=3, tol=0.0, random_state=8, wave_width=2)
    ckpt = str(tmp_path / "state")
    script = _CHILD.format(tests=os.path.dirname(__file__), ckpt=ckpt, kwargs=kwargs)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(ckpt + ".ready"):
            assert child.poll() is None, "the fitting process ended early"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    with np.load(ckpt + ".npz") as f:
        arrays = dict(f)
    with open(ckpt + ".json") as f:
        state = stepwise.StepwiseState.from_record(arrays, json.load(f))
    assert (state.n_passes, state.position) == (1, 2)

    X = da.from_array(make_blobs(4000, 3, 3, seed=20), chunks=(1000, 3))
    with pytest.warns(UserWarning):
        resumed = MiniBatchGaussianMixture(3, **kwargs).fit(X, resume=state)
        straight = MiniBatchGaussianMixture(3, **kwargs).fit(X)
    assert_states_equal(resumed.state_, straight.state_)
    assert resumed.lower_bounds_ == straight.lower_bounds_


def test_state_record_round_trip_with_a_polish_in_progress():
    X = make_blobs(3000, 3, 3, seed=21)
    seen = []
    MiniBatchGaussianMixture(3, batch_size=500, max_iter=1, polish_iter=3, tol=0.0,
                             random_state=0).fit(X, callback=seen.append)
    info = next(i for i in seen if i.phase == "polish" and i.state.polish.iteration == 1)
    arrays, meta = info.state.to_record()
    back = stepwise.StepwiseState.from_record(arrays, json.loads(json.dumps(meta)))
    assert_states_equal(back, info.state)
    assert back.polish.iteration == 1
    assert_params_equal(back.polish.params, info.state.polish.params)
