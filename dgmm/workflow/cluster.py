"""Cluster profiles to ``distributed.Client``: local, existing scheduler, SLURM, PBS.

``connect(profile)`` is a context manager that yields a connected ``Client`` and, on exit,
stops what it started: ``client.shutdown()`` (scheduler, workers, batch jobs) for a cluster
it created, only ``client.close()`` for an existing scheduler (kind ``address``), which
keeps running for its other users. ``client.dashboard_link`` is the dashboard address.

The batch-system profiles (``slurm``, ``pbs``) need the optional ``dask-jobqueue``
(``pip install dgmm[jobqueue]``). dgmm must be importable, in the same version, on the
scheduler and on every worker, since they unpickle dgmm's task functions.
"""
from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dask.utils import format_bytes

from .._version import __version__
from ..errors import ClusterError
from .cluster_config import (
    AddressClusterConfig,
    ClusterConfig,
    LocalClusterConfig,
    PBSClusterConfig,
    SlurmClusterConfig,
)

log = logging.getLogger(__name__)

__all__ = [
    "connect",
    "render_job_script",
    "local_cluster_kwargs",
    "jobqueue_kwargs",
    "describe",
    "SCHEDULER_PLACEHOLDER",
    "scheduler_address",
]

SCHEDULER_PLACEHOLDER = "tcp://<scheduler-address>:8786"
"""Scheduler address shown in job scripts rendered without a running scheduler."""

_JOBQUEUE_CLASSES = {"slurm": "SLURMCluster", "pbs": "PBSCluster"}

#: evaluated on the scheduler and workers (a builtin, so nothing of dgmm is unpickled there)
_DGMM_PROBE = "__import__('dgmm').__version__"


def _checked(cluster_config) -> ClusterConfig:
    if isinstance(cluster_config, (LocalClusterConfig, AddressClusterConfig,
                                   SlurmClusterConfig, PBSClusterConfig)):  # fmt: skip
        return cluster_config
    raise TypeError(
        f"cluster_config must be a validated cluster profile, not "
        f"{type(cluster_config).__name__}: look a name up with "
        "dgmm.workflow.loading.load_cluster_profile(name), or validate a mapping with "
        "dgmm.workflow.cluster_config.cluster_config_from_mapping(mapping)"
    )


# ------------------------------------------------------------------------------- local


def local_cluster_kwargs(config: LocalClusterConfig) -> dict[str, Any]:
    """``distributed.LocalCluster`` keyword arguments, with machine-derived defaults.

    ``processes: true``: ``n_workers`` = cores // threads_per_worker (threads default 1);
    ``processes: false``: one worker (unless given) with a thread per core. The default
    ``memory_limit`` is the machine's memory (``distributed.system.MEMORY_LIMIT``, which
    honours cgroup limits) divided by ``n_workers``, in bytes. ``dashboard_address: null``
    turns the dashboard off.
    """
    from dask.system import CPU_COUNT
    from distributed.system import MEMORY_LIMIT

    cores = max(1, int(CPU_COUNT))
    if config.processes:
        threads = config.threads_per_worker or 1
        n_workers = config.n_workers or max(1, cores // threads)
    else:
        n_workers = config.n_workers or 1
        threads = config.threads_per_worker or max(1, cores // n_workers)
    memory_limit = config.memory_limit
    if memory_limit is None:
        memory_limit = int(MEMORY_LIMIT // n_workers)
    kwargs: dict[str, Any] = {
        "n_workers": n_workers,
        "threads_per_worker": threads,
        "memory_limit": memory_limit,
        "processes": config.processes,
        "dashboard_address": config.dashboard_address,
    }
    if config.local_directory is not None:
        kwargs["local_directory"] = config.local_directory
    if config.dashboard_address is None:
        # no dashboard; the scheduler's small HTTP server (health, metrics) takes any free
        # port instead of warning about a busy 8787
        kwargs["scheduler_kwargs"] = {"dashboard_address": ":0"}
    return kwargs


def _start_local(config: LocalClusterConfig):
    from distributed import Client, LocalCluster

    kwargs = local_cluster_kwargs(config)
    try:
        with _busy_port_is_not_a_warning():
            cluster = LocalCluster(**kwargs)
    except Exception as exc:  # any start failure is reported the same way
        raise ClusterError(
            f"Could not start a local Dask cluster ({_kwargs_text(kwargs)}): "
            f"{type(exc).__name__}: {exc}. Check the local profile (n_workers, "
            "memory_limit, dashboard_address: a port already in use can be set to ':0')."
        ) from exc
    try:
        return Client(cluster)
    except Exception as exc:
        cluster.close()
        raise ClusterError(
            f"Started a local Dask cluster but could not connect a client to it: {exc}."
        ) from exc


@contextmanager
def _busy_port_is_not_a_warning() -> Iterator[None]:
    """Distributed warns when the dashboard port is taken and uses another one; the link
    the caller prints (``client.dashboard_link``) has the real port, so log it instead."""
    with warnings.catch_warnings(record=True) as caught:  # other warnings keep their filters
        warnings.filterwarnings("always", message=r"Port \d+ is already in use",
                                category=UserWarning)
        yield
    for warning in caught:
        if "already in use" in str(warning.message):
            log.info("%s", " ".join(str(warning.message).split()))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)  # fmt: skip


def _kwargs_text(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


# ----------------------------------------------------------------------------- address


def scheduler_address(config: AddressClusterConfig) -> str:
    """The scheduler address of an ``address`` profile: ``address``, or the value of the
    environment variable ``address_env``.

    Parameters
    ----------
    config : AddressClusterConfig
        A validated profile of kind ``address``.

    Returns
    -------
    str
        The address, e.g. ``tcp://10.0.0.5:8786``.

    Raises
    ------
    ClusterError
        ``address_env`` names a variable that is unset or empty.
    """
    if config.address is not None:
        return config.address
    address = os.environ.get(config.address_env or "", "").strip()
    if not address:
        raise ClusterError(
            f"The cluster profile reads the scheduler address from the environment "
            f"variable {config.address_env}, which is not set. Export it (e.g. "
            f"`export {config.address_env}=tcp://HOST:8786`, the address printed by "
            "`dask scheduler`) or put address: in the profile."
        )
    return address


def _connect_address(config: AddressClusterConfig):
    from distributed import Client

    address = scheduler_address(config)
    where = f" (from ${config.address_env})" if config.address_env else ""
    try:
        client = Client(address, timeout=config.timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(
            f"Could not connect to the Dask scheduler at {address}{where} within "
            f"{config.timeout:g} s: {exc}. Is the scheduler running (`dask scheduler` prints "
            "its address) and reachable from this machine (host, port, firewall)? Fix the "
            "address in the cluster profile, or start the scheduler and its workers first."
        ) from None
    try:
        _check_dgmm_on_cluster(client, address)
    except BaseException:
        client.close()
        raise
    return client


def _check_dgmm_on_cluster(client, address: str) -> None:
    """``ClusterError`` unless dgmm imports on the scheduler and on every current worker."""


    problems = []
    try:
        version = client.run_on_scheduler(eval, _DGMM_PROBE)
        if version != __version__:
            log.warning(
                "dgmm %s on the scheduler at %s differs from dgmm %s here; install the "
                "same version everywhere", version, address, __version__,
            )  # fmt: skip
    except ImportError as exc:
        problems.append(f"the scheduler ({exc})")
    results = client.run(eval, _DGMM_PROBE, on_error="return")
    missing = sorted(w for w, result in results.items() if isinstance(result, BaseException))
    if missing:
        problems.append(f"{len(missing)} worker(s): {', '.join(missing)}")
    others = sorted({v for v in results.values() if isinstance(v, str) and v != __version__})
    if others:
        log.warning("workers at %s run dgmm %s, this process %s", address, others, __version__)
    if problems:
        raise ClusterError(
            f"dgmm cannot be imported on {' and on '.join(problems)} of the Dask cluster at "
            f"{address}. The scheduler and every worker unpickle dgmm's tasks: install dgmm "
            f"{__version__} in the Python environment that runs `dask scheduler` and "
            "`dask worker`, then restart them."
        )


# ---------------------------------------------------------------------------- jobqueue


def _jobqueue_class(kind: str):
    try:
        import dask_jobqueue
    except ImportError:
        raise ClusterError(
            f"The '{kind}' cluster profile needs the optional package dask-jobqueue, which "
            "is not installed. Install it with `pip install dgmm[jobqueue]`, or use the "
            "'local' or 'address' profile."
        ) from None
    return getattr(dask_jobqueue, _JOBQUEUE_CLASSES[kind])


def jobqueue_kwargs(config: SlurmClusterConfig | PBSClusterConfig) -> dict[str, Any]:
    """Job keyword arguments of ``SLURMCluster`` / ``PBSCluster`` from a profile.

    Keys left unset (None) are omitted, so dask-jobqueue's own configuration
    (``~/.config/dask/jobqueue.yaml``) still applies to them.
    """
    kwargs: dict[str, Any] = {
        "cores": config.cores,
        "memory": config.memory,
        "processes": config.processes,
        "walltime": config.walltime,
        "job_name": config.job_name,
        "job_extra_directives": list(config.job_extra_directives),
        "job_script_prologue": list(config.job_script_prologue),
    }
    optional = ["queue", "account", "local_directory", "log_directory", "interface", "python"]
    if isinstance(config, PBSClusterConfig):
        optional.append("resource_spec")
    for key in optional:
        value = getattr(config, key)
        if value is not None:
            kwargs[key] = value
    return kwargs


def render_job_script(cluster_config) -> str:
    """The batch script one worker job would run, without submitting anything.

    The scheduler address is shown as ``SCHEDULER_PLACEHOLDER`` (the real one is known once
    the scheduler starts); everything else is what ``cluster.job_script()`` gives.
    """
    config = _checked(cluster_config)
    if config.kind not in _JOBQUEUE_CLASSES:
        raise ClusterError(
            f"Only the slurm and pbs profiles have job scripts; this profile is {config.kind!r}."
        )
    cluster_class = _jobqueue_class(config.kind)
    try:
        job = cluster_class.job_cls(SCHEDULER_PLACEHOLDER, name="dummy-name",
                                    **jobqueue_kwargs(config))
    except (TypeError, ValueError) as exc:
        raise ClusterError(f"Invalid {config.kind} profile for dask-jobqueue: {exc}.") from None
    return job.job_script()


def _start_jobqueue(config: SlurmClusterConfig | PBSClusterConfig):
    from distributed import Client

    cluster_class = _jobqueue_class(config.kind)
    submit = cluster_class.job_cls.submit_command
    if (config.adaptive is not None or config.n_jobs > 0) and shutil.which(submit) is None:
        raise ClusterError(
            f"The '{config.kind}' profile submits worker jobs with `{submit}`, which is not "
            "on PATH here. Run dgmm on a login node of the batch system (or inside an "
            "allocation), or use the 'local' or 'address' profile."
        )
    scheduler_options: dict[str, Any] = {}
    if config.dashboard_address is None:
        scheduler_options.update(dashboard=False, dashboard_address=":0")
    else:
        scheduler_options["dashboard_address"] = config.dashboard_address
    try:
        with _busy_port_is_not_a_warning():
            cluster = cluster_class(scheduler_options=scheduler_options, **jobqueue_kwargs(config))
    except Exception as exc:
        raise ClusterError(
            f"Could not start the scheduler of the '{config.kind}' cluster: "
            f"{type(exc).__name__}: {exc}. Check interface (a network interface of this "
            "machine, e.g. ib0 or eth0), memory and cores in the profile."
        ) from exc
    try:
        if config.adaptive is not None:
            cluster.adapt(
                minimum_jobs=config.adaptive.minimum, maximum_jobs=config.adaptive.maximum
            )
        elif config.n_jobs > 0:
            cluster.scale(jobs=config.n_jobs)
        return Client(cluster)
    except Exception as exc:
        cluster.close()
        raise ClusterError(
            f"Could not submit or connect to the '{config.kind}' worker jobs: {exc}."
        ) from exc


# ---------------------------------------------------------------------------- connect


def describe(cluster_config) -> str:
    """One line saying what ``connect`` will start or reach, for logs."""
    config = _checked(cluster_config)
    if isinstance(config, LocalClusterConfig):
        kw = local_cluster_kwargs(config)
        memory = kw["memory_limit"]
        memory = format_bytes(memory) if isinstance(memory, int) else memory
        mode = "processes" if kw["processes"] else "in-process workers"
        return (
            f"local cluster: {kw['n_workers']} {mode} x {kw['threads_per_worker']} "
            f"thread(s), memory limit {memory} each"
        )
    if isinstance(config, AddressClusterConfig):
        if config.address is not None:
            return f"existing scheduler at {config.address}"
        return f"existing scheduler at ${config.address_env}"
    scale = (
        f"adaptive {config.adaptive.minimum}-{config.adaptive.maximum} jobs"
        if config.adaptive is not None
        else f"{config.n_jobs} job(s)"
    )
    return (
        f"{config.kind} cluster: {scale} of {config.cores} cores, {config.memory}, "
        f"walltime {config.walltime}"
        + (f", queue {config.queue}" if config.queue else "")
        + (f", account {config.account}" if config.account else "")
    )


@contextmanager
def connect(cluster_config) -> Iterator[Any]:
    """Start or reach the cluster of a profile; yield a ``distributed.Client``.

    Parameters
    ----------
    cluster_config : a validated cluster profile (``Workflow.cluster``, or
        ``dgmm.workflow.loading.load_cluster_profile(name)``).

    Yields
    ------
    distributed.Client
        ``client.dashboard_link`` is the dashboard address.

    Raises
    ------
    ClusterError
        The cluster could not be started or reached (with what to check), dgmm is not
        importable on an existing scheduler or its workers, or a batch-system profile lacks
        dask-jobqueue or its submit command.
    """
    config = _checked(cluster_config)
    owned = True
    if isinstance(config, LocalClusterConfig):
        client = _start_local(config)
    elif isinstance(config, AddressClusterConfig):
        client = _connect_address(config)
        owned = False
    else:
        client = _start_jobqueue(config)
    log.info("connected: %s; dashboard %s", describe(config), client.dashboard_link)
    try:
        yield client
    finally:
        _release(client, owned)


def _release(client, owned: bool) -> None:
    try:
        if owned:
            client.shutdown()
        else:
            client.close()
    except Exception as exc:  # closing must not hide the outcome of the run
        log.warning("closing the Dask client failed: %s", exc)
    cluster = getattr(client, "cluster", None)
    if owned and cluster is not None:  # closing twice is harmless
        try:
            cluster.close()
        except Exception as exc:
            log.warning("closing the Dask cluster failed: %s", exc)

