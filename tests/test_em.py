import math

import numpy as np
import pytest
from dask.callbacks import Callback
from helpers import COVARIANCE_TYPES, ComputeCounter, make_blobs, params_for

from dgmm.core.mstep import m_step
from dgmm.core.params import GMMParams
from dgmm.engine import em
from dgmm.engine import passes as engine
from dgmm.engine.init import initial_params
from dgmm.engine.iteration import fit_one
from dgmm.errors import DataError


def run(data, settings, **kw):
    states = []
    result = em.fit_em(data, settings, seed=5, callback=states.append, **kw)
    return result, states


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_resume_from_any_state_is_bit_identical(covariance_type):
    X = make_blobs(900, 3, 3, seed=40)
    data = engine.prepare(X, chunk_rows=128)
    settings = em.EMSettings(3, covariance_type, tol=1e-8, max_iter=25, n_init=2,
                             init_params="kmeans")
    full, infos = run(data, settings)
    assert [i.phase for i in infos].count("init") == 2
    for cut in (0, 3, len(infos) // 2 + 1, len(infos) - 1):
        arrays, meta = infos[cut].state.to_record()
        # through a copy, as a checkpoint file would give it back
        state = em.EMState.from_record({k: v.copy() for k, v in arrays.items()}, dict(meta))
        resumed, _ = run(data, settings, resume=state)
        for a, b in zip(resumed.params.to_arrays().values(), full.params.to_arrays().values(),
                        strict=True):
            np.testing.assert_array_equal(a, b)
        assert resumed.lower_bound == full.lower_bound
        assert resumed.n_iter == full.n_iter and resumed.history == full.history


def test_callback_reports_progress():
    X = make_blobs(500, 2, 2, seed=41)
    data = engine.prepare(X, chunk_rows=100)
    result, infos = run(data, em.EMSettings(2, "diag", tol=1e-6, max_iter=50))
    assert infos[0].phase == "init" and math.isnan(infos[0].change)
    iters = infos[1:]
    assert [i.state.iteration for i in iters] == list(range(1, result.n_iter + 1))
    for prev, cur in zip(iters, iters[1:], strict=False):
        assert cur.change == pytest.approx(cur.state.lower_bound - prev.state.lower_bound)
    assert all(i.rows_per_second > 0 and i.seconds > 0 for i in iters)
    assert iters[-1].state.converged and result.converged
    assert all(i.state.n_rows == 500 for i in iters)


def test_nonfinite_rows_are_found_by_the_first_pass():
    X = make_blobs(400, 2, 2, seed=42)
    X[123, 0] = np.nan
    data = engine.prepare(X, chunk_rows=50)
    with ComputeCounter() as counter, pytest.raises(DataError, match="first at row 123"):
        em.fit_em(data, em.EMSettings(2), seed=0)
    full_passes = [n for n in counter.sizes if n >= data.n_chunks]
    assert len(full_passes) == 1  # the k-means|| cost pass found it; nothing else ran


def test_max_iter_zero_keeps_the_initial_parameters():
    X = make_blobs(300, 2, 2, seed=43)
    init = params_for("full", X, k=2)
    result = em.fit_em(engine.prepare(X), em.EMSettings(2, max_iter=0), seed=0,
                       fixed_init=lambda data, init_index: init)
    assert result.n_iter == 0 and result.lower_bound == -math.inf
    assert result.params is init


def test_state_record_round_trip():
    X = make_blobs(300, 2, 2, seed=44)
    p = params_for("tied", X, k=2)
    best = em.RunResult(p, -1.5, 7, True, (-3.0, -2.0, -1.5))
    state = em.EMState(9, 1, 4, p, -2.25, (-4.0, -2.25), False, best, 300, 2)
    arrays, meta = state.to_record()
    again = em.EMState.from_record(arrays, meta)
    assert again.best.history == best.history and again.history == state.history
    assert isinstance(again.params, GMMParams)
    np.testing.assert_array_equal(again.best.params.means, p.means)
    assert (again.seed, again.init_index, again.iteration, again.n_nonfinite) == (9, 1, 4, 2)


def test_restart_seeds_come_from_a_seed_sequence():
    assert em.restart_seed(5, 1) != em.restart_seed(5 + 7919, 0)
    seeds = {em.restart_seed(s, i) for s in range(50) for i in range(20)}
    assert len(seeds) == 1000
    low, high = np.random.SeedSequence([123, 4]).generate_state(2, np.uint32)
    assert em.restart_seed(123, 4) == int(low) + (int(high) << 32)


def initial(data, settings, seed, index):
    return initial_params(data, settings.n_components, settings.covariance_type,
                          settings.init_params, settings.reg_covar,
                          em.restart_seed(seed, index)).params


def plain_em(data, settings, params):
    """EM written out: one pass for the statistics, the M-step, the convergence test."""
    lower_bound, history, converged = -math.inf, [], False
    while len(history) < settings.max_iter and not converged:
        step = m_step(engine.estep_pass(data, params), settings.reg_covar, previous=params)
        converged = abs(step.mean_loglik - lower_bound) < settings.tol
        params, lower_bound = step.params, step.mean_loglik
        history.append(lower_bound)
    return params, tuple(history), converged


def sequential_restart(data, settings, seed, index):
    """One restart fitted alone by the engine's one-model loop (``iteration.fit_one``)."""
    state = fit_one(data, settings, initial(data, settings, seed, index))
    return state.params, state.history, state.converged


def assert_same_params(a, b):
    for x, y in zip(a.to_arrays().values(), b.to_arrays().values(), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fit_one_is_em_written_out(covariance_type):
    X = make_blobs(500, 3, 3, seed=46)
    data = engine.prepare(X, chunk_rows=70)
    settings = em.EMSettings(3, covariance_type, tol=1e-6, max_iter=30)
    start = initial(data, settings, 3, 0)
    params, history, converged = plain_em(data, settings, start)
    state = fit_one(data, settings, start)
    assert_same_params(state.params, params)
    assert (state.history, state.converged, state.iteration) == (history, converged,
                                                                 len(history))


class PassCounter(Callback):
    """Counts the passes computed on the local scheduler: the graphs that merge chunk
    values in a reduction tree (row fetches have none)."""

    def __init__(self):
        super().__init__()
        self.passes = 0

    def _start(self, dsk):
        self.passes += any("merge_all" in str(key) for key in dsk)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random"])
def test_restarts_in_lockstep_equal_sequential_restarts(covariance_type, init_params):
    X = make_blobs(700, 3, 4, seed=45)
    data = engine.prepare(X, chunk_rows=60)
    settings = em.EMSettings(4, covariance_type, tol=1e-6, max_iter=40, n_init=3,
                             init_params=init_params)
    with PassCounter() as counter:
        result = em.fit_em(data, settings, seed=17)
    restarts = result.final_state.restarts
    assert [r.index for r in restarts] == [0, 1, 2]
    alone_passes = []
    for restart in restarts:
        with PassCounter() as alone:
            params, history, converged = sequential_restart(data, settings, 17, restart.index)
        alone_passes.append(alone.passes)
        for a, b in zip(restart.params.to_arrays().values(), params.to_arrays().values(),
                        strict=True):
            np.testing.assert_array_equal(a, b)
        assert restart.history == history and restart.converged == converged
    assert len({r.history for r in restarts}) == 3  # the restarts really differ
    # one pass serves every restart: the passes made are the most any restart needs
    assert counter.passes == max(alone_passes) == result.final_state.passes
    best = max(restarts, key=lambda r: r.lower_bound)
    assert result.lower_bound == best.lower_bound and result.params is best.params


def test_a_grid_in_lockstep_equals_each_restart_fitted_alone():
    X = make_blobs(600, 3, 3, seed=47)
    data = engine.prepare(X, chunk_rows=90)
    grid = [em.EMSettings(3, "full", tol=1e-6, max_iter=30, n_init=2),
            em.EMSettings(2, "diag", tol=1e-6, max_iter=30, n_init=2),
            em.EMSettings(4, "spherical", tol=1e-6, max_iter=30, n_init=1,
                          init_params="k-means++")]
    with PassCounter() as counter:
        outcomes, passes = em.fit_models(data, [em.ModelSpec(s, 11) for s in grid])
    assert all(o.refused is None for o in outcomes) and counter.passes == passes
    for settings, outcome in zip(grid, outcomes, strict=True):
        restarts = outcome.fit.final_state.restarts
        assert len(restarts) == settings.n_init
        for restart in restarts:
            params, history, converged = sequential_restart(data, settings, 11, restart.index)
            assert_same_params(restart.params, params)
            assert (restart.history, restart.converged) == (history, converged)


def test_a_model_with_too_few_rows_is_refused_in_a_grid():
    X = make_blobs(40, 2, 2, seed=48)
    X[5:] = np.nan
    data = engine.prepare(X, chunk_rows=10)
    specs = [em.ModelSpec(em.EMSettings(k, "diag", max_iter=5, nonfinite="drop"), 1)
             for k in (2, 8)]
    fitted, refused = em.fit_models(data, specs)[0]
    assert fitted.fit is not None and fitted.refused is None
    assert refused.fit is None and "Only 5 usable row(s) for n_components=8" in refused.refused
