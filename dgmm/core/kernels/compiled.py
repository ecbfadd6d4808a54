"""Whether the compiled (numba) kernels run, and where their machine code is cached.

The NumPy kernels are the reference; a compiled kernel replaces one of them where it pays
and is tested against it. ``DGMM_COMPILED_KERNELS=0`` in the environment (also a worker's)
runs the NumPy kernels only. The compiled modules are imported on first use, so a process
that never needs them never imports numba.

numba keeps the machine code of ``cache=True`` functions on disk: beside the source
(``__pycache__``) when that is writable, else in the user's cache directory. When neither
is writable (dgmm installed read-only, a worker without a home) and ``NUMBA_CACHE_DIR`` is
not set, ``load`` points numba at a directory under the system's temporary directory, so
a process compiles at most once per machine and otherwise loads.
"""
from __future__ import annotations

import functools
import importlib
import os
import pathlib
import tempfile

#: the environment variable that turns the compiled kernels off ("0")
SWITCH = "DGMM_COMPILED_KERNELS"


def enabled() -> bool:
    """True when the compiled kernels are to be used (numba importable, not switched off)."""
    if os.environ.get(SWITCH, "1") == "0":
        return False
    return _numba_available()


@functools.cache
def _numba_available() -> bool:
    return importlib.util.find_spec("numba") is not None


def _writable(directory: pathlib.Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".dgmm-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
        return True
    except OSError:
        return False


def _ensure_cache_dir() -> None:
    """Give numba a writable cache directory when its own choices are not."""
    import numba

    if numba.config.CACHE_DIR:
        return
    if _writable(pathlib.Path(__file__).parent / "__pycache__"):
        return
    from numba.misc.appdirs import AppDirs

    if _writable(pathlib.Path(AppDirs(appname="numba", appauthor=False).user_cache_dir)):
        return
    user = getattr(os, "getuid", lambda: 0)()
    fallback = pathlib.Path(tempfile.gettempdir()) / f"dgmm-numba-cache-{user}"
    fallback.mkdir(mode=0o700, parents=True, exist_ok=True)
    numba.config.CACHE_DIR = str(fallback)


@functools.cache
def load(name: str):
    """The compiled module ``dgmm.core.kernels.<name>``, imported once per process."""
    _ensure_cache_dir()
    return importlib.import_module(f"{__package__}.{name}")
