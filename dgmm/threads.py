"""BLAS threads inside the chunk kernels: one per kernel call, whatever the process uses.

dgmm's parallelism is one chunk per core (Dask worker threads and processes); a kernel's
BLAS calls are small (blocks of a few thousand rows) and gain nothing from threads of their
own. Worse, NumPy and SciPy each ship their own OpenBLAS, each with a pool of spinning
threads: a kernel that alternates between the two (``np.matmul`` for the E-step,
``scipy.linalg.blas`` for the scatter) makes the pools fight for the cores. Measured on 2
cores, chunk statistics ran 3x (d=64, K=16, full) to 17x (d=16, K=8, diag) slower per row
with both pools at 2 threads than at 1; ``GaussianMixture().fit`` on a NumPy array with no
cluster was 10x slower on the diag case. Dask's worker nannies already start workers with
one BLAS thread; the driver process, Dask's threaded scheduler and direct NumPy calls
(``predict`` on a NumPy array) do not.

``single_blas_thread`` limits every BLAS pool of the process to one thread while at least
one region (a decorated kernel, a fit's driver loop) is open, and restores the caller's
settings when the last one closes. The count is shared by all threads of the process (the
pools' sizes are process-wide), so concurrent kernels on a threaded scheduler never restore
the limits under each other. A fit holds the limit from start to end (its initialisation
and M-steps on the driver included), so the pools change size twice per fit rather than
around every chunk, and no driver-side BLAS call wakes a pool of spinning threads between
two passes; the fit's callbacks run with the caller's threads (``caller_blas_threads``).
"""
from __future__ import annotations

import contextlib
import threading

from threadpoolctl import OpenBLASController, get_cached_controller

_lock = threading.Lock()
_active_calls = 0
_limiter = None


def _release_control() -> None:
    """Let any thread set OpenBLAS's (process-wide) pool size next.

    threadpoolctl lets only the thread that last set it change an OpenBLAS pool, until
    that thread clears its claim; the region is opened and closed by whichever threads
    run the first and the last kernel, so every change here gives the claim back at once
    (a user's own ``threadpool_limits`` block in another thread keeps its claim, and
    then its setting stands).
    """
    OpenBLASController.clear_controlling_thread()


def _enter() -> None:
    global _active_calls, _limiter
    with _lock:
        if _active_calls == 0:
            # the process's libraries are inspected once (about 1 ms); a limit then
            # costs about 15 us
            _limiter = get_cached_controller().limit(limits=1, user_api="blas")
            _release_control()
        _active_calls += 1


def _exit() -> None:
    global _active_calls, _limiter
    with _lock:
        _active_calls -= 1
        if _active_calls == 0:
            _limiter.restore_original_limits()
            _release_control()
            _limiter = None


class single_blas_thread(contextlib.ContextDecorator):
    """Context manager and decorator: inside, every BLAS pool of the process runs one
    thread (``with single_blas_thread():`` or ``@single_blas_thread()``)."""

    def __enter__(self):
        _enter()
        return self

    def __exit__(self, *exc):
        _exit()
        return False


class caller_blas_threads(contextlib.ContextDecorator):
    """Inside a ``single_blas_thread`` region, give the caller's BLAS threads back for a
    while (for user code such as a fit's callback): the limit is lifted when no other
    kernel of the process holds it, and set again on the way out."""

    def __enter__(self):
        _exit()
        return self

    def __exit__(self, *exc):
        _enter()
        return False


def active_calls() -> int:
    """How many ``single_blas_thread`` regions are open in the process (0: none)."""
    return _active_calls
