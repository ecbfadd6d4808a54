"""Shared fixtures: a real distributed LocalCluster, reference data sets, a project dir."""
from __future__ import annotations

import pytest
from helpers import S3Server, make_blobs


@pytest.fixture(scope="session")
def cluster_client():
    """A real LocalCluster: 2 worker processes x 1 thread, shared by the session."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
        memory_limit="2GiB",
    )
    client = Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def blobs():
    return make_blobs()


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project directory (workflows/, configs/) that is also the current directory."""
    (tmp_path / "workflows").mkdir()
    (tmp_path / "configs").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3-API server on 127.0.0.1 at a free port, stopped by its PID at the end."""
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()
