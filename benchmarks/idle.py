"""Waiting for a quiet machine before timing, and the load average printed with figures."""
from __future__ import annotations

import os
import time

#: the 1-minute load average under which the machine counts as idle
IDLE_LOAD = 1.5


def load_average() -> str:
    """'load average 1.23 0.98 0.75' (1, 5, 15 minutes)."""
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def wait_for_idle(max_seconds: float, threshold: float = IDLE_LOAD) -> bool:
    """Wait up to ``max_seconds`` for the 1-minute load average to fall under
    ``threshold``; True when it did. Prints what it waited for and the load at the end."""
    if max_seconds <= 0:
        return os.getloadavg()[0] < threshold
    deadline = time.monotonic() + max_seconds
    start = time.monotonic()
    while os.getloadavg()[0] >= threshold:
        if time.monotonic() >= deadline:
            print(f"note: the 1-minute load average stayed >= {threshold} for "
                  f"{max_seconds:.0f} s; timing anyway under {load_average()}", flush=True)
            return False
        time.sleep(5.0)
    if time.monotonic() - start > 1:
        print(f"waited {time.monotonic() - start:.0f} s for {load_average()}", flush=True)
    return True


def add_wait_idle_option(parser, default: float = 600.0) -> None:
    parser.add_argument("--wait-idle", type=float, default=default, metavar="SECONDS",
                        help=f"before each timed part, wait up to this long for the 1-minute "
                        f"load average to fall under {IDLE_LOAD} (0: do not wait); the load "
                        "is printed with every figure either way")
