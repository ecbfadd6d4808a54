"""The cluster profiles of a workflow (section ``cluster``, or a profile file): local,
an existing scheduler, SLURM, PBS.

Validation is pure: an ``address_env`` profile keeps the variable's name; the cluster
module reads the environment when it connects (``dgmm.workflow.cluster``).
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter, field_validator, model_validator

from .validators import FORBID, key_problem, positive_size

__all__ = [
    "LocalClusterConfig",
    "AddressClusterConfig",
    "AdaptiveConfig",
    "SlurmClusterConfig",
    "PBSClusterConfig",
    "ClusterConfig",
    "CLUSTER_KINDS",
    "CLUSTER_CLASSES",
    "cluster_config_from_mapping",
]

CLUSTER_KINDS = ("local", "address", "slurm", "pbs")


def _check_memory(value):
    """A memory size kept as written ('16GiB') after checking that it parses."""
    if value is None:
        return None
    nbytes = positive_size(value, "16GiB")
    return value if isinstance(value, str) else nbytes


class LocalClusterConfig(BaseModel):
    """A ``distributed.LocalCluster`` started by dgmm on this machine (kind ``local``).

    ``None`` values are derived from the machine (see
    ``dgmm.workflow.cluster.local_cluster_kwargs``): with ``processes: true`` one
    single-threaded worker process per core; with ``processes: false`` one in-process
    worker with a thread per core; ``memory_limit`` the machine's memory divided among the
    workers.
    """

    model_config = FORBID

    kind: Literal["local"] = "local"
    n_workers: int | None = Field(None, ge=1)
    threads_per_worker: int | None = Field(None, ge=1)
    memory_limit: str | int | None = None
    processes: bool = True
    dashboard_address: str | None = ":8787"
    local_directory: str | None = None

    _memory = field_validator("memory_limit")(classmethod(lambda cls, v: _check_memory(v)))


class AddressClusterConfig(BaseModel):
    """An existing Dask scheduler (kind ``address``).

    Exactly one of ``address`` (e.g. ``tcp://10.0.0.5:8786``) and ``address_env`` (the
    name of an environment variable holding it) is given; ``timeout`` is in seconds.
    """

    model_config = FORBID

    kind: Literal["address"] = "address"
    address: str | None = None
    address_env: str | None = None
    timeout: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _one_of(self):
        if self.address_env is None and self.address is None:
            raise key_problem(
                "address_env", None,
                "a scheduler address is needed: set address (e.g. tcp://10.0.0.5:8786) or "
                "address_env (the name of an environment variable holding it)",
            )  # fmt: skip
        if self.address_env is not None and self.address is not None:
            raise key_problem(
                "address_env", self.address_env,
                f"give address or address_env, not both (found address={self.address!r})",
            )  # fmt: skip
        return self


class AdaptiveConfig(BaseModel):
    """Adaptive scaling between ``minimum`` and ``maximum`` batch jobs."""

    model_config = FORBID

    minimum: int = Field(0, ge=0)
    maximum: int = Field(..., ge=1)

    @model_validator(mode="after")
    def _order(self):
        if self.maximum < self.minimum:
            raise key_problem("maximum", self.maximum, f"must be >= minimum ({self.minimum})")
        return self


_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


class _JobqueueConfig(BaseModel):
    """Settings shared by the dask-jobqueue profiles (one batch job = ``processes`` workers).

    ``cores`` and ``memory`` are per job; ``jobs`` is the number of jobs to submit, or
    ``adaptive`` scales between ``minimum`` and ``maximum`` jobs (give one of the two).
    """

    model_config = FORBID

    cores: int = Field(..., ge=1)
    memory: str
    walltime: str = "01:00:00"
    queue: str | None = None
    account: str | None = None
    processes: int = Field(1, ge=1)
    jobs: int | None = Field(None, ge=0)
    adaptive: AdaptiveConfig | None = None
    job_name: str = "dgmm-worker"
    job_extra_directives: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(default_factory=list)
    local_directory: str | None = None
    log_directory: str | None = None
    interface: str | None = None
    python: str | None = None
    dashboard_address: str | None = ":8787"

    _memory = field_validator("memory")(classmethod(lambda cls, v: _check_memory(v)))

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value):
        if not _WALLTIME.match(value):
            raise ValueError("must look like HH:MM:SS (or D-HH:MM:SS for SLURM)")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if self.processes > self.cores:
            raise key_problem(
                "processes", self.processes,
                f"must be <= cores ({self.cores}): each worker process needs a core",
            )  # fmt: skip
        if self.adaptive is not None and self.jobs is not None:
            raise key_problem(
                "adaptive", self.adaptive.model_dump(),
                "give either jobs (a fixed number of batch jobs) or adaptive "
                "(minimum/maximum), not both",
            )  # fmt: skip
        return self

    @property
    def n_jobs(self) -> int:
        """Jobs to submit when not adaptive (default 1)."""
        return 1 if self.jobs is None else self.jobs

    def planned_workers(self) -> tuple[int, int]:
        """(worker threads, bytes of memory per worker process) of the cluster at its
        full size: ``jobs`` (or ``adaptive.maximum``) jobs of ``cores`` threads, a job's
        memory shared by its ``processes``. What the default task size is planned for,
        so that it does not depend on how many jobs have started when a run begins."""
        from dask.utils import parse_bytes

        jobs = self.adaptive.maximum if self.adaptive is not None else self.n_jobs
        return max(1, jobs) * self.cores, parse_bytes(self.memory) // self.processes


class SlurmClusterConfig(_JobqueueConfig):
    """Workers submitted as SLURM jobs by ``dask_jobqueue.SLURMCluster`` (kind ``slurm``)."""

    kind: Literal["slurm"] = "slurm"


class PBSClusterConfig(_JobqueueConfig):
    """Workers submitted as PBS jobs by ``dask_jobqueue.PBSCluster`` (kind ``pbs``).

    ``resource_spec`` (e.g. ``select=1:ncpus=8:mem=32GB``) defaults to one computed from
    ``cores`` and ``memory``.
    """

    kind: Literal["pbs"] = "pbs"
    resource_spec: str | None = None


ClusterConfig = Annotated[
    LocalClusterConfig | AddressClusterConfig | SlurmClusterConfig | PBSClusterConfig,
    Field(discriminator="kind"),
]
"""One of the cluster profile models, chosen by its ``kind``."""

CLUSTER_CLASSES: dict[str, type[BaseModel]] = {
    "local": LocalClusterConfig,
    "address": AddressClusterConfig,
    "slurm": SlurmClusterConfig,
    "pbs": PBSClusterConfig,
}
_CLUSTER_ADAPTER: TypeAdapter = TypeAdapter(ClusterConfig)


def cluster_config_from_mapping(mapping: dict) -> ClusterConfig:
    """Validate a profile mapping (with its ``kind``); pydantic ``ValidationError`` if bad."""
    return _CLUSTER_ADAPTER.validate_python(mapping)
