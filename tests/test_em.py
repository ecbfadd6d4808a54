import math

import numpy as np
import pytest

from dgmm.engine import em

from dgmm.engine import passes as engine
from dgmm.errors import DataError
from dgmm.core.params import GMMParams

from helpers import COVARIANCE_TYPES, ComputeCounter, make_blobs, params_for


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
        for a, b in zip(resumed.params.to_arrays().values(), full.params.to_arrays().values()):
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
    for prev, cur in zip(iters, iters[1:]):
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
