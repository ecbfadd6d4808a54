"""BLAS threads inside the chunk kernels: one per kernel call, whatever the process uses.

dgmm's parallelism is one chunk per core; NumPy and SciPy each ship an OpenBLAS pool, and
a kernel alternating between them makes the pools fight for the cores (docs/design.md).
``single_blas_thread`` limits every BLAS pool of the process to one thread while at least
one region (a decorated kernel, a fit's driver loop) is open, and restores the caller's
settings when the last one closes; the count is process-wide, so concurrent kernels on a
threaded scheduler never restore the limits under each other. ``caller_blas_threads``
gives the caller's threads back inside a region (for user callbacks). A setting that
other code changes with threadpoolctl meanwhile is left as it stands.
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

    threadpoolctl lets only the thread that last set an OpenBLAS pool change it again,
    until that thread clears its claim; a region is opened and closed by whichever threads
    run the first and the last kernel, so every change here gives the claim back at once.
    """
    OpenBLASController.clear_controlling_thread()


def _blas_sizes() -> list[int]:
    """Threads of every BLAS pool of the process now."""
    blas = get_cached_controller().select(user_api="blas")
    return [lib.num_threads for lib in blas.lib_controllers]


def _open() -> None:
    """Count one more region (under ``_lock``); the first one limits the pools. The count
    is raised before anything can fail, so that the caller's ``_close`` stays paired."""
    global _active_calls, _limiter
    _active_calls += 1
    if _active_calls == 1:
        # the process's libraries are inspected once (about 1 ms); a limit then costs
        # about 15 us
        limiter = get_cached_controller().limit(limits=1, user_api="blas")
        _release_control()
        if _limiter is None:  # else an interrupted restore left it: keep the first sizes
            _limiter = limiter


def _close() -> None:
    """Count one region less (under ``_lock``); the last one restores the caller's sizes,
    unless another thread changed them meanwhile (its ``threadpool_limits`` block, say):
    then its setting is left as it stands rather than overwritten by an older one."""
    global _active_calls, _limiter
    _active_calls -= 1
    if _active_calls == 0 and _limiter is not None:
        if all(size == 1 for size in _blas_sizes()):
            _limiter.restore_original_limits()
            _release_control()
        _limiter = None


class single_blas_thread(contextlib.ContextDecorator):
    """Context manager and decorator: inside, every BLAS pool of the process runs one
    thread (``with single_blas_thread():`` or ``@single_blas_thread()``)."""

    def __enter__(self):
        with _lock:
            try:
                _open()
            except BaseException:
                _close()  # __exit__ will not run
                raise
        return self

    def __exit__(self, *exc):
        with _lock:
            _close()
        return False


class caller_blas_threads(contextlib.ContextDecorator):
    """Inside a ``single_blas_thread`` region, give the caller's BLAS threads back for a
    while (for user code such as a fit's callback): the limit is lifted unless another
    region of the process (a kernel in another thread) still holds it, and set again on
    the way out. Outside any region it does nothing."""

    def __enter__(self):
        global _active_calls
        with _lock:
            self._lifted = _active_calls > 0
            if self._lifted:
                try:
                    _close()
                except BaseException:
                    _active_calls += 1  # not lifted: the enclosing region's exit pairs it
                    self._lifted = False
                    raise
        return self

    def __exit__(self, *exc):
        if self._lifted:
            with _lock:
                _open()  # raises only after counting: the enclosing region's exit pairs it
        return False


def active_calls() -> int:
    """How many ``single_blas_thread`` regions are open in the process (0: none)."""
    return _active_calls
