"""The pydantic models mirroring a workflow file: data, model, cluster, checkpoint, outputs.

Every model forbids unknown keys. Validation is pure: it reads no file and no working
directory. Paths are kept as written; ``dgmm.workflow.loading`` makes them absolute, reads
the ``.npy`` init files and resolves cluster profile names after validation.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from typing import Annotated, Any, Literal, NamedTuple, get_args

import yaml
from dask.utils import parse_bytes
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..core.families import MCLUST_MODELS, SKLEARN_TYPES, family
from ..core.model_parameters import BY_NAME, WORKFLOW_PARAMETERS
from ..core.types import CovarianceType, NonFinitePolicy
from ..data.files import format_from_suffix, is_url
from ..engine.passes import DEFAULT_CHUNK_BYTES
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
    "SelectConfig",
    "Workflow",
    "InitFile",
    "Step",
    "STEPS",
    "CLUSTER_KINDS",
    "CLUSTER_CLASSES",
    "CROSS_FIELD_ERROR",
    "INIT_ARRAY_NAMES",
    "cluster_config_from_mapping",
    "is_url",
]

Step = Literal["fit", "predict", "score", "report"]
STEPS: tuple[str, ...] = get_args(Step)
PredictionsFormat = Literal["zarr", "parquet"]
#: the model's array parameters: nested lists of numbers or the path of a .npy file
INIT_ARRAY_NAMES = tuple(p.name for p in WORKFLOW_PARAMETERS if p.kind == "array")

_FORBID = ConfigDict(extra="forbid")

CROSS_FIELD_ERROR = "dgmm_cross_field"
"""Error type of a check across keys: ``ctx`` holds the ``key`` at fault and the value
``found`` there (the error's location is the section holding the key)."""


# ------------------------------------------------------------------------------ helpers


def _key_problem(key: str, found: Any, problem: str) -> PydanticCustomError:
    """The error of a check across keys, attributed to ``key``."""
    return PydanticCustomError(
        CROSS_FIELD_ERROR, "{key}: {problem}", {"key": key, "found": found, "problem": problem}
    )


def _path_text(value):
    """A path as ``str`` (``os.PathLike`` accepted); empty paths refused."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and not value:
        raise ValueError("must be a non-empty path")
    return value  # the str validator reports other types


def _positive_size(value, example: str) -> int:
    """Bytes from an int or a text such as ``'64MiB'`` (``dask.utils.parse_bytes``)."""
    nbytes = None
    if (not isinstance(value, bool) and isinstance(value, (int, float, str))
            and (not isinstance(value, float) or value == int(value))):
        with contextlib.suppress(ValueError, TypeError):
            nbytes = parse_bytes(value)
    if nbytes is None or nbytes <= 0:
        raise ValueError(
            f"must be a positive size: a number of bytes or a number with a unit such as "
            f"'{example}' (kB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)"
        )
    return int(nbytes)


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
    """Validate ``weights_init`` / ``means_init`` / ``precisions_init`` on their own."""
    if value is None:
        return None
    name = info.field_name
    if isinstance(value, (str, os.PathLike)):
        return _path_text(value)
    bounds = BY_NAME[name].bounds
    if bounds and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not value > bounds.get("gt", -math.inf):
            raise ValueError(f"{name} must be a positive number, a nested list of numbers "
                             "or the path of a .npy file")
        return float(value)
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
    apart, drawn with ``seed``; stored in chunks of ``chunk_rows`` rows (default:
    ``dgmm.data.synthetic.STORED_CHUNK_BYTES`` per chunk) on the first run, with
    ``data.dtype``. The arguments of ``dgmm.data.make_gmm_data``.
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
    synthetic: SyntheticConfig | None = None

    _path = field_validator("path", mode="before")(classmethod(lambda cls, v: _path_text(v)))

    @field_validator("columns")
    @classmethod
    def _columns(cls, value):
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one column, or be omitted to use all")
        duplicated = sorted({c for c in value if value.count(c) > 1})
        if duplicated:
            raise ValueError(f"lists the columns {duplicated} more than once")
        return value

    @field_validator("chunk_bytes", mode="before")
    @classmethod
    def _chunk_bytes(cls, value):
        return _positive_size(value, "64MiB")

    @model_validator(mode="after")
    def _fits_the_source(self):
        source = self.source
        if source == "npy" and is_url(self.path) and not self.path.startswith("file://"):
            raise _key_problem(
                "path", self.path,
                f"an npy source must be a local file, found the URL {self.path!r}; copy the "
                "file locally or convert it to Zarr (dgmm make-data)",
            )  # fmt: skip
        if self.array_path is not None and source not in ("zarr", "synthetic"):
            raise _key_problem(
                "array_path", self.array_path,
                f"array_path applies to zarr sources only, but data.source is {source!r}; "
                "remove array_path",
            )  # fmt: skip
        if self.columns is not None and source != "parquet":
            raise _key_problem(
                "columns", self.columns,
                f"columns applies to parquet sources only, but data.source is {source!r}; "
                "remove columns",
            )  # fmt: skip
        if self.storage_options and source == "npy":
            raise _key_problem(
                "storage_options", self.storage_options,
                "npy sources are local files; remove storage_options",
            )  # fmt: skip
        if source == "synthetic" and self.synthetic is None:
            raise _key_problem(
                "synthetic", None,
                "data.source is 'synthetic' but there is no data.synthetic block; add one "
                "with rows, features, components (see workflows/quickstart.yaml)",
            )  # fmt: skip
        if source != "synthetic" and self.synthetic is not None:
            raise _key_problem(
                "synthetic", self.synthetic.model_dump(exclude_unset=True),
                f"applies when data.source is 'synthetic', but it is {source!r}; remove "
                "the synthetic block",
            )  # fmt: skip
        return self

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


class InitFile(NamedTuple):
    """A ``.npy`` init file as read once after validation: its array and its sha256."""

    path: str
    array: Any  # numpy.ndarray of float64
    sha256: str


def _declared_fields() -> dict[str, tuple]:
    """The ``model:`` fields from the one declaration of the model's parameters."""
    fields = {}
    for parameter in WORKFLOW_PARAMETERS:
        if parameter.kind == "array":
            fields[parameter.name] = (InitArray, Field(None, validate_default=False,
                                                       description=parameter.doc))
        else:
            fields[parameter.name] = (parameter.annotation,
                                      Field(**parameter.field_kwargs()))
    return fields


_DeclaredModelFields = create_model("_DeclaredModelFields", __config__=_FORBID,
                                    **_declared_fields())


class ModelConfig(_DeclaredModelFields):
    """The parameters of ``dgmm.GaussianMixture`` (section ``model``).

    The fields, defaults and bounds come from ``dgmm.core.model_parameters`` (the same
    declaration the estimator and the saved model use): scikit-learn's names plus
    ``split_every`` and ``require_convergence`` (exit with the code of
    ``NotConvergedError`` when EM stops at ``max_iter`` without converging).
    ``weights_init``, ``means_init`` and ``precisions_init`` are nested lists of numbers
    or the path of a ``.npy`` file (read by ``dgmm.workflow.loading.read_init_files``).
    ``nonfinite`` comes from ``data.nonfinite``.

    ``algorithm`` chooses the estimator: ``em`` (batch EM, the default) or ``minibatch``
    (``dgmm.MiniBatchGaussianMixture``, stepwise EM; ``max_iter`` counts passes). The
    parameters declared for one algorithm (``batch_size``, ``step_power``,
    ``polish_iter``, ``warm_start_from``) are refused with the other.
    ``warm_start_from`` names a saved mini-batch model whose fit continues on this
    workflow's data.

    ``kind`` chooses what is estimated: ``maximum_likelihood`` (the default) or
    ``variational_bayes`` (``dgmm.BayesianGaussianMixture``, batch variational inference;
    its prior keys ``weight_concentration_prior_type``, ``weight_concentration_prior``,
    ``mean_precision_prior``, ``mean_prior``, ``degrees_of_freedom_prior``,
    ``covariance_prior`` are refused with the other kind, as are the ``*_init`` keys with
    ``variational_bayes``). ``mean_prior`` and ``covariance_prior`` are nested lists or
    ``.npy`` paths like the init arrays; ``covariance_prior`` may be one positive number
    (spherical).
    """

    #: the .npy init files read after validation, by parameter name
    _init_files: dict[str, InitFile] = PrivateAttr(default_factory=dict)

    @field_validator(*INIT_ARRAY_NAMES, mode="before")
    @classmethod
    def _check_init(cls, value, info: ValidationInfo):
        return _init_array(value, info)

    @model_validator(mode="after")
    def _init_shapes(self):
        k = self.n_components
        weights = self.weights_init
        if isinstance(weights, list):
            if _nesting_depth(weights) != 1:
                raise _key_problem("weights_init", weights,
                                   "must be a flat list of n_components weights")
            if len(weights) != k:
                raise _key_problem(
                    "weights_init", weights,
                    f"has {len(weights)} weights but n_components is {k}; give one weight "
                    "per component",
                )  # fmt: skip
        means = self.means_init
        if isinstance(means, list):
            if _nesting_depth(means) != 2:
                raise _key_problem("means_init", means,
                                   "must be a list of n_components rows of n_features numbers")
            if len(means) != k:
                raise _key_problem(
                    "means_init", means,
                    f"has {len(means)} rows but n_components is {k}; give one mean per "
                    "component",
                )  # fmt: skip
        precisions = self.precisions_init
        if isinstance(precisions, list):
            covariance_type = self.covariance_type
            depth = family(covariance_type).depth
            if _nesting_depth(precisions) != depth:
                raise _key_problem(
                    "precisions_init", precisions,
                    f"must be nested {depth} deep for covariance_type {covariance_type!r} "
                    "(full: (K, d, d), tied: (d, d), diag: (K, d), spherical: (K,))",
                )  # fmt: skip
            if family(covariance_type).per_component and len(precisions) != k:
                raise _key_problem(
                    "precisions_init", precisions,
                    f"has {len(precisions)} entries but n_components is {k}; give one "
                    "precision per component",
                )  # fmt: skip
        return self

    @field_validator("warm_start_from", mode="before")
    @classmethod
    def _warm_start_path(cls, value):
        return None if value is None else _path_text(value)

    @model_validator(mode="after")
    def _kind_parameters(self):
        for parameter in WORKFLOW_PARAMETERS:
            own = parameter.model_kind
            if (own is not None and own != self.kind
                    and getattr(self, parameter.name) != parameter.default):
                raise _key_problem(
                    parameter.name, "..." if parameter.kind == "array"
                    else getattr(self, parameter.name),
                    f"applies to kind {own!r} only, but model.kind is {self.kind!r}; set "
                    f"model.kind: {own} or remove {parameter.name}",
                )  # fmt: skip
        if self.kind == "variational_bayes" and self.covariance_type not in SKLEARN_TYPES:
            raise _key_problem(
                "covariance_type", self.covariance_type,
                f"a variational Bayesian mixture takes {', '.join(SKLEARN_TYPES)} (a "
                "Gaussian-Wishart prior per component); choose one of them",
            )  # fmt: skip
        if self.kind == "variational_bayes" and self.algorithm != "em":
            raise _key_problem(
                "kind", self.kind,
                "variational Bayesian mixtures are fitted by batch variational inference; "
                "set model.algorithm: em",
            )  # fmt: skip
        return self

    @model_validator(mode="after")
    def _algorithm_parameters(self):
        for parameter in WORKFLOW_PARAMETERS:
            own = parameter.algorithm
            # a default value passes, so that a dumped workflow validates again
            if (own is not None and own != self.algorithm
                    and getattr(self, parameter.name) != parameter.default):
                raise _key_problem(
                    parameter.name, getattr(self, parameter.name),
                    f"applies to algorithm {own!r} only, but model.algorithm is "
                    f"{self.algorithm!r}; set model.algorithm: {own} or remove "
                    f"{parameter.name}",
                )  # fmt: skip
        if self.warm_start_from is not None and is_url(self.warm_start_from):
            raise _key_problem(
                "warm_start_from", self.warm_start_from,
                "a saved model is a local directory; copy it locally first",
            )  # fmt: skip
        if self.algorithm == "minibatch" and self.n_init != 1:
            raise _key_problem(
                "n_init", self.n_init,
                "mini-batch EM runs one initialisation; set n_init: 1",
            )  # fmt: skip
        return self

    def settings_payload(self) -> dict[str, Any]:
        """The fields that change the fitted numbers, as JSON: those of another
        ``algorithm`` are left out, and so is ``algorithm: em`` itself, so a batch EM
        workflow hashes as it did before mini-batch EM existed."""
        exclude = {p.name for p in WORKFLOW_PARAMETERS
                   if not p.changes_fit or (p.algorithm not in (None, self.algorithm))
                   or p.model_kind not in (None, self.kind)}
        if self.algorithm == "em":
            exclude.add("algorithm")
        if self.kind == "maximum_likelihood":
            exclude.add("kind")
        return self.model_dump(mode="json", exclude=exclude)

    def estimator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``dgmm.GaussianMixture``, with ``algorithm:
        minibatch`` ``dgmm.MiniBatchGaussianMixture``, with ``kind: variational_bayes``
        ``dgmm.BayesianGaussianMixture`` (array parameters as float64 arrays).

        Excludes ``require_convergence`` (a workflow setting), ``algorithm``,
        ``warm_start_from`` (the runner reads that model), the parameters of another
        algorithm, ``client`` and ``nonfinite`` (see ``Workflow.estimator_kwargs``). An
        init array given as a file must have been read
        (``dgmm.workflow.loading.read_init_files``, which ``load_workflow`` calls); otherwise
        ``ConfigError``.
        """
        import numpy as np

        kwargs = self.model_dump(exclude={
            "require_convergence", "algorithm", "warm_start_from", "kind",
            *(p.name for p in WORKFLOW_PARAMETERS
              if p.algorithm not in (None, self.algorithm)
              or p.model_kind not in (None, self.kind))})
        for name in INIT_ARRAY_NAMES:
            if name not in kwargs or isinstance(kwargs[name], float):
                continue
            value = kwargs[name]
            if isinstance(value, list):
                kwargs[name] = np.asarray(value, dtype=np.float64)
            elif value is not None:
                kwargs[name] = self.init_file(name).array
        return kwargs

    def init_file(self, name: str) -> InitFile:
        """The read ``.npy`` file of init parameter ``name``; ``ConfigError`` if unread."""
        found = self._init_files.get(name)
        if found is None or found.path != getattr(self, name):
            raise ConfigError(
                f"model.{name}: the .npy file {getattr(self, name)!r} has not been read. "
                "Load the workflow with dgmm.workflow.loading.load_workflow, or call "
                "dgmm.workflow.loading.read_init_files(workflow) after building it."
            )
        return found


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

    ``None`` values are derived from the machine (see
    ``dgmm.workflow.cluster.local_cluster_kwargs``): with ``processes: true`` one
    single-threaded worker process per core; with ``processes: false`` one in-process
    worker with a thread per core; ``memory_limit`` the machine's memory divided among the
    workers.
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
    address_env: str | None = None
    timeout: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _one_of(self):
        if self.address_env is None and self.address is None:
            raise _key_problem(
                "address_env", None,
                "a scheduler address is needed: set address (e.g. tcp://10.0.0.5:8786) or "
                "address_env (the name of an environment variable holding it)",
            )  # fmt: skip
        if self.address_env is not None and self.address is not None:
            raise _key_problem(
                "address_env", self.address_env,
                f"give address or address_env, not both (found address={self.address!r})",
            )  # fmt: skip
        return self

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

    @model_validator(mode="after")
    def _order(self):
        if self.maximum < self.minimum:
            raise _key_problem("maximum", self.maximum, f"must be >= minimum ({self.minimum})")
        return self


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
            raise _key_problem(
                "processes", self.processes,
                f"must be <= cores ({self.cores}): each worker process needs a core",
            )  # fmt: skip
        if self.adaptive is not None and self.jobs is not None:
            raise _key_problem(
                "adaptive", self.adaptive.model_dump(),
                "give either jobs (a fixed number of batch jobs) or adaptive "
                "(minimum/maximum), not both",
            )  # fmt: skip
        return self

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


# ------------------------------------------------------------------ checkpoint, outputs


class CheckpointConfig(BaseModel):
    """Section ``checkpoint``: ``dir`` (None disables), save ``every`` N iterations, ``keep``;
    ``storage_options`` for a URL ``dir`` (None: those of the data section)."""

    model_config = _FORBID

    dir: str | None = None
    every: int = Field(1, ge=1)
    keep: int = Field(3, ge=1)
    storage_options: dict[str, Any] | None = None

    _dir = field_validator("dir", mode="before")(classmethod(lambda cls, v: _path_text(v)))


class OutputsConfig(BaseModel):
    """Section ``outputs``: where the model, the predictions and the report go.

    ``predictions_format`` defaults to the suffix of ``predictions`` (``.zarr`` or
    ``.parquet``/``.pq``). ``report`` is a directory (``report.json`` and PNG plots).
    """

    model_config = _FORBID

    model: str | None = None
    predictions: str | None = None
    predictions_format: PredictionsFormat | None = None
    report: str | None = None
    #: fsspec options for a URL ``predictions`` (None: those of the data section)
    storage_options: dict[str, Any] | None = None

    _paths = field_validator("model", "predictions", "report", mode="before")(
        classmethod(lambda cls, v: _path_text(v))
    )

    @model_validator(mode="after")
    def _format_from_suffix(self):
        if self.predictions_format is not None or self.predictions is None:
            return self
        fmt = format_from_suffix(self.predictions)
        if fmt is None:
            raise _key_problem(
                "predictions_format", None,
                f"cannot tell the format of outputs.predictions {self.predictions!r} from "
                "its suffix; name it *.zarr or *.parquet, or set predictions_format: zarr | "
                "parquet",
            )  # fmt: skip
        self.predictions_format = fmt
        return self


# -------------------------------------------------------------------------- select


def _components_range(value: dict) -> list[int]:
    """The values of K of a ``{start, stop, step}`` mapping (stop included)."""
    unknown = sorted(set(value) - {"start", "stop", "step"})
    if unknown:
        raise ValueError(f"has the unknown keys {unknown}: a range of K takes start, stop "
                         "and step")
    bounds = {}
    for key in ("start", "stop", "step"):
        if key not in value and key != "step":
            raise ValueError(f"a range of K needs start and stop (stop included), e.g. "
                             f"{{start: 1, stop: 8}}; {key} is missing")
        number = value.get(key, 1)
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ValueError(f"{key} must be an integer >= 1, found {number!r}")
        bounds[key] = number
    if bounds["stop"] < bounds["start"]:
        raise ValueError(f"stop ({bounds['stop']}) is below start ({bounds['start']}), so "
                         "the grid of K is empty; give stop >= start (stop is included)")
    return list(range(bounds["start"], bounds["stop"] + 1, bounds["step"]))


class SelectConfig(BaseModel):
    """Section ``select``: fit a grid of K x covariance type, keep the best by ``criterion``.

    ``n_components`` is a list of K or a ``{start, stop, step}`` range (stop included,
    kept as the list of its values);
    ``covariance_type`` a name, a list of names, or ``all`` for mclust's fourteen models
    (EII ... VVV); ``criterion`` ``bic``, ``aic`` or ``icl`` (lower is better; ``icl``
    costs one more pass); ``memory_budget`` the bytes per chunk task the live candidates may take
    (above it the grid runs in waves; it does not change the numbers). Every other
    parameter comes from the ``model`` section. See ``dgmm.GaussianMixtureSelection``.
    """

    model_config = _FORBID

    n_components: list[int]
    covariance_type: CovarianceType | Literal["all"] | list[CovarianceType] = "full"
    criterion: Literal["bic", "aic", "icl"] = "bic"
    memory_budget: int | str = "1GiB"

    @field_validator("n_components", mode="before")
    @classmethod
    def _ks(cls, value):
        if isinstance(value, bool):
            return value  # refused by the int check below
        if isinstance(value, int):
            value = [value]
        if isinstance(value, dict):
            value = _components_range(value)
        if isinstance(value, list):
            if not value:
                raise ValueError("is an empty grid: list at least one number of components "
                                 "K, e.g. [2, 4, 8], or give {start: 1, stop: 8}")
            below = [k for k in value if isinstance(k, int) and not isinstance(k, bool)
                     and k < 1]
            if below:
                raise ValueError(f"holds K = {below}: every K must be an integer >= 1; "
                                 "remove those values")
            repeated = sorted({k for k in value if value.count(k) > 1})
            if repeated:
                raise ValueError(f"lists {repeated} more than once; give each K once")
        return value

    @field_validator("covariance_type")
    @classmethod
    def _types(cls, value):
        if isinstance(value, list):
            if not value:
                raise ValueError("is an empty list: give at least one of full, tied, diag, "
                                 "spherical, mclust's EII ... VVV, or all")
            repeated = sorted({c for c in value if value.count(c) > 1})
            if repeated:
                raise ValueError(f"lists {repeated} more than once; give each type once")
        return value

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _budget(cls, value):
        _positive_size(value, "1GiB")
        return value

    def ks(self) -> list[int]:
        """The values of K, in the order given."""
        return list(self.n_components)

    def covariance_types(self) -> list[str]:
        types = self.covariance_type
        if types == "all":
            return list(MCLUST_MODELS)
        return [types] if isinstance(types, str) else list(types)

    def payload(self) -> dict[str, Any]:
        """What changes the fitted numbers: the grid and the criterion (it picks the
        model)."""
        return {"n_components": self.ks(), "covariance_type": self.covariance_types(),
                "criterion": self.criterion}


# -------------------------------------------------------------------------- workflow


class Workflow(BaseModel):
    """A whole workflow file. Build it with ``dgmm.workflow.loading.load_workflow``."""

    model_config = _FORBID

    name: str | None = None
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    cluster: ClusterConfig = Field(default_factory=LocalClusterConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    select: SelectConfig | None = None
    steps: list[Step] = Field(default_factory=lambda: ["fit", "predict", "report"])

    _source_file: str | None = PrivateAttr(default=None)
    _overrides: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("cluster", mode="before")
    @classmethod
    def _no_profile_name(cls, value):
        if isinstance(value, (str, os.PathLike)):
            raise ValueError(
                f"the profile name {os.fspath(value)!r} is looked up when a workflow file "
                "is loaded (dgmm.workflow.loading.load_workflow); in code, pass the profile "
                "itself: dgmm.workflow.loading.load_cluster_profile(name)"
            )
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, value):
        if not value:
            raise ValueError(f"must list at least one step from {list(STEPS)}")
        repeated = sorted({s for s in value if value.count(s) > 1})
        if repeated:
            raise ValueError(f"lists {repeated} more than once; give each step once")
        return value

    @model_validator(mode="after")
    def _steps_have_their_outputs(self):
        steps, outputs = self.steps, self.outputs
        needs = {"predict": ("predictions", "a .zarr or .parquet path"),
                 "report": ("report", "a directory")}  # fmt: skip
        for step, (key, what) in needs.items():
            if step in steps and getattr(outputs, key) is None:
                raise _key_problem(
                    "steps", steps,
                    f"step {step!r} writes to outputs.{key}, which is not set; set "
                    f"outputs.{key} ({what}) or remove {step!r} from steps",
                )  # fmt: skip
        if "fit" not in steps and outputs.model is None:
            raise _key_problem(
                "steps", steps,
                "has no 'fit' step, so the model is read from outputs.model, which is not "
                "set; add 'fit' to steps or set outputs.model to a saved model",
            )  # fmt: skip
        return self

    @model_validator(mode="after")
    def _select_takes_k_and_type(self):
        if self.select is None:
            return self
        model = self.model
        for name in ("n_components", "covariance_type"):
            default = type(model).model_fields[name].default
            if getattr(model, name) != default:
                raise _key_problem(
                    f"model.{name}", getattr(model, name),
                    f"the select section chooses {name}: remove model.{name} (or the "
                    "select section to fit one model)",
                )  # fmt: skip
        if model.kind != "maximum_likelihood":
            raise _key_problem(
                "model.kind", model.kind,
                "the select section compares maximum-likelihood fits by an information "
                "criterion; a variational Bayesian mixture chooses its components through "
                "its prior: set model.kind: maximum_likelihood, or remove the select section",
            )  # fmt: skip
        for name in INIT_ARRAY_NAMES:
            if getattr(model, name) is not None:
                raise _key_problem(
                    f"model.{name}", "...",
                    f"initial arrays fit one K, but the select section fits a grid of K: "
                    f"remove model.{name} (or the select section)",
                )  # fmt: skip
        if model.warm_start:
            raise _key_problem(
                "model.warm_start", True,
                "the select section starts every candidate from its own initialisation: "
                "set warm_start: false",
            )  # fmt: skip
        if model.algorithm != "em":
            raise _key_problem(
                "model.algorithm", model.algorithm,
                "the select section fits its grid by batch EM: set model.algorithm: em, "
                "or remove the select section",
            )  # fmt: skip
        if model.warm_start_from is not None:
            raise _key_problem(
                "model.warm_start_from", model.warm_start_from,
                "the select section starts every candidate from its own initialisation: "
                "remove model.warm_start_from (or the select section)",
            )  # fmt: skip
        return self

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

        Data: source, path, array_path, columns, dtype, nonfinite and the synthetic block;
        not ``storage_options`` (credentials, endpoints), ``chunk_bytes`` or ``persist``
        (performance). Model: every parameter except ``verbose``, ``verbose_interval`` and
        ``require_convergence``, and those of another ``algorithm`` (``algorithm: em``
        itself is left out); ``warm_start_from`` by its path (the runner adds the saved
        model's checksum to its stamps); an init array given as a file is represented by
        its path and the sha256 of the bytes read (see ``ModelConfig.init_file``). Select
        (when given): the grid and the criterion, not ``memory_budget``.
        """
        data = self.data.model_dump(
            mode="json", exclude={"storage_options", "chunk_bytes", "persist"}
        )
        model = self.model.settings_payload()
        for name in INIT_ARRAY_NAMES:
            if isinstance(model.get(name), str):
                model[name] = {"file": model[name], "sha256": self.model.init_file(name).sha256}
        payload = {"schema": "dgmm-settings-1", "data": data, "model": model}
        if self.select is not None:  # absent otherwise: one-model hashes stay as they were
            payload["select"] = self.select.payload()
        return payload

    def settings_hash(self) -> str:
        """Stable sha256 (hex) of :meth:`settings_payload`, for checkpoints and re-runs."""
        text = json.dumps(self.settings_payload(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_yaml(self) -> str:
        """The validated workflow as YAML: defaults filled in, the cluster profile inlined
        (what ``dgmm validate`` can show; loading it gives this workflow)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
