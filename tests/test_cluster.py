"""Cluster profiles to clients: real LocalClusters and schedulers, rendered job scripts."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from dgmm.errors import ClusterError
from dgmm.workflow.cluster import (
    SCHEDULER_PLACEHOLDER,
    connect,
    describe,
    jobqueue_kwargs,
    local_cluster_kwargs,
    render_job_script,
)
from dgmm.workflow.cluster_config import (
    AddressClusterConfig,
    LocalClusterConfig,
    PBSClusterConfig,
    SlurmClusterConfig,
    cluster_config_from_mapping,
)
from dgmm.workflow.loading import load_cluster_profile

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"


@pytest.fixture(scope="module")
def scheduler_address():
    """A real scheduler on tcp://127.0.0.1 with one in-process worker."""
    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
        host="127.0.0.1", dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"},
    )  # fmt: skip
    yield cluster.scheduler_address
    cluster.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------ local


def test_local_defaults_come_from_the_machine():
    from dask.system import CPU_COUNT
    from distributed.system import MEMORY_LIMIT

    kwargs = local_cluster_kwargs(LocalClusterConfig())
    assert kwargs["processes"] is True
    assert kwargs["n_workers"] == CPU_COUNT and kwargs["threads_per_worker"] == 1
    assert kwargs["memory_limit"] == MEMORY_LIMIT // CPU_COUNT
    threads = local_cluster_kwargs(LocalClusterConfig(processes=False))
    assert (threads["n_workers"], threads["threads_per_worker"]) == (1, CPU_COUNT)
    assert threads["memory_limit"] == MEMORY_LIMIT


def test_local_explicit_values_are_honoured():
    config = LocalClusterConfig(n_workers=3, threads_per_worker=2, memory_limit="1GiB",
                                processes=False, dashboard_address=None)  # fmt: skip
    kwargs = local_cluster_kwargs(config)
    assert (kwargs["n_workers"], kwargs["threads_per_worker"]) == (3, 2)
    assert kwargs["memory_limit"] == "1GiB" and kwargs["processes"] is False
    assert kwargs["scheduler_kwargs"] == {"dashboard_address": ":0"}  # no busy-port warning
    assert describe(config) == (
        "local cluster: 3 in-process workers x 2 thread(s), memory limit 1GiB each"
    )


def test_connect_local_in_process_computes_and_shuts_down():
    config = LocalClusterConfig(processes=False, n_workers=1, threads_per_worker=2,
                                memory_limit="1GiB", dashboard_address=None)  # fmt: skip
    with connect(config) as client:
        assert client.submit(sum, [1, 2, 3]).result() == 6
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 1
        (worker,) = workers.values()
        assert worker["nthreads"] == 2 and worker["memory_limit"] == 2**30
        assert client.dashboard_link.startswith("http")
        cluster = client.cluster
    assert client.status == "closed"
    assert cluster.status.name == "closed"


def test_connect_local_profile_with_worker_processes(tmp_path):
    profile = load_cluster_profile("local", workflow_dir=WORKFLOWS).model_copy(
        update={"n_workers": 1, "memory_limit": "512MiB", "dashboard_address": ":0"}
    )
    with connect(profile) as client:
        assert client.submit(os.getpid).result() != os.getpid()  # a real worker process
        (worker,) = client.scheduler_info()["workers"].values()
        assert worker["memory_limit"] == 512 * 2**20
        scheduler = client.scheduler.address
    with pytest.raises(OSError):
        Client(scheduler, timeout=1)  # the scheduler it started is gone


def test_a_busy_dashboard_port_is_logged_not_warned(caplog):
    import warnings

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = LocalClusterConfig(processes=False, dashboard_address=f"127.0.0.1:{port}")
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # a warning would fail the test
            with caplog.at_level("INFO", logger="dgmm.workflow.cluster"), connect(config) as client:
                assert f":{port}/" not in client.dashboard_link
    assert f"Port {port} is already in use" in caplog.text


def test_connect_takes_only_a_validated_profile():
    profile = cluster_config_from_mapping(
        {"kind": "local", "processes": False, "dashboard_address": None})
    with connect(profile) as client:
        assert client.submit(len, "abc").result() == 3
    for unvalidated in ("local", {"kind": "local"}):
        with (
            pytest.raises(TypeError, match=r"cluster_config must be a validated cluster "
                          r"profile, not (str|dict): look a name up with .*load_cluster_profile"),
            connect(unvalidated),
        ):
            pass
    with (
        pytest.raises(ClusterError, match=r"Could not start a local Dask cluster \(.*\): .*"
                      r"Check the local profile"),
        connect(LocalClusterConfig(processes=False, dashboard_address="nonsense:xyz")),
    ):
        pass


def test_the_body_error_still_shuts_the_cluster_down():
    with (
        pytest.raises(RuntimeError, match="boom"),
        connect(LocalClusterConfig(processes=False, dashboard_address=None)) as client,
    ):
        raise RuntimeError("boom")
    assert client.status == "closed"


# ---------------------------------------------------------------------------- address


def test_connect_to_an_existing_scheduler_closes_only_the_client(scheduler_address):
    with connect(AddressClusterConfig(address=scheduler_address, timeout=10)) as client:
        assert client.submit(pow, 2, 10).result() == 1024
    assert client.status == "closed"
    with Client(scheduler_address, timeout=10) as other:  # the scheduler still runs
        assert other.submit(pow, 3, 2).result() == 9


def test_connect_with_the_address_from_an_environment_variable(scheduler_address, monkeypatch):
    monkeypatch.setenv("DGMM_SCHEDULER_ADDRESS", scheduler_address)
    profile = load_cluster_profile("address", workflow_dir=WORKFLOWS)
    with connect(profile) as client:
        assert client.scheduler.address == scheduler_address
    assert describe(profile) == "existing scheduler at $DGMM_SCHEDULER_ADDRESS"


def test_unset_address_variable(monkeypatch):
    monkeypatch.delenv("DGMM_TEST_NO_SUCH_VAR", raising=False)
    with (
        pytest.raises(ClusterError, match=r"reads the scheduler address from the environment "
                      r"variable DGMM_TEST_NO_SUCH_VAR, which is not set\. Export it"),
        connect(AddressClusterConfig(address_env="DGMM_TEST_NO_SUCH_VAR")),
    ):
        pass


def test_a_closed_port_fails_quickly_with_what_to_check():
    address = f"tcp://127.0.0.1:{_free_port()}"
    start = time.perf_counter()
    with (
        pytest.raises(ClusterError, match=rf"Could not connect to the Dask scheduler at "
                      rf"{address} within 1 s: .*Is the scheduler running"),
        connect(AddressClusterConfig(address=address, timeout=1)),
    ):
        pass
    assert time.perf_counter() - start < 10


def test_a_scheduler_without_dgmm_is_refused(tmp_path):
    """A real `dask scheduler` process in which dgmm cannot be imported."""
    scheduler_file = tmp_path / "scheduler.json"
    code = textwrap.dedent(f"""
        import sys
        sys.modules["dgmm"] = None  # importing dgmm fails in this process
        from distributed.cli.dask_scheduler import main
        sys.argv = ["dask-scheduler", "--host", "127.0.0.1", "--port", "0",
                    "--dashboard-address", ":0", "--scheduler-file", {str(scheduler_file)!r}]
        main()
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 30
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        with (
            pytest.raises(ClusterError, match=rf"dgmm cannot be imported on the scheduler .* at "
                          rf"{address}\. .*install dgmm .* that runs `dask scheduler`"),
            connect(AddressClusterConfig(address=address, timeout=10)),
        ):
            pass
    finally:
        process.terminate()
        process.wait(timeout=30)


# --------------------------------------------------------------------------- jobqueue


def test_slurm_job_script_from_the_shipped_profile():
    profile = load_cluster_profile("slurm", workflow_dir=WORKFLOWS)
    script = render_job_script(profile)
    lines = script.splitlines()
    assert f"#SBATCH --cpus-per-task={profile.cores}" in lines
    from dask.utils import parse_bytes
    from dask_jobqueue.slurm import slurm_format_bytes_ceil

    assert f"#SBATCH --mem={slurm_format_bytes_ceil(parse_bytes(profile.memory))}" in lines
    assert f"#SBATCH -t {profile.walltime}" in lines
    assert f"#SBATCH -p {profile.queue}" in lines
    assert f"#SBATCH -A {profile.account}" in lines
    assert f"#SBATCH -J {profile.job_name}" in lines
    for directive in profile.job_extra_directives:
        assert f"#SBATCH {directive}" in lines
    for line in profile.job_script_prologue:
        assert line in lines
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert SCHEDULER_PLACEHOLDER in worker
    assert f"--nworkers {profile.processes}" in worker
    assert f"--nthreads {profile.cores // profile.processes}" in worker


def test_pbs_job_script_from_the_shipped_profile():
    profile = load_cluster_profile("pbs", workflow_dir=WORKFLOWS)
    script = render_job_script(profile)
    lines = script.splitlines()
    assert f"#PBS -q {profile.queue}" in lines
    assert f"#PBS -A {profile.account}" in lines
    assert f"#PBS -l walltime={profile.walltime}" in lines
    assert f"#PBS -N {profile.job_name}" in lines
    from dask.utils import parse_bytes
    from dask_jobqueue.pbs import pbs_format_bytes_ceil

    memory = pbs_format_bytes_ceil(parse_bytes(profile.memory))
    assert f"#PBS -l select=1:ncpus={profile.cores}:mem={memory}" in lines
    assert "--memory-limit" in script


def test_job_script_options_reach_the_script(tmp_path):
    logs = tmp_path / "logs" / "pbs"  # dask-jobqueue creates it: keep it out of the cwd
    config = PBSClusterConfig(
        cores=8, memory="16GB", walltime="00:30:00", queue="debug", account="abc123",
        resource_spec="select=1:ncpus=8:mem=16GB:ngpus=1", job_extra_directives=["-V"],
        interface="lo", python="/opt/env/bin/python", log_directory=str(logs),
    )  # fmt: skip
    script = render_job_script(config)
    assert "#PBS -l select=1:ncpus=8:mem=16GB:ngpus=1" in script
    assert "#PBS -V" in script and f"#PBS -e {logs}/" in script
    assert "/opt/env/bin/python -m distributed.cli.dask_worker" in script
    assert "--interface lo" in script
    assert "resource_spec" in jobqueue_kwargs(config)
    assert "resource_spec" not in jobqueue_kwargs(
        SlurmClusterConfig(cores=1, memory="1GB")
    )


def test_rendered_script_matches_the_clusters_own(monkeypatch):
    """connect() builds a real SLURMCluster (no jobs submitted) with the same job script."""
    config = SlurmClusterConfig(cores=2, memory="2GiB", queue="q", account="a", jobs=0,
                                dashboard_address=None)  # fmt: skip
    with connect(config) as client:
        cluster = client.cluster
        assert type(cluster).__name__ == "SLURMCluster"
        own = cluster.job_script().replace(cluster.scheduler_address, SCHEDULER_PLACEHOLDER)
        assert client.submit  # connected (no workers yet)
    assert own == render_job_script(config)
    assert client.status == "closed"


def test_a_batch_profile_without_its_submit_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no sbatch, no qsub
    with (
        pytest.raises(ClusterError, match=r"The 'slurm' profile submits worker jobs with "
                      r"`sbatch`, which is not on PATH here\. Run dgmm on a login node"),
        connect(SlurmClusterConfig(cores=1, memory="1GB", jobs=2)),
    ):
        pass
    pbs = PBSClusterConfig(cores=1, memory="1GB", adaptive={"minimum": 0, "maximum": 2})
    with (
        pytest.raises(ClusterError, match=r"The 'pbs' profile submits worker jobs with `qsub`"),
        connect(pbs),
    ):
        pass
    assert describe(pbs) == "pbs cluster: adaptive 0-2 jobs of 1 cores, 1GB, walltime 01:00:00"


def test_job_script_of_a_local_profile_is_an_error():
    with pytest.raises(ClusterError, match=r"Only the slurm and pbs profiles have job scripts; "
                       r"this profile is 'local'"):
        render_job_script(LocalClusterConfig())


def test_without_dask_jobqueue_the_error_says_what_to_install():
    code = textwrap.dedent("""
        import sys
        sys.modules["dask_jobqueue"] = None  # as if it were not installed
        import pytest
        from dgmm.workflow.cluster import connect, render_job_script
        from dgmm.workflow.cluster_config import SlurmClusterConfig
        from dgmm.errors import ClusterError
        config = SlurmClusterConfig(cores=1, memory="1GB")
        with pytest.raises(ClusterError, match=r"The 'slurm' cluster profile needs the optional "
                           r"package dask-jobqueue, which is not installed\\. Install it with "
                           r"`pip install dgmm\\[jobqueue\\]`"):
            render_job_script(config)
        with pytest.raises(ClusterError, match=r"pip install dgmm\\[jobqueue\\]"):
            with connect(config):
                pass
        print("checked")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "checked"
