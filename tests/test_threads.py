"""BLAS threads: one inside the kernels and a fit's driver loop, the caller's elsewhere."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from helpers import COVARIANCE_TYPES, make_blobs
from threadpoolctl import OpenBLASController, get_cached_controller, threadpool_info

from dgmm import GaussianMixture
from dgmm.core import kernels
from dgmm.core.params import GMMParams
from dgmm.core.threads import active_calls, caller_blas_threads, single_blas_thread


def blas_threads() -> list[int]:
    """Threads of every BLAS pool loaded in this process (NumPy's and SciPy's)."""
    counts = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert counts, "no BLAS library found in the process"
    return counts


@pytest.fixture
def two_blas_threads():
    """Every BLAS pool at 2 threads for the test: the caller's setting to restore. Set
    without holding threadpoolctl's claim on OpenBLAS (a ``threadpool_limits`` block
    keeps it, and then the caller's setting stands over dgmm's, by design)."""
    limiter = get_cached_controller().limit(limits=2, user_api="blas")
    OpenBLASController.clear_controlling_thread()
    assert set(blas_threads()) == {2}
    yield
    assert active_calls() == 0
    limiter.restore_original_limits()
    OpenBLASController.clear_controlling_thread()


def test_region_limits_to_one_thread_and_restores(two_blas_threads):
    with single_blas_thread():
        assert set(blas_threads()) == {1}
        with single_blas_thread():  # nested
            assert set(blas_threads()) == {1}
        assert set(blas_threads()) == {1}
    assert set(blas_threads()) == {2}


def test_exception_inside_a_region_still_restores(two_blas_threads):
    with pytest.raises(RuntimeError), single_blas_thread():
        raise RuntimeError("boom")
    assert set(blas_threads()) == {2}


def test_overlapping_regions_in_threads_restore_only_when_the_last_closes(two_blas_threads):
    entered, release_first, first_done = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with single_blas_thread():
            entered.set()
            release_first.wait(10)
        first_done.set()

    worker = threading.Thread(target=first)
    worker.start()
    assert entered.wait(10)
    with single_blas_thread():
        release_first.set()
        assert first_done.wait(10)
        # the other thread's region closed first: this one must still run on one thread
        seen["after_first_closed"] = blas_threads()
    worker.join(10)
    assert set(seen["after_first_closed"]) == {1}
    assert set(blas_threads()) == {2}


def test_caller_threads_inside_a_region(two_blas_threads):
    with single_blas_thread():
        with caller_blas_threads():
            assert set(blas_threads()) == {2}
        assert set(blas_threads()) == {1}
    assert set(blas_threads()) == {2}


class ThreadRecorder:
    """An array-like that records the BLAS threads at the moment a kernel converts it."""

    def __init__(self, X):
        self.X = X
        self.seen = None

    def __array__(self, dtype=None, copy=None):
        self.seen = blas_threads()
        return self.X if dtype is None else self.X.astype(dtype)

    @property
    def shape(self):
        return self.X.shape


def _params(covariance_type, X, k=3):
    model = GaussianMixture(k, covariance_type=covariance_type, max_iter=2, random_state=0)
    model.fit(X)
    return model.params_


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("kernel", ["chunk_stats", "estimate_weighted_log_prob", "log_prob_resp",
                                    "score_samples", "predict_proba", "predict"])
def test_kernels_run_on_one_blas_thread(two_blas_threads, covariance_type, kernel):
    X = make_blobs(n_samples=300)
    params: GMMParams = _params(covariance_type, X)
    recorder = ThreadRecorder(X)
    getattr(kernels, kernel)(recorder, params)
    assert recorder.seen is not None and set(recorder.seen) == {1}
    assert set(blas_threads()) == {2}


@pytest.mark.parametrize("kernel", ["chunk_stats_from_labels", "chunk_stats_from_resp"])
def test_statistics_from_given_assignments_run_on_one_blas_thread(two_blas_threads, kernel):
    X = make_blobs(n_samples=300)
    labels = np.arange(X.shape[0]) % 3
    given = labels if kernel.endswith("labels") else np.eye(3)[labels]
    recorder = ThreadRecorder(X)
    getattr(kernels, kernel)(recorder, given, np.zeros((3, X.shape[1])), "full")
    assert set(recorder.seen) == {1}
    assert set(blas_threads()) == {2}


def test_fit_callback_sees_the_callers_threads_and_fit_restores_them(two_blas_threads):
    X = make_blobs(n_samples=400)
    seen, searched = [], []
    model = GaussianMixture(3, max_iter=3, random_state=0).fit(
        X, callback=lambda info: seen.append(blas_threads()),
        search_callback=lambda event: searched.append(blas_threads()))
    assert len(seen) == 1 + model.n_iter_  # init + each iteration (one restart)
    assert len(searched) == 2  # the sample pass, then the search
    assert all(set(counts) == {2} for counts in seen + searched)
    assert set(blas_threads()) == {2}


def test_a_callers_own_limit_block_stands(two_blas_threads):
    """A ``threadpool_limits`` block of the caller keeps its setting through dgmm's work
    in other threads (threadpoolctl gives the pool to the thread that claimed it)."""
    from threadpoolctl import threadpool_limits

    X = make_blobs(n_samples=300)
    params = _params("full", X)
    with threadpool_limits(2, user_api="blas"):
        seen = []
        worker = threading.Thread(target=lambda: seen.append(kernels.predict(X, params)))
        worker.start()
        worker.join(30)
        assert len(seen) == 1 and seen[0].shape == (X.shape[0],)
        assert set(blas_threads()) == {2}
    assert set(blas_threads()) == {2}


def test_a_fit_holds_the_limit_between_its_kernels(two_blas_threads):
    """Work of the fit outside the kernels (here: the task that produces the chunk, on
    Dask's threaded scheduler) runs on one BLAS thread too: the fit's driver loop holds
    the region from start to end."""
    import dask.array as da

    X = make_blobs(n_samples=400)
    seen = []

    def record(block):
        seen.append((active_calls(), blas_threads()))
        return block

    lazy = da.from_array(X, chunks=(400, X.shape[1])).map_blocks(
        record, dtype=X.dtype, meta=np.empty((0, X.shape[1])))
    GaussianMixture(3, max_iter=2, random_state=0).fit(lazy)
    assert seen and all(calls >= 1 and set(counts) == {1} for calls, counts in seen)
    assert set(blas_threads()) == {2}


def test_kernels_on_pool_threads_are_limited_while_another_thread_lives(two_blas_threads,
                                                                       monkeypatch):
    """threadpoolctl gives an OpenBLAS pool to the thread that last set it, while that
    thread lives: a kernel run in another (still living) thread must not keep the pools
    from the kernels that run later on Dask's threaded scheduler."""
    from dgmm.engine import passes as engine

    X = make_blobs(n_samples=2000)
    params = _params("full", X)
    ran, finish = threading.Event(), threading.Event()

    def other_thread():
        kernels.predict(X[:100], params)
        ran.set()
        finish.wait(30)

    other = threading.Thread(target=other_thread)
    other.start()
    try:
        assert ran.wait(30)
        seen = []

        @single_blas_thread()
        def row_fn(block, p):  # a region opened on a pool thread, as a kernel opens it
            seen.append(tuple(blas_threads()))
            return kernels.predict(block, p)

        monkeypatch.setattr(engine, "LOCAL_TASK_ROWS", 100)
        engine.map_rows_local(X, row_fn, params, n_columns=None, dtype=np.int64)
        assert len(seen) >= 2 and set(seen) == {(1, 1)}
    finally:
        finish.set()
        other.join(30)
    assert set(blas_threads()) == {2}


class RecordingArray(np.ndarray):
    """An ndarray that records the BLAS threads when its mean is taken."""

    seen: list = []

    def mean(self, *args, **kwargs):
        RecordingArray.seen.append(blas_threads())
        return np.asarray(self).mean(*args, **kwargs)


def test_kmeans_distances_and_the_m_step_are_limited(two_blas_threads, monkeypatch):
    from dgmm.core import mstep
    from dgmm.core.families import FULL
    from dgmm.engine import init

    X = make_blobs(n_samples=200)
    RecordingArray.seen = []
    init._sq_distances(X.view(RecordingArray), X[:3])
    assert RecordingArray.seen and set(RecordingArray.seen[0]) == {1}
    # the M-step's covariance estimate runs inside the one-thread region
    seen = []
    estimate = FULL.estimate_covariances

    def recording(*args):
        seen.append(tuple(blas_threads()))
        return estimate(*args)

    monkeypatch.setattr(FULL, "estimate_covariances", recording)
    params = _params("full", X)
    mstep.m_step(kernels.chunk_stats(X, params), 1e-6)
    assert seen and set(seen) == {(1, 1)}
    assert set(blas_threads()) == {2}


def test_caller_threads_outside_any_region_do_nothing(two_blas_threads):
    with caller_blas_threads():
        assert active_calls() == 0
        with single_blas_thread():
            assert set(blas_threads()) == {1}
    assert active_calls() == 0 and set(blas_threads()) == {2}


def test_another_threads_limit_block_is_not_overwritten(two_blas_threads):
    """A threadpool_limits block open in another thread when a region opens, and closed
    during it: its restored setting stands when the region closes."""
    from threadpoolctl import threadpool_limits

    inside, leave = threading.Event(), threading.Event()

    def other():
        with threadpool_limits(limits=1, user_api="blas"):
            inside.set()
            leave.wait(30)

    worker = threading.Thread(target=other)
    worker.start()
    assert inside.wait(30)
    with single_blas_thread():
        leave.set()
        worker.join(30)
    assert set(blas_threads()) == {2}


def test_an_interrupted_change_keeps_the_count_paired(two_blas_threads, monkeypatch):
    """An interrupt while the limit is set again after a callback must not leave the
    count off by one (which would stop all later limiting)."""
    from dgmm.core import threads

    real = threads.get_cached_controller
    calls = {"n": 0}

    def interrupted_on_third_call():
        calls["n"] += 1
        if calls["n"] == 3:  # 1: open, 2: the callback's close, 3: opening again
            raise KeyboardInterrupt
        return real()

    monkeypatch.setattr(threads, "get_cached_controller", interrupted_on_third_call)
    with pytest.raises(KeyboardInterrupt), single_blas_thread(), caller_blas_threads():
        pass
    monkeypatch.setattr(threads, "get_cached_controller", real)
    assert active_calls() == 0
    with single_blas_thread():
        assert set(blas_threads()) == {1}
    assert set(blas_threads()) == {2}
