"""A fit on a real ``dask scheduler`` / ``dask worker`` deployment survives losing a worker.

The scheduler and two workers run as separate OS processes on 127.0.0.1, started here as
``dask scheduler`` and ``dask worker`` are started by hand or by a batch script. One
worker process is killed with SIGKILL while an EM pass is running on it; Dask recomputes
what was lost, the worker's nanny starts a replacement, and the fit ends with exactly the
parameters (bit for bit: the reduction tree is fixed) of the same fit on a LocalCluster
that lost nothing. The ``address`` cluster profile is tested against the same scheduler.

Every process started here is stopped by its PID in the fixture teardown (SIGTERM, then
SIGKILL after a timeout), together with every process it spawned, and the teardown checks
that none of them is left running.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import dask.array as da
import numpy as np
import psutil
import pytest

import dgmm
from dgmm.errors import ClusterError
from dgmm.workflow.cluster import connect
from dgmm.workflow.cluster_config import AddressClusterConfig

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGKILL"), reason="needs POSIX signals to kill a worker process"
)

HOST = "127.0.0.1"
START_TIMEOUT = 60  # seconds for the scheduler and workers to come up
STOP_TIMEOUT = 10  # seconds between SIGTERM and SIGKILL
ADDRESS_ENV = "DGMM_SCHEDULER_ADDRESS"


# ----------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _dask_cli(subcommand: str) -> list[str]:
    """The ``dask <subcommand>`` command of this environment (the script beside python)."""
    script = os.path.join(os.path.dirname(sys.executable), "dask")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [script, subcommand]
    module = {"scheduler": "distributed.cli.dask_scheduler",
              "worker": "distributed.cli.dask_worker"}[subcommand]
    return [sys.executable, "-m", module]


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists but belongs to someone else
        return True
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class DaskProcesses:
    """A scheduler and workers started as ``dask scheduler`` / ``dask worker`` processes."""

    def __init__(self, log_dir):
        self.log_dir = str(log_dir)
        self.port = _free_port()
        self.address = f"tcp://{HOST}:{self.port}"
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._logs: list = []
        self.seen_pids: set[int] = set()  # every process started, directly or by a nanny

    def _spawn(self, command: list[str], name: str) -> subprocess.Popen:
        log = open(os.path.join(self.log_dir, f"{name}.log"), "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=self.log_dir)
        self.seen_pids.add(proc.pid)
        return proc

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn(
            _dask_cli("scheduler") + ["--host", HOST, "--port", str(self.port),
                                      "--no-dashboard"],
            "scheduler",
        )

    def start_worker(self) -> subprocess.Popen:
        proc = self._spawn(
            _dask_cli("worker") + [self.address, "--nthreads", "1", "--nworkers", "1",
                                   "--memory-limit", "1GiB", "--no-dashboard",
                                   "--local-directory", self.log_dir],
            f"worker-{len(self.workers)}",
        )
        self.workers.append(proc)
        return proc

    def descendants(self) -> list[psutil.Process]:
        """Every live process below the started ones (the nannies' worker processes)."""
        found = []
        for proc in [self.scheduler, *self.workers]:
            if proc is None:
                continue
            with contextlib.suppress(psutil.NoSuchProcess):
                found.extend(psutil.Process(proc.pid).children(recursive=True))
        self.seen_pids.update(p.pid for p in found)
        return found

    def logs(self) -> str:
        text = []
        for name in sorted(os.listdir(self.log_dir)):
            if name.endswith(".log"):
                with open(os.path.join(self.log_dir, name), errors="replace") as fh:
                    text.append(f"--- {name}\n{fh.read()[-3000:]}")
        return "\n".join(text)

    def stop(self) -> list[int]:
        """SIGTERM each started process (workers first), SIGKILL it if it outlives the timeout.

        Returns the PIDs still alive afterwards (empty when all stopped).
        """
        children = self.descendants()
        # one at a time, workers before the scheduler: a scheduler closing while its
        # workers close tells them to close too, and a worker caught between the two
        # requests can hang until its nanny kills it
        for proc in [*self.workers, self.scheduler]:
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        # worker processes of the nannies: their nanny stops them; make sure of it
        _, still = psutil.wait_procs(children, timeout=STOP_TIMEOUT)
        for child in still:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(still, timeout=STOP_TIMEOUT)
        for log in self._logs:
            log.close()
        return sorted(pid for pid in self.seen_pids if _alive(pid))


@pytest.fixture(scope="module")
def dask_processes(tmp_path_factory):
    """A running scheduler with two single-threaded workers, all separate processes."""
    from distributed import Client

    procs = DaskProcesses(tmp_path_factory.mktemp("dask-processes"))
    try:
        procs.start_scheduler()
        procs.start_worker()
        procs.start_worker()
        with Client(procs.address, timeout=START_TIMEOUT, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT)
            procs.descendants()  # record the nannies' worker processes
        yield procs
    except Exception:
        print(procs.logs(), file=sys.stderr)
        raise
    finally:
        left = procs.stop()
        assert not left, f"processes left running after teardown: {left}"


# ----------------------------------------------------------------------- data and fits

N_ROWS, N_FEATURES, N_CHUNKS, K = 240_000, 8, 40, 4


def _big_data() -> da.Array:
    """240k x 8 rows in 40 chunks, generated on the workers (the same bits everywhere)."""
    rows = N_ROWS // N_CHUNKS
    z = da.random.default_rng(20260).standard_normal((N_ROWS, N_FEATURES),
                                                     chunks=(rows, N_FEATURES))
    group = (da.arange(N_ROWS, chunks=rows) % K).astype(np.float64)
    return z + 3.0 * group[:, None]  # K overlapping groups along the diagonal


def _fixed_init(covariance_type: str, n_features: int, n_components: int, seed: int = 5):
    rng = np.random.default_rng(seed)
    precisions = {
        "diag": np.full((n_components, n_features), 0.5),
        "full": np.stack([np.eye(n_features) * 0.5] * n_components),
    }[covariance_type]
    return {
        "weights_init": np.full(n_components, 1.0 / n_components),
        "means_init": rng.normal(scale=3.0, size=(n_components, n_features)),
        "precisions_init": precisions,
    }


def _fit(X, client, *, covariance_type="diag", n_components=K, max_iter=8, callback=None):
    model = dgmm.GaussianMixture(
        n_components, covariance_type=covariance_type, tol=0.0, max_iter=max_iter,
        client=client, **_fixed_init(covariance_type, X.shape[1], n_components),
    )
    with warnings.catch_warnings():
        warnings.simplefilter(  # tol=0
            "ignore", dgmm.estimators.gaussian_mixture.ConvergenceWarning)
        model.fit(X, callback=callback)
    return model


def _assert_same_fit(got, expected):
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        a, b = getattr(got, name), getattr(expected, name)
        assert np.array_equal(a, b), (
            f"{name} differs from the reference fit (max abs diff "
            f"{np.max(np.abs(a - b)):.3g})"
        )
    assert got.n_iter_ == expected.n_iter_
    assert got.lower_bounds_ == expected.lower_bounds_
    assert got.lower_bound_ == expected.lower_bound_


# ----------------------------------------------------------------------------- tests


def test_address_profile_reaches_running_scheduler_and_leaves_it_running(
    dask_processes, cluster_client, monkeypatch
):
    from distributed import Client

    monkeypatch.setenv(ADDRESS_ENV, dask_processes.address)
    profile = AddressClusterConfig(address_env=ADDRESS_ENV, timeout=20)
    X = da.random.default_rng(3).standard_normal((20_000, 2), chunks=(5_000, 2))
    X = X + (da.arange(20_000, chunks=5_000) % 2 * 4.0)[:, None]
    with connect(profile) as client:
        assert client.scheduler.address == dask_processes.address
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2
        model = _fit(X, client, covariance_type="full", n_components=2, max_iter=4)
    reference = _fit(X, cluster_client, covariance_type="full", n_components=2, max_iter=4)
    _assert_same_fit(model, reference)
    assert model.n_iter_ == 4

    # an existing scheduler is only disconnected from, never shut down
    assert dask_processes.scheduler.poll() is None
    assert all(w.poll() is None for w in dask_processes.workers)
    with Client(dask_processes.address, timeout=20, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=20)


def test_address_profile_without_scheduler_is_a_cluster_error(monkeypatch):
    port = _free_port()  # nothing listens there
    monkeypatch.setenv(ADDRESS_ENV, f"tcp://{HOST}:{port}")
    with (pytest.raises(ClusterError) as info,
          connect(AddressClusterConfig(address_env=ADDRESS_ENV, timeout=1))):
        pass  # pragma: no cover
    message = str(info.value)
    assert f"tcp://{HOST}:{port}" in message and f"${ADDRESS_ENV}" in message

    monkeypatch.delenv(ADDRESS_ENV)
    with (pytest.raises(ClusterError, match=ADDRESS_ENV),
          connect(AddressClusterConfig(address_env=ADDRESS_ENV, timeout=1))):
        pass  # pragma: no cover


class _KillDuringNextPass:
    """EM callback: after ``at_iteration``, SIGKILL a worker process once the next pass
    has tasks running on it (so tasks in flight and results held there are lost)."""

    def __init__(self, client, victim_address: str, victim_pid: int, at_iteration: int):
        self.client = client
        self.victim_address = victim_address
        self.victim_pid = victim_pid
        self.at_iteration = at_iteration
        self.callback_times: dict[int, float] = {}
        self.kill_time: float | None = None
        self.tasks_on_victim: int = 0
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def __call__(self, info):
        if info.phase != "iteration":
            return
        self.callback_times[info.state.iteration] = time.monotonic()
        if info.state.iteration == self.at_iteration:
            self.thread = threading.Thread(target=self._kill_when_busy, daemon=True)
            self.thread.start()

    def _kill_when_busy(self):
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                processing = self.client.processing(workers=[self.victim_address])
                running = processing.get(self.victim_address) or ()
                if running:
                    self.tasks_on_victim = len(running)
                    break
                time.sleep(0.005)
            os.kill(self.victim_pid, signal.SIGKILL)
            self.kill_time = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_worker_killed_mid_iteration_fit_completes_bit_identical(dask_processes, cluster_client):
    from distributed import Client

    X = _big_data()
    with Client(dask_processes.address, timeout=20, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=START_TIMEOUT)
        worker_pids = client.run(os.getpid)  # {worker address: worker process id}
        assert len(worker_pids) == 2
        victim_address = min(worker_pids)
        victim_pid = worker_pids[victim_address]
        # the worker process is a child of one of the `dask worker` processes started here
        nanny_pid = psutil.Process(victim_pid).ppid()
        assert nanny_pid in {w.pid for w in dask_processes.workers}
        dask_processes.seen_pids.update(worker_pids.values())

        killer = _KillDuringNextPass(client, victim_address, victim_pid, at_iteration=2)
        model = _fit(X, client, covariance_type="diag", max_iter=6, callback=killer)

        killer.thread.join(timeout=30)
        assert killer.error is None, f"killing the worker failed: {killer.error!r}"
        assert killer.kill_time is not None, "the worker was never killed"
        # the kill landed during the fit, after iteration 2, while the worker was running
        # tasks of a pass (so they and the results it held were lost)
        assert killer.callback_times[2] < killer.kill_time < killer.callback_times[6], (
            "the worker was not killed during the fit"
        )
        assert killer.tasks_on_victim > 0
        assert not _alive(victim_pid)
        assert model.n_iter_ == 6
        assert np.isfinite(model.lower_bounds_).all()

        # same fit on a LocalCluster that lost nothing (meanwhile the nanny restarts a worker)
        reference = _fit(X, cluster_client, covariance_type="diag", max_iter=6)
        _assert_same_fit(model, reference)

        # the scheduler dropped the dead worker; its nanny started a replacement
        client.wait_for_workers(2, timeout=START_TIMEOUT)
        workers_now = client.run(os.getpid)
        dask_processes.seen_pids.update(workers_now.values())
        assert victim_address not in workers_now
        assert victim_pid not in workers_now.values()
