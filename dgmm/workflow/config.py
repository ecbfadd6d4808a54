"""Workflow files: pydantic models mirroring the YAML, and ``load_workflow``.

A workflow file is a YAML mapping with the sections ``name``, ``data``, ``model``,
``cluster``, ``checkpoint``, ``outputs`` and ``steps`` (see ``workflows/quickstart.yaml``).
Every model forbids unknown keys, so a misspelt key is an error, never silently ignored.

Paths
-----
Relative local paths in ``data``, ``model.*_init``, ``checkpoint`` and ``outputs`` are
resolved against the **current working directory** when the workflow is validated (run
``dgmm`` from the project root, as the shipped workflows assume) and stored as absolute
paths. URLs with a scheme (``s3://``, ``gs://``, ``memory://``, ``file://`` ...) are kept
as written and opened through fsspec with ``data.storage_options`` (checkpoints and
predictions with ``checkpoint.storage_options`` / ``outputs.storage_options`` when given,
for when they live on another store than the data).

Cluster profiles
----------------
``cluster`` is an inline mapping with a ``kind`` ('local' | 'address' | 'slurm' | 'pbs'),
or a string: a path to a profile YAML file (when it ends in ``.yaml``/``.yml`` or contains
a ``/``; relative to the current directory), or the name of a profile looked up as
``<workflow dir>/../configs/<name>.yaml``, then ``./configs/<name>.yaml``; the name
``local`` falls back to the built-in defaults (``LocalClusterConfig()``).

Overrides
---------
``load_workflow(path, ["model.n_components=12", "steps=[fit]"])`` sets a key path to a
value parsed as a YAML scalar or flow list/mapping before validation; an override of a
key that does not exist is an error.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from ..core.types import CovarianceType, InitParams, NonFinitePolicy
from ..data.files import format_from_suffix, is_url
from ..errors import ConfigError

__all__ = [
    "SyntheticConfig",
    "DataConfig",
    "ModelConfig",
    "LocalClusterConfig",
    "AddressClusterConfig",
    "AdaptiveConfig",
    "SlurmClusterConfig",
    "PBSClusterConfig",
    "ClusterConfig",
    "CheckpointConfig",
    "OutputsConfig",
    "Workflow",
    "Step",
    "STEPS",
    "CLUSTER_KINDS",
    "DEFAULT_CHUNK_BYTES",
    "load_workflow",
    "load_cluster_profile",
    "cluster_config_from_mapping",
    "find_cluster_profile",
    "parse_override",
    "parse_bytes",
    "is_url",
]

DEFAULT_CHUNK_BYTES = 64 * 2**20
"""Default bytes of output rows read by one task (64 MiB)."""

Step = Literal["fit", "predict", "score", "report"]
STEPS: tuple[str, ...] = get_args(Step)
PredictionsFormat = Literal["zarr", "parquet"]

_FORBID = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------ helpers

_BYTE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip


def parse_bytes(value: float | str) -> int:
    """Bytes from an int or a text such as ``'64MiB'``, ``'16 GB'``, ``'1e6'``.

    Decimal units (kB, MB, GB, TB) are powers of 1000, binary units (KiB, MiB, GiB, TiB)
    powers of 1024, as in ``dask.utils.parse_bytes``. Raises ``ValueError`` otherwise.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size in bytes; write e.g. '64MiB'")
    if isinstance(value, (int, float)):
        if value != int(value):
            raise ValueError(f"{value!r} is not a whole number of bytes")
        return int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _BYTE_UNITS:
        raise ValueError(
            f"cannot read {value!r} as a size; write a number of bytes or a number with a "
            "unit such as '512MiB', '64 MB', '16GiB'"
        )
    return int(float(match.group(1)) * _BYTE_UNITS[unit])


def _resolve_path(path: str | os.PathLike | None) -> str | None:
    """Absolute local path (against the current directory); URLs unchanged."""
    if path is None:
        return None
    text = os.fspath(path)
    if not text:
        raise ValueError("must be a non-empty path")
    if is_url(text):
        return text
    return os.path.abspath(os.path.expanduser(text))


def _positive_size(value, example: str) -> int:
    """``parse_bytes`` for validators: the message does not repeat the value."""
    try:
        nbytes = parse_bytes(value)
    except ValueError:
        nbytes = None
    if nbytes is None or nbytes <= 0:
        raise ValueError(
            f"must be a positive size: a number of bytes or a number with a unit such as "
            f"'{example}' (kB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)"
        )
    return nbytes


def _nesting_depth(value) -> int:
    depth = 0
    while isinstance(value, list):
        depth += 1
        if not value:
            break
        value = value[0]
    return depth


def _check_numeric_nested_list(value: list, name: str) -> None:
    def walk(item):
        if isinstance(item, list):
            for sub in item:
                walk(sub)
        elif isinstance(item, bool) or not isinstance(item, (int, float)):
            raise ValueError(
                f"{name} must be a nested list of numbers or the path of a .npy file; "
                f"found the element {item!r}"
            )

    walk(value)


def _init_array(value, info: ValidationInfo):
    """Validate ``weights_init`` / ``means_init`` / ``precisions_init``."""
    if value is None:
        return None
    name = info.field_name
    if isinstance(value, (str, os.PathLike)):
        return _resolve_path(value)
    if hasattr(value, "tolist") and not isinstance(value, list):  # NumPy array
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise ValueError(
            f"{name} must be a non-empty (nested) list of numbers or the path of a .npy file"
        )
    _check_numeric_nested_list(value, name)
    return value


# ---------------------------------------------------------------------------- data


class SyntheticConfig(BaseModel):
    """How to generate the synthetic data set written to ``data.path`` (a Zarr store).

    A mixture of ``components`` Gaussians in ``features`` dimensions (``covariance_type``
    of the generating mixture), the two closest means ``separation`` standard deviations
    apart, drawn with ``seed``; stored in chunks of ``chunk_rows`` rows (default: about
    16 MiB per chunk) on the first run, with ``data.dtype``. The arguments of
    ``dgmm.data.make_gmm_data``.
    """

    model_config = _FORBID

    rows: int = Field(200_000, gt=0)
    features: int = Field(2, gt=0)
    components: int = Field(4, gt=0)
    covariance_type: CovarianceType = "full"
    seed: int = Field(0, ge=0)
    chunk_rows: int | None = Field(None, gt=0)
    separation: float = Field(4.0, gt=0)


class DataConfig(BaseModel):
    """Where the rows come from (section ``data``)."""

    model_config = _FORBID

    source: Literal["zarr", "parquet", "npy", "synthetic"]
    path: str
    array_path: str | None = None
    columns: list[str] | None = None
    dtype: Literal["float64", "float32"] = "float64"
    storage_options: dict[str, Any] = Field(default_factory=dict)
    nonfinite: NonFinitePolicy = "raise"
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    persist: Literal["auto", True, False] = "auto"
    synthetic: SyntheticConfig | None = Field(default=None, validate_default=True)

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value, info: ValidationInfo):
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            return value  # the str validator reports the type
        source = info.data.get("source")
        if source == "npy" and is_url(value) and not value.startswith("file://"):
            raise ValueError(
                f"an npy source must be a local file, found the URL {value!r}; copy the "
                "file locally or convert it to Zarr (dgmm make-data)"
            )
        return _resolve_path(value)

    @field_validator("array_path")
    @classmethod
    def _array_path(cls, value, info: ValidationInfo):
        source = info.data.get("source")
        if value is not None and source not in ("zarr", "synthetic"):
            raise ValueError(
                f"array_path applies to zarr sources only, but data.source is {source!r}; "
                "remove array_path"
            )
        return value

    @field_validator("columns")
    @classmethod
    def _columns(cls, value, info: ValidationInfo):
        source = info.data.get("source")
        if value is None:
            return None
        if source != "parquet":
            raise ValueError(
                f"columns applies to parquet sources only, but data.source is {source!r}; "
                "remove columns"
            )
        if not value:
            raise ValueError("must list at least one column, or be omitted to use all")
        duplicated = sorted({c for c in value if value.count(c) > 1})
        if duplicated:
            raise ValueError(f"lists the columns {duplicated} more than once")
        return value

    @field_validator("storage_options")
    @classmethod
    def _storage_options(cls, value, info: ValidationInfo):
        if value and info.data.get("source") == "npy":
            raise ValueError("npy sources are local files; remove storage_options")
        return value

    @field_validator("chunk_bytes", mode="before")
    @classmethod
    def _chunk_bytes(cls, value):
        return _positive_size(value, "64MiB")

    @field_validator("synthetic")
    @classmethod
    def _synthetic(cls, value, info: ValidationInfo):
        source = info.data.get("source")
        if source == "synthetic" and value is None:
            raise ValueError(
                "data.source is 'synthetic' but there is no data.synthetic block; add one "
                "with rows, features, components (see workflows/quickstart.yaml)"
            )
        if source is not None and source != "synthetic" and value is not None:
            raise ValueError(
                f"applies when data.source is 'synthetic', but it is {source!r}; remove "
                "the synthetic block"
            )
        return value

    @property
    def reader_kind(self) -> str:
        """The ``dgmm.data.open_source`` kind: synthetic data are stored as Zarr."""
        return "zarr" if self.source == "synthetic" else self.source

    def open_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``dgmm.data.open_source(self.reader_kind, self.path, ...)``."""
        kwargs: dict[str, Any] = {"dtype": self.dtype, "target_chunk_bytes": self.chunk_bytes}
        if self.reader_kind == "zarr":
            kwargs["array_path"] = self.array_path
        if self.reader_kind == "parquet":
            kwargs["columns"] = self.columns
        if self.reader_kind != "npy":
            kwargs["storage_options"] = dict(self.storage_options)
        return kwargs


# ---------------------------------------------------------------------------- model

InitArray = Annotated[Any, Field(default=None, validate_default=False)]


class ModelConfig(BaseModel):
    """The parameters of ``dgmm.GaussianMixture`` (section ``model``).

    Names and defaults are those of ``sklearn.mixture.GaussianMixture``, plus
    ``split_every`` (fan-in of the reduction tree) and ``require_convergence`` (exit with
    code 5 when EM stops at ``max_iter`` without converging). ``weights_init``,
    ``means_init`` and ``precisions_init`` are nested lists of numbers or the path of a
    ``.npy`` file. ``nonfinite`` comes from ``data.nonfinite``.
    """

    model_config = _FORBID

    n_components: int = Field(1, ge=1)
    covariance_type: CovarianceType = "full"
    tol: float = Field(1e-3, ge=0)
    reg_covar: float = Field(1e-6, ge=0)
    max_iter: int = Field(100, ge=0)
    n_init: int = Field(1, ge=1)
    init_params: InitParams = "kmeans"
    weights_init: InitArray
    means_init: InitArray
    precisions_init: InitArray
    random_state: int | None = Field(None, ge=0, lt=2**32)
    warm_start: bool = False
    verbose: int = Field(0, ge=0)
    verbose_interval: int = Field(10, ge=1)
    split_every: int = Field(8, ge=2)
    require_convergence: bool = False

    @field_validator("weights_init", "means_init", "precisions_init", mode="before")
    @classmethod
    def _check_init(cls, value, info: ValidationInfo):
        return _init_array(value, info)

    @field_validator("weights_init")
    @classmethod
    def _weights_length(cls, value, info: ValidationInfo):
        k = info.data.get("n_components")
        if isinstance(value, list):
            if _nesting_depth(value) != 1:
                raise ValueError("must be a flat list of n_components weights")
            if k is not None and len(value) != k:
                raise ValueError(
                    f"has {len(value)} weights but n_components is {k}; give one weight "
                    "per component"
                )
        return value

    @field_validator("means_init")
    @classmethod
    def _means_shape(cls, value, info: ValidationInfo):
        k = info.data.get("n_components")
        if isinstance(value, list):
            if _nesting_depth(value) != 2:
                raise ValueError("must be a list of n_components rows of n_features numbers")
            if k is not None and len(value) != k:
                raise ValueError(
                    f"has {len(value)} rows but n_components is {k}; give one mean per "
                    "component"
                )
        return value

    @field_validator("precisions_init")
    @classmethod
    def _precisions_shape(cls, value, info: ValidationInfo):
        covariance_type = info.data.get("covariance_type")
        k = info.data.get("n_components")
        if isinstance(value, list) and covariance_type is not None:
            depth = {"full": 3, "tied": 2, "diag": 2, "spherical": 1}[covariance_type]
            if _nesting_depth(value) != depth:
                raise ValueError(
                    f"must be nested {depth} deep for covariance_type {covariance_type!r} "
                    "(full: (K, d, d), tied: (d, d), diag: (K, d), spherical: (K,))"
                )
            if covariance_type != "tied" and k is not None and len(value) != k:
                raise ValueError(
                    f"has {len(value)} entries but n_components is {k}; give one "
                    "precision per component"
                )
        return value

    def estimator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``dgmm.GaussianMixture`` (init arrays as float64 arrays).

        Excludes ``require_convergence`` (a workflow setting), ``client`` and
        ``nonfinite`` (see ``Workflow.estimator_kwargs``). A ``.npy`` init file that cannot
        be read raises ``ConfigError``.
        """
        kwargs = self.model_dump(exclude={"require_convergence"})
        for name in ("weights_init", "means_init", "precisions_init"):
            kwargs[name] = _load_init_array(name, kwargs[name])
        return kwargs


def _load_init_array(name: str, value):
    import numpy as np

    if value is None:
        return None
    if isinstance(value, list):
        return np.asarray(value, dtype=np.float64)
    import fsspec

    try:
        with fsspec.open(value, "rb") as stream:
            array = np.load(stream, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(
            f"model.{name}: cannot read the .npy file {value!r} ({exc}). Give the path of "
            "an existing .npy file written by numpy.save, or a nested list of numbers."
        ) from None
    return np.asarray(array, dtype=np.float64)


def _file_digest(path: str) -> str | None:
    """sha256 of a file's bytes, or None when it cannot be read."""
    import fsspec

    try:
        digest = hashlib.sha256()
        with fsspec.open(path, "rb") as stream:
            for block in iter(lambda: stream.read(2**20), b""):
                digest.update(block)
        return digest.hexdigest()
    except (OSError, ValueError):
        return None


# -------------------------------------------------------------------------- clusters

CLUSTER_KINDS = ("local", "address", "slurm", "pbs")


def _check_memory(value):
    """A memory size kept as written ('16GiB') after checking that it parses."""
    if value is None:
        return None
    nbytes = _positive_size(value, "16GiB")
    return value if isinstance(value, str) else nbytes


class LocalClusterConfig(BaseModel):
    """A ``distributed.LocalCluster`` started by dgmm on this machine (kind ``local``).

    ``None`` values are derived from the machine (see ``dgmm.cluster.local_cluster_kwargs``):
    with ``processes: true`` one single-threaded worker process per core; with
    ``processes: false`` one in-process worker with a thread per core; ``memory_limit``
    the machine's memory divided among the workers.
    """

    model_config = _FORBID

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

    model_config = _FORBID

    kind: Literal["address"] = "address"
    address: str | None = None
    address_env: str | None = Field(default=None, validate_default=True)
    timeout: float = Field(30.0, gt=0)

    @field_validator("address_env")
    @classmethod
    def _one_of(cls, value, info: ValidationInfo):
        if "address" not in info.data:  # address itself was invalid
            return value
        address = info.data["address"]
        if value is None and address is None:
            raise ValueError(
                "a scheduler address is needed: set address (e.g. tcp://10.0.0.5:8786) or "
                "address_env (the name of an environment variable holding it)"
            )
        if value is not None and address is not None:
            raise ValueError(
                f"give address or address_env, not both (found address={address!r})"
            )
        return value

    def resolve_address(self) -> str:
        """The scheduler address; ``ClusterError`` when ``address_env`` is unset or empty."""
        from ..errors import ClusterError

        if self.address is not None:
            return self.address
        address = os.environ.get(self.address_env or "", "").strip()
        if not address:
            raise ClusterError(
                f"The cluster profile reads the scheduler address from the environment "
                f"variable {self.address_env}, which is not set. Export it (e.g. "
                f"`export {self.address_env}=tcp://HOST:8786`, the address printed by "
                "`dask scheduler`) or put address: in the profile."
            )
        return address


class AdaptiveConfig(BaseModel):
    """Adaptive scaling between ``minimum`` and ``maximum`` batch jobs."""

    model_config = _FORBID

    minimum: int = Field(0, ge=0)
    maximum: int = Field(..., ge=1)

    @field_validator("maximum")
    @classmethod
    def _order(cls, value, info: ValidationInfo):
        minimum = info.data.get("minimum")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be >= minimum ({minimum})")
        return value


_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


class _JobqueueConfig(BaseModel):
    """Settings shared by the dask-jobqueue profiles (one batch job = ``processes`` workers).

    ``cores`` and ``memory`` are per job; ``jobs`` is the number of jobs to submit, or
    ``adaptive`` scales between ``minimum`` and ``maximum`` jobs (give one of the two).
    """

    model_config = _FORBID

    cores: int = Field(..., ge=1)
    memory: str
    walltime: str = "01:00:00"
    queue: str | None = None
    account: str | None = None
    processes: int = Field(1, ge=1)
    jobs: int | None = Field(None, ge=0)
    adaptive: AdaptiveConfig | None = Field(default=None, validate_default=True)
    job_name: str = "dgmm-worker"
    job_extra_directives: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(default_factory=list)
    local_directory: str | None = None
    log_directory: str | None = None
    interface: str | None = None
    python: str | None = None
    dashboard_address: str | None = ":8787"

    _memory = field_validator("memory")(classmethod(lambda cls, v: _check_memory(v)))

    @field_validator("processes")
    @classmethod
    def _processes(cls, value, info: ValidationInfo):
        cores = info.data.get("cores")
        if cores is not None and value > cores:
            raise ValueError(f"must be <= cores ({cores}): each worker process needs a core")
        return value

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value):
        if not _WALLTIME.match(value):
            raise ValueError("must look like HH:MM:SS (or D-HH:MM:SS for SLURM)")
        return value

    @field_validator("adaptive")
    @classmethod
    def _jobs_or_adaptive(cls, value, info: ValidationInfo):
        if value is not None and info.data.get("jobs") is not None:
            raise ValueError(
                "give either jobs (a fixed number of batch jobs) or adaptive "
                "(minimum/maximum), not both"
            )
        return value

    @property
    def n_jobs(self) -> int:
        """Jobs to submit when not adaptive (default 1)."""
        return 1 if self.jobs is None else self.jobs


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

_CLUSTER_ADAPTER: TypeAdapter = TypeAdapter(ClusterConfig)
_CLUSTER_CLASSES = {
    "local": LocalClusterConfig,
    "address": AddressClusterConfig,
    "slurm": SlurmClusterConfig,
    "pbs": PBSClusterConfig,
}


def cluster_config_from_mapping(mapping: dict) -> ClusterConfig:
    """Validate a profile mapping (with its ``kind``); pydantic ``ValidationError`` if bad."""
    return _CLUSTER_ADAPTER.validate_python(mapping)


# ------------------------------------------------------------------ checkpoint, outputs


class CheckpointConfig(BaseModel):
    """Section ``checkpoint``: ``dir`` (None disables), save ``every`` N iterations, ``keep``;
    ``storage_options`` for a URL ``dir`` (None: those of the data section)."""

    model_config = _FORBID

    dir: str | None = None
    every: int = Field(1, ge=1)
    keep: int = Field(3, ge=1)
    storage_options: dict[str, Any] | None = None

    _dir = field_validator("dir")(classmethod(lambda cls, v: _resolve_path(v)))


class OutputsConfig(BaseModel):
    """Section ``outputs``: where the model, the predictions and the report go.

    ``predictions_format`` defaults to the suffix of ``predictions`` (``.zarr`` or
    ``.parquet``/``.pq``). ``report`` is a directory (``report.json`` and PNG plots).
    """

    model_config = _FORBID

    model: str | None = None
    predictions: str | None = None
    predictions_format: PredictionsFormat | None = Field(default=None, validate_default=True)
    report: str | None = None
    #: fsspec options for a URL ``predictions`` (None: those of the data section)
    storage_options: dict[str, Any] | None = None

    _paths = field_validator("model", "predictions", "report")(
        classmethod(lambda cls, v: _resolve_path(v))
    )

    @field_validator("predictions_format")
    @classmethod
    def _format(cls, value, info: ValidationInfo):
        predictions = info.data.get("predictions")
        if value is not None or predictions is None:
            return value
        fmt = format_from_suffix(predictions)
        if fmt is None:
            raise ValueError(
                f"cannot tell the format of outputs.predictions {predictions!r} from its "
                "suffix; name it *.zarr or *.parquet, or set predictions_format: zarr | "
                "parquet"
            )
        return fmt


# -------------------------------------------------------------------------- workflow


class Workflow(BaseModel):
    """A whole workflow file. Build it with :func:`load_workflow`."""

    model_config = _FORBID

    name: str | None = None
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    cluster: ClusterConfig = Field(default_factory=LocalClusterConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    steps: list[Step] = Field(
        default_factory=lambda: ["fit", "predict", "report"], validate_default=True
    )

    _source_file: str | None = PrivateAttr(default=None)
    _overrides: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("cluster", mode="before")
    @classmethod
    def _cluster_by_name(cls, value, info: ValidationInfo):
        if isinstance(value, (str, os.PathLike)):
            workflow_dir = (info.context or {}).get("workflow_dir")
            return load_cluster_profile(os.fspath(value), workflow_dir=workflow_dir)
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, value, info: ValidationInfo):
        if not value:
            raise ValueError(f"must list at least one step from {list(STEPS)}")
        repeated = sorted({s for s in value if value.count(s) > 1})
        if repeated:
            raise ValueError(f"lists {repeated} more than once; give each step once")
        outputs: OutputsConfig | None = info.data.get("outputs")
        if outputs is None:
            return value
        needs = {"predict": ("predictions", "a .zarr or .parquet path"),
                 "report": ("report", "a directory")}  # fmt: skip
        for step, (key, what) in needs.items():
            if step in value and getattr(outputs, key) is None:
                raise ValueError(
                    f"step {step!r} writes to outputs.{key}, which is not set; set "
                    f"outputs.{key} ({what}) or remove {step!r} from steps"
                )
        if "fit" not in value and outputs.model is None:
            raise ValueError(
                "has no 'fit' step, so the model is read from outputs.model, which is not "
                "set; add 'fit' to steps or set outputs.model to a saved model"
            )
        return value

    @property
    def source_file(self) -> str | None:
        """The workflow file this was loaded from (None when built in code)."""
        return self._source_file

    @property
    def overrides(self) -> tuple[str, ...]:
        """The ``key=value`` overrides applied on top of the file."""
        return self._overrides

    def storage_options_for(self, section: str) -> dict[str, Any]:
        """fsspec options for the checkpoints (``"checkpoint"``) or the predictions
        (``"outputs"``): the section's own ``storage_options``, else the data section's."""
        own = getattr(self, section).storage_options
        return dict(self.data.storage_options if own is None else own)

    def estimator_kwargs(self) -> dict[str, Any]:
        """``ModelConfig.estimator_kwargs()`` plus ``nonfinite`` from the data section."""
        kwargs = self.model.estimator_kwargs()
        kwargs["nonfinite"] = self.data.nonfinite
        return kwargs

    def settings_payload(self) -> dict[str, Any]:
        """The settings that change the fitted numbers (what ``settings_hash`` hashes).

        Data: source, path (resolved), array_path, columns, dtype, nonfinite and the
        synthetic block; not ``storage_options`` (credentials, endpoints), ``chunk_bytes``
        or ``persist`` (performance). Model: every parameter except ``verbose``,
        ``verbose_interval`` and ``require_convergence``; an init array given as a file is
        represented by its path and the sha256 of its bytes.
        """
        data = self.data.model_dump(
            mode="json", exclude={"storage_options", "chunk_bytes", "persist"}
        )
        model = self.model.model_dump(
            mode="json", exclude={"verbose", "verbose_interval", "require_convergence"}
        )
        for name in ("weights_init", "means_init", "precisions_init"):
            if isinstance(model[name], str):
                model[name] = {"file": model[name], "sha256": _file_digest(model[name])}
        return {"schema": "dgmm-settings-1", "data": data, "model": model}

    def settings_hash(self) -> str:
        """Stable sha256 (hex) of :meth:`settings_payload`, for checkpoints and re-runs."""
        text = json.dumps(self.settings_payload(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_yaml(self) -> str:
        """The validated workflow as YAML: defaults filled in, paths absolute, the cluster
        profile inlined (what ``dgmm validate`` can show; loading it gives this workflow)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ------------------------------------------------------------------------ YAML reading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None,
                f"key {key!r} appears twice in one mapping (first on line {seen[key] + 1})",
                key_node.start_mark,
            )  # fmt: skip
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def _key_lines(node, prefix=(), out=None) -> dict[tuple, int]:
    """1-based line of every key path in a composed YAML node tree."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = prefix + (key_node.value,)
            out[path] = key_node.start_mark.line + 1
            _key_lines(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = prefix + (index,)
            out[path] = item.start_mark.line + 1
            _key_lines(item, path, out)
    return out


class _Document:
    """A parsed YAML mapping with the line of each key path."""

    def __init__(self, path: str, data: dict, lines: dict[tuple, int]):
        self.path = path
        self.data = data
        self.lines = lines


def _read_yaml(path: str | os.PathLike, what: str) -> _Document:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise ConfigError(
            f"{what} {path!r} does not exist (looked in {os.path.abspath(path)}). Check the "
            "path; relative paths are relative to the current directory."
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path!r} is a directory; give the path of a YAML file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read {what} {path!r}: {exc}.") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ConfigError(
            f"{where}: invalid YAML in {what}: {problem}. Fix the syntax at that line "
            "(check indentation, colons and quotes)."
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML in {what}: {exc}.") from None
    if data is None:
        raise ConfigError(
            f"{what} {path!r} is empty; it must be a YAML mapping (see workflows/quickstart.yaml)."
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{what} {path!r} holds a YAML {type(data).__name__}, not a mapping of keys to "
            "values; start the file with keys such as `data:` (see workflows/quickstart.yaml)."
        )
    return _Document(path, data, _key_lines(node))


# -------------------------------------------------------------------- cluster profiles


def _profile_dirs(workflow_dir: str | os.PathLike | None) -> list[Path]:
    dirs = []
    if workflow_dir is not None:
        dirs.append(Path(workflow_dir).resolve().parent / "configs")
    cwd_configs = Path.cwd() / "configs"
    if cwd_configs.resolve() not in [d.resolve() for d in dirs]:
        dirs.append(cwd_configs)
    return dirs


def _looks_like_path(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text


def find_cluster_profile(name: str, *, workflow_dir: str | os.PathLike | None = None) -> str | None:
    """The file for a profile name or path; None for the built-in ``local``.

    Raises ``ConfigError`` naming the places searched when there is no such profile.
    """
    if _looks_like_path(name):
        if not os.path.isfile(name):
            raise ConfigError(
                f"cluster profile file {name!r} does not exist (relative to the current "
                f"directory {os.getcwd()}). Give an existing .yaml file, a profile name "
                f"such as 'local', or an inline mapping with kind: {' | '.join(CLUSTER_KINDS)}."
            )
        return os.path.abspath(name)
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise ConfigError(
            f"cluster profile name {name!r} is not valid; use a name such as 'local' or "
            "'slurm' (a file configs/<name>.yaml) or a path ending in .yaml."
        )
    dirs = _profile_dirs(workflow_dir)
    for directory in dirs:
        candidate = directory / f"{name}.yaml"
        if candidate.is_file():
            return str(candidate)
    if name == "local":
        return None
    available = sorted(
        {p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")} | {"local"}
    )
    raise ConfigError(
        f"cluster profile {name!r} not found: looked for {name}.yaml in "
        f"{', '.join(str(d) for d in dirs)}. Available profiles: {', '.join(available)}. "
        "Use one of those names, a path to a profile .yaml file, or an inline mapping."
    )


def load_cluster_profile(
    name_or_path: str, *, workflow_dir: str | os.PathLike | None = None
) -> ClusterConfig:
    """Load and validate a cluster profile by name or path (see the module docstring)."""
    doc = _profile_document(name_or_path, workflow_dir)
    if doc is None:
        return LocalClusterConfig()
    config, problems = _validate_cluster(doc.data, doc, in_workflow=False, overridden={})
    if problems:
        raise _config_error(doc.path, "cluster profile", _strip_cluster_prefix(problems))
    return config


def _profile_document(name_or_path: str, workflow_dir) -> _Document | None:
    file = find_cluster_profile(name_or_path, workflow_dir=workflow_dir)
    if file is None:
        return None
    return _read_yaml(file, "cluster profile")


# ----------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Split ``'model.n_components=12'`` into ``(('model', 'n_components'), 12)``.

    The value is read as YAML: ``12`` is an int, ``1e-4`` a float, ``null`` None,
    ``[fit, predict]`` a list, ``true`` a bool; anything else a string.
    """
    key, sep, raw = text.partition("=")
    parts = tuple(key.strip().split("."))
    if not sep or not all(part.strip() for part in parts):
        raise ConfigError(
            f"override {text!r} is not of the form key.path=value; write for example "
            "--set model.n_components=12 or --set steps=[fit,report]."
        )
    parts = tuple(part.strip() for part in parts)
    raw = raw.strip()
    if raw == "":
        return parts, None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override {text!r}: the value {raw!r} is not valid YAML ({exc.__class__.__name__}); "
            "quote strings that contain ':' or '#', e.g. --set 'data.path=\"a:b\"'."
        ) from None
    return parts, value


def _model_classes(annotation) -> list[type[BaseModel]]:
    """Pydantic model classes inside an annotation (through Optional/Union/Annotated)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _model_classes(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if origin in (Union,) or type(annotation).__name__ == "UnionType":
        found = []
        for arg in get_args(annotation):
            found.extend(_model_classes(arg))
        return found
    return []


def _is_mapping_field(annotation) -> bool:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_mapping_field(get_args(annotation)[0])
    return origin is dict or annotation is dict


def _unknown_key_text(key: str, section: str, allowed: Iterable[str]) -> str:
    allowed = sorted(allowed)
    where = f"in section '{section}'" if section else "at the top level"
    text = f"unknown key '{key}' {where}; allowed keys: {', '.join(allowed)}"
    close = difflib.get_close_matches(str(key), allowed, n=1)
    if close:
        text += f" (did you mean '{close[0]}'?)"
    return text


def _cluster_class_for(value) -> type[BaseModel] | None:
    if isinstance(value, dict):
        return _CLUSTER_CLASSES.get(value.get("kind"))
    return None


def _apply_override(data: dict, parts: tuple[str, ...], value, text: str, resolve_cluster):
    """Set ``data[parts...] = value`` after checking the key path against the schema."""
    model: type[BaseModel] | None = Workflow
    node = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        section = ".".join(parts[:depth])
        if model is None:  # inside a free-form mapping such as storage_options
            if not last:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"override {text!r}: {section}.{part} is not a mapping.")
                continue
            node[part] = value
            return
        if part not in model.model_fields:
            raise ConfigError(
                f"override {text!r}: {_unknown_key_text(part, section, model.model_fields)}."
            )
        if last:
            node[part] = value
            return
        annotation = model.model_fields[part].annotation
        if model is Workflow and part == "cluster":
            node["cluster"] = resolve_cluster(node.get("cluster"))
            model = _cluster_class_for(node["cluster"])
            if model is None:
                raise ConfigError(
                    f"override {text!r}: the cluster section has no valid kind "
                    f"({' | '.join(CLUSTER_KINDS)}); set --set cluster.kind=... first."
                )
        elif _is_mapping_field(annotation):
            model = None
        else:
            classes = _model_classes(annotation)
            if not classes:
                raise ConfigError(
                    f"override {text!r}: {'.'.join(parts[: depth + 1])} is a value, not a "
                    f"section; write --set {'.'.join(parts[: depth + 1])}=VALUE."
                )
            model = classes[0]
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"override {text!r}: {'.'.join(parts[: depth + 1])} is {child!r} in the file, "
                "not a mapping, so it has no sub-keys to set."
            )
        node = child


# ----------------------------------------------------------------- error formatting


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    if isinstance(value, bool) or value is None:
        text = {True: "true", False: "false", None: "null"}[value]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _display_path(loc: tuple, root_model) -> tuple[tuple, type[BaseModel] | None]:
    """A pydantic error location as the user's key path, and the model owning its last key.

    Pydantic adds the tag of a discriminated union (``('cluster', 'slurm', 'cores')``) and
    the branch of a plain union (``('memory_limit', 'str')``); neither is a key the user
    wrote, so both are left out.
    """
    shown: list = []
    model, owner = root_model, root_model
    parts = iter(loc)
    for part in parts:
        if model is None:
            if isinstance(part, int):
                shown.append(part)  # a list index
            continue  # a union branch label
        owner = model
        shown.append(part)
        if isinstance(part, int) or part not in model.model_fields:
            model = None  # an unknown key (extra_forbidden)
            continue
        classes = _model_classes(model.model_fields[part].annotation)
        if len(classes) > 1:  # discriminated union: the next item is the tag
            model = _CLUSTER_CLASSES.get(next(parts, None))
        else:
            model = classes[0] if classes else None
    return tuple(shown), owner


def _path_text(path: tuple) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _problem_text(error: dict, path: tuple, owner) -> str:
    kind = error["type"]
    msg = error["msg"]
    found = error.get("input")
    if kind == "extra_forbidden":
        section = _path_text(path[:-1])
        allowed = owner.model_fields if owner is not None else []
        return f"found {_short(found)}; " + _unknown_key_text(path[-1], section, allowed)
    if kind == "missing":
        return "missing; this key is required"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = ", ".join(f"'{k}'" for k in CLUSTER_KINDS)
        if kind == "union_tag_not_found":
            return f"missing; must be one of {tags}"
        return f"found {_short(error['ctx']['tag'])}; must be one of {tags}"
    if kind == "literal_error":
        expected = error["ctx"]["expected"].replace("True", "true").replace("False", "false")
        return f"found {_short(found)}; must be {expected}"
    if msg.startswith("Value error, "):
        return f"found {_short(found)}; " + msg[len("Value error, ") :]
    if msg.startswith("Input should be "):
        msg = "must be " + msg[len("Input should be ") :]
    return f"found {_short(found)}; {msg[0].lower() + msg[1:]}"


class _Problem:
    def __init__(self, where: str, key: str, text: str):
        self.where, self.key, self.text = where, key, text

    def __str__(self):
        head = f"{self.where}: {self.key}: " if self.key else f"{self.where}: "
        return head + self.text


def _problems_from(
    exc: ValidationError, doc: _Document, prefix: tuple, root_model, overridden: dict
) -> list[_Problem]:
    problems: dict[str, list[_Problem]] = {}
    for error in exc.errors():
        loc = tuple(error["loc"])
        path, owner = _display_path(loc, root_model)
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path = path + ("kind",)
        full = prefix + path
        key = _path_text(full)
        where = doc.path
        for depth in range(len(full), 0, -1):
            if full[:depth] in overridden:
                where = f"--set {overridden[full[:depth]]}"
                break
            if full[:depth] in doc.lines:
                where = f"{doc.path}:{doc.lines[full[:depth]]}"
                break
        text = _problem_text(error, full, owner)
        problems.setdefault(key, []).append(_Problem(where, key, text))
    merged: list[_Problem] = []
    for items in problems.values():  # one problem per key: "found x; must be a or b"
        text = items[0].text
        for item in items[1:]:
            alternative = item.text.partition("; ")[2] if item.text.startswith("found ") else item.text
            text += " or " + alternative.removeprefix("must be ")
        merged.append(_Problem(items[0].where, items[0].key, text))
    return merged


class _ClusterRoot(BaseModel):
    """Wrapper that gives a cluster mapping's errors the key path ``cluster...``."""

    cluster: ClusterConfig


def _validate_cluster(mapping, doc: _Document, *, in_workflow: bool, overridden: dict):
    """``(config, [])`` or ``(None, problems)`` with keys ``cluster.<key>``.

    ``in_workflow``: the mapping is written inline in the workflow ``doc`` (its lines are
    keyed ``('cluster', ...)``); otherwise ``doc`` is a profile file keyed from its top.
    """
    lines = doc.lines if in_workflow else {("cluster",) + k: v for k, v in doc.lines.items()}
    try:
        return _ClusterRoot.model_validate({"cluster": mapping}).cluster, []
    except ValidationError as exc:
        located = _Document(doc.path, mapping, lines)
        return None, _problems_from(exc, located, (), _ClusterRoot, overridden)


def _strip_cluster_prefix(problems: list[_Problem]) -> list[_Problem]:
    for problem in problems:
        problem.key = problem.key[len("cluster.") :] if problem.key != "cluster" else ""
    return problems


def _problem_order(problem: _Problem):
    file, _, line = problem.where.rpartition(":")
    if problem.where.startswith("--set") or not line.isdigit():
        return (1, problem.where, 0, problem.key)
    return (0, file, int(line), problem.key)


def _config_error(file: str, what: str, problems: list[_Problem], overrides=()) -> ConfigError:
    problems = sorted(problems, key=_problem_order)
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    body = " ".join(f"({i}) {p}." for i, p in enumerate(problems, 1))
    return ConfigError(
        f"Invalid {what} {file} ({count}): {body} Fix the file"
        + (" or the --set overrides" if overrides else "")
        + f" and check it with `dgmm validate {file}`."
    )


# --------------------------------------------------------------------- load_workflow


def load_workflow(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Workflow:
    """Read, override and validate a workflow file.

    Parameters
    ----------
    path : the workflow YAML file.
    overrides : ``'key.path=value'`` strings applied in order (see :func:`parse_override`).

    Returns
    -------
    Workflow, with relative local paths made absolute against the current directory and
    ``cluster`` resolved to a profile model.

    Raises
    ------
    ConfigError
        The file is missing or not valid YAML (with file:line), an override names an
        unknown key, or a value is invalid (every failing key path, the value found and
        what is allowed, with the line of the key or the override that set it).
    """
    path = os.fspath(path)
    doc = _read_yaml(path, "workflow file")
    workflow_dir = os.path.dirname(os.path.abspath(path))
    data = doc.data
    overridden: dict[tuple, str] = {}
    cluster_doc: list[_Document | None] = [None]

    def resolve_cluster(current):
        if current is None:
            return {"kind": "local"}
        if isinstance(current, str):
            profile = _profile_document(current, workflow_dir)
            cluster_doc[0] = profile
            return {"kind": "local"} if profile is None else dict(profile.data)
        return current

    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] == "cluster" and len(parts) == 1:
            cluster_doc[0] = None
        _apply_override(data, parts, value, text, resolve_cluster)
        overridden[parts] = text

    problems: list[_Problem] = []
    cluster_value = data.get("cluster")
    cluster_obj = None
    if isinstance(cluster_value, (str, os.PathLike)):
        profile = _profile_document(os.fspath(cluster_value), workflow_dir)
        if profile is None:
            cluster_obj = LocalClusterConfig()
        else:
            cluster_obj, found = _validate_cluster(
                profile.data, profile, in_workflow=False, overridden={}
            )
            if found:
                raise _config_error(profile.path, "cluster profile", _strip_cluster_prefix(found))
    elif cluster_value is not None:
        source = cluster_doc[0]  # set when --set cluster.x=... changed a named profile
        cluster_obj, found = _validate_cluster(
            cluster_value, source or doc, in_workflow=source is None, overridden=overridden
        )
        problems.extend(found)
    rest = {k: v for k, v in data.items() if k != "cluster"}
    if cluster_obj is not None:
        rest["cluster"] = cluster_obj
    try:
        workflow = Workflow.model_validate(rest, context={"workflow_dir": workflow_dir})
    except ValidationError as exc:
        problems.extend(_problems_from(exc, doc, (), Workflow, overridden))
        workflow = None
    if problems:
        raise _config_error(path, "workflow file", problems, overrides)
    workflow._source_file = os.path.abspath(path)
    workflow._overrides = tuple(overrides)
    return workflow
