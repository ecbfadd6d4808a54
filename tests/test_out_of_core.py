"""A fit on a Zarr array 4x larger than the cluster's memory, on a real LocalCluster.

2 worker processes x 256 MiB (512 MiB in all) against 2.03 GiB of generated data: the
generator writes it chunk by chunk on the workers, EM streams it from the store at every
iteration. The test checks that no worker was paused, restarted or replaced for memory and
that the fitted parameters equal the generating ones within their sampling error.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from dgmm import GaussianMixture
from dgmm.data import readers as io
from dgmm.data import synthetic as datasets
from dgmm.engine.persist import decide_persist

MEMORY_LIMIT = 256 * 2**20
N_WORKERS = 2
N_SAMPLES = 34_000_000  # x 8 features x 8 bytes = 2.03 GiB
N_FEATURES = 8
N_COMPONENTS = 3
MEMORY_WORDS = ("pausing", "paused", "restarting", "exceeded", "unmanaged memory",
                "memory budget", "spill")


#: a worker's resident memory; a lambda, so that cloudpickle sends it by value and the
#: workers never import this module (which imports the estimator, and with it sklearn)
_rss = lambda: __import__("psutil").Process().memory_info().rss  # noqa: E731


def _pids(client) -> dict:
    return client.run(os.getpid)


class _PeakMemory(threading.Thread):
    """Samples every worker's RSS while it runs (the largest value seen per worker)."""

    def __init__(self, client, interval=0.25):
        super().__init__(daemon=True)
        self.client, self.interval = client, interval
        self.peak: dict[str, int] = {}
        self.failed_samples = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            try:
                for address, rss in self.client.run(_rss).items():
                    self.peak[address] = max(rss, self.peak.get(address, 0))
            except (OSError, TimeoutError):  # a lost worker shows up in the pid check
                self.failed_samples += 1
            self.halt.wait(self.interval)


def _memory_incidents(client) -> list[str]:
    incidents = []
    for topic, events in client.get_events().items():
        for _, event in events:
            if not isinstance(event, dict):
                continue
            if topic == "worker-restart-memory" or event.get("action") == "worker-restart-memory":
                incidents.append(f"{topic}: {event}")
            if event.get("action") == "worker-status-change" and event.get("status") != "running":
                incidents.append(f"{topic}: {event}")
    for nanny in (False, True):
        for address, logs in client.get_worker_logs(nanny=nanny).items():
            for level, message in logs:
                if level in ("WARNING", "ERROR", "CRITICAL") and any(
                    word in message.lower() for word in MEMORY_WORDS
                ):
                    incidents.append(f"{'nanny' if nanny else 'worker'} {address}: {message}")
    return incidents


@pytest.fixture(scope="module")
def small_cluster():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=N_WORKERS, threads_per_worker=1, processes=True,
        memory_limit=MEMORY_LIMIT, dashboard_address=":0",
    )
    client = Client(cluster, set_as_default=False)
    yield cluster, client
    client.close()
    cluster.close()


def _standard_errors(params, n_samples):
    """Sampling standard errors of weights (K,), means (K, d), variances (K, d) (diag)."""
    w, var = params.weights, params.covariances
    n_k = (n_samples * w)[:, None]
    return (np.sqrt(w * (1 - w) / n_samples), np.sqrt(var / n_k),
            var * np.sqrt(2.0 / n_k))


def test_fit_on_zarr_four_times_larger_than_cluster_memory(tmp_path, small_cluster):
    _cluster, client = small_cluster
    workers = client.scheduler_info(n_workers=-1)["workers"]
    total_limit = sum(w["memory_limit"] for w in workers.values())
    assert total_limit == N_WORKERS * MEMORY_LIMIT
    pids_before = _pids(client)

    started = time.perf_counter()
    info, truth = datasets.make_gmm_data(
        tmp_path / "big.zarr", N_SAMPLES, N_FEATURES, N_COMPONENTS, covariance_type="diag",
        chunk_rows=2**16, seed=2024, separation=4.0, client=client,
    )
    generated = time.perf_counter() - started
    X, info = io.open_zarr(tmp_path / "big.zarr", target_chunk_bytes=8 * 2**20)
    assert info.nbytes >= 4 * total_limit
    assert decide_persist(info.nbytes, "auto", client) is False

    # start away from the truth: means off by 0.3 standard deviations in every
    # direction, equal weights, variances 1.5 times too large
    sd = np.sqrt(truth.covariances)
    model = GaussianMixture(
        N_COMPONENTS, covariance_type="diag", tol=1e-7, max_iter=12,
        weights_init=np.full(N_COMPONENTS, 1 / N_COMPONENTS), means_init=truth.means + 0.3 * sd,
        precisions_init=1.0 / (1.5 * truth.covariances), client=client,
    )
    monitor = _PeakMemory(client)
    monitor.start()
    started = time.perf_counter()
    try:
        model.fit(X)
    finally:
        monitor.halt.set()
        monitor.join()
    fitted = time.perf_counter() - started

    # no worker paused, restarted or replaced for memory
    assert _pids(client) == pids_before
    assert set(client.scheduler_info(n_workers=-1)["workers"]) == set(workers)
    assert _memory_incidents(client) == []
    assert monitor.peak and max(monitor.peak.values()) < 0.8 * MEMORY_LIMIT, monitor.peak

    # the fit recovers the generating mixture within its sampling error
    assert model.converged_, (model.n_iter_, model.lower_bounds_)
    order = [int(np.argmin(np.linalg.norm(model.means_ - m, axis=1))) for m in truth.means]
    assert sorted(order) == list(range(N_COMPONENTS))
    se_w, se_mu, se_var = _standard_errors(truth, N_SAMPLES)
    z_w = (model.weights_[order] - truth.weights) / se_w
    z_mu = (model.means_[order] - truth.means) / se_mu
    z_var = (model.covariances_[order] - truth.covariances) / se_var
    worst = max(np.abs(z).max() for z in (z_w, z_mu, z_var))
    assert worst < 6.0, (z_w, z_mu, z_var)
    print(
        f"\n{info.nbytes / 2**30:.2f} GiB vs {total_limit / 2**20:.0f} MiB of worker memory: "
        f"generated in {generated:.1f} s, fitted in {fitted:.1f} s ({model.n_iter_} "
        f"iterations); peak worker RSS {max(monitor.peak.values()) / 2**20:.0f} MiB; "
        f"largest |error| / standard error {worst:.2f}"
    )
