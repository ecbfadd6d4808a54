"""The pydantic models mirroring a workflow file: the whole ``Workflow`` and its sections
``data``, ``checkpoint`` and ``outputs`` (``model`` and ``select`` are in
``dgmm.workflow.model_config``, ``cluster`` in ``dgmm.workflow.cluster_config``).

Every model forbids unknown keys. Validation is pure: it reads no file and no working
directory. Paths are kept as written; ``dgmm.workflow.loading`` makes them absolute, reads
the ``.npy`` init files and resolves cluster profile names after validation.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from ..core.types import CovarianceType, NonFinitePolicy
from ..data.files import format_from_suffix, is_url
from ..engine.passes import DEFAULT_CHUNK_BYTES
from .cluster_config import ClusterConfig, LocalClusterConfig
from .drift import DriftThresholds
from .model_config import INIT_ARRAY_NAMES, ModelConfig, SelectConfig
from .validators import FORBID, key_problem, path_text, positive_size

__all__ = [
    "SyntheticConfig",
    "DataConfig",
    "CheckpointConfig",
    "OutputsConfig",
    "Workflow",
    "Step",
    "STEPS",
]

Step = Literal["fit", "predict", "score", "report"]
STEPS: tuple[str, ...] = get_args(Step)
PredictionsFormat = Literal["zarr", "parquet"]


# ---------------------------------------------------------------------------- data


class SyntheticConfig(BaseModel):
    """How to generate the synthetic data set written to ``data.path`` (a Zarr store).

    A mixture of ``components`` Gaussians in ``features`` dimensions (``covariance_type``
    of the generating mixture), the two closest means ``separation`` standard deviations
    apart, drawn with ``seed``; stored in chunks of ``chunk_rows`` rows (default:
    ``dgmm.data.synthetic.STORED_CHUNK_BYTES`` per chunk) on the first run, with
    ``data.dtype``. The arguments of ``dgmm.data.make_gmm_data``.
    """

    model_config = FORBID

    rows: int = Field(200_000, gt=0)
    features: int = Field(2, gt=0)
    components: int = Field(4, gt=0)
    covariance_type: CovarianceType = "full"
    seed: int = Field(0, ge=0)
    chunk_rows: int | None = Field(None, gt=0)
    separation: float = Field(4.0, gt=0)


class DataConfig(BaseModel):
    """Where the rows come from (section ``data``)."""

    model_config = FORBID

    source: Literal["zarr", "parquet", "npy", "synthetic"]
    path: str
    array_path: str | None = None
    columns: list[str] | None = None
    dtype: Literal["float64", "float32"] = "float64"
    storage_options: dict[str, Any] = Field(default_factory=dict)
    nonfinite: NonFinitePolicy = "raise"
    #: None: the default task size of ``dgmm.engine.tasks`` for the cluster's workers
    chunk_bytes: int | None = None
    persist: Literal["auto", True, False] = "auto"
    synthetic: SyntheticConfig | None = None

    _path = field_validator("path", mode="before")(classmethod(lambda cls, v: path_text(v)))

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
        return None if value is None else positive_size(value, "64MiB")

    @model_validator(mode="after")
    def _fits_the_source(self):
        source = self.source
        if source == "npy" and is_url(self.path) and not self.path.startswith("file://"):
            raise key_problem(
                "path", self.path,
                f"an npy source must be a local file, found the URL {self.path!r}; copy the "
                "file locally or convert it to Zarr (dgmm make-data)",
            )  # fmt: skip
        if self.array_path is not None and source not in ("zarr", "synthetic"):
            raise key_problem(
                "array_path", self.array_path,
                f"array_path applies to zarr sources only, but data.source is {source!r}; "
                "remove array_path",
            )  # fmt: skip
        if self.columns is not None and source != "parquet":
            raise key_problem(
                "columns", self.columns,
                f"columns applies to parquet sources only, but data.source is {source!r}; "
                "remove columns",
            )  # fmt: skip
        if self.storage_options and source == "npy":
            raise key_problem(
                "storage_options", self.storage_options,
                "npy sources are local files; remove storage_options",
            )  # fmt: skip
        if source == "synthetic" and self.synthetic is None:
            raise key_problem(
                "synthetic", None,
                "data.source is 'synthetic' but there is no data.synthetic block; add one "
                "with rows, features, components (see workflows/quickstart.yaml)",
            )  # fmt: skip
        if source != "synthetic" and self.synthetic is not None:
            raise key_problem(
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
        kwargs: dict[str, Any] = {"dtype": self.dtype,
                                  "target_chunk_bytes": self.chunk_bytes or DEFAULT_CHUNK_BYTES}
        if self.reader_kind == "zarr":
            kwargs["array_path"] = self.array_path
        if self.reader_kind == "parquet":
            kwargs["columns"] = self.columns
        if self.reader_kind != "npy":
            kwargs["storage_options"] = dict(self.storage_options)
        return kwargs


# ------------------------------------------------------------------ checkpoint, outputs


class CheckpointConfig(BaseModel):
    """Section ``checkpoint``: ``dir`` (None disables), save ``every`` N iterations, ``keep``;
    ``storage_options`` for a URL ``dir`` (None: those of the data section)."""

    model_config = FORBID

    dir: str | None = None
    every: int = Field(1, ge=1)
    keep: int = Field(3, ge=1)
    storage_options: dict[str, Any] | None = None

    _dir = field_validator("dir", mode="before")(classmethod(lambda cls, v: path_text(v)))


class OutputsConfig(BaseModel):
    """Section ``outputs``: where the model, the predictions and the report go.

    ``predictions_format`` defaults to the suffix of ``predictions`` (``.zarr`` or
    ``.parquet``/``.pq``). ``report`` is a directory (``report.json`` and PNG plots).
    """

    model_config = FORBID

    model: str | None = None
    predictions: str | None = None
    predictions_format: PredictionsFormat | None = None
    report: str | None = None
    #: fsspec options for a URL ``predictions`` (None: those of the data section)
    storage_options: dict[str, Any] | None = None

    _paths = field_validator("model", "predictions", "report", mode="before")(
        classmethod(lambda cls, v: path_text(v))
    )

    @model_validator(mode="after")
    def _format_from_suffix(self):
        if self.predictions_format is not None or self.predictions is None:
            return self
        fmt = format_from_suffix(self.predictions)
        if fmt is None:
            raise key_problem(
                "predictions_format", None,
                f"cannot tell the format of outputs.predictions {self.predictions!r} from "
                "its suffix; name it *.zarr or *.parquet, or set predictions_format: zarr | "
                "parquet",
            )  # fmt: skip
        self.predictions_format = fmt
        return self


# -------------------------------------------------------------------------- workflow


class Workflow(BaseModel):
    """A whole workflow file. Build it with ``dgmm.workflow.loading.load_workflow``."""

    model_config = FORBID

    name: str | None = None
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    cluster: ClusterConfig = Field(default_factory=LocalClusterConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    select: SelectConfig | None = None
    #: drift thresholds for scoring against a saved model (not part of the settings hash)
    monitor: DriftThresholds | None = None
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
                raise key_problem(
                    "steps", steps,
                    f"step {step!r} writes to outputs.{key}, which is not set; set "
                    f"outputs.{key} ({what}) or remove {step!r} from steps",
                )  # fmt: skip
        if "fit" not in steps and outputs.model is None:
            raise key_problem(
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
                raise key_problem(
                    f"model.{name}", getattr(model, name),
                    f"the select section chooses {name}: remove model.{name} (or the "
                    "select section to fit one model)",
                )  # fmt: skip
        if model.kind != "maximum_likelihood":
            raise key_problem(
                "model.kind", model.kind,
                "the select section compares maximum-likelihood fits by an information "
                "criterion; a variational Bayesian mixture chooses its components through "
                "its prior: set model.kind: maximum_likelihood, or remove the select section",
            )  # fmt: skip
        for name in INIT_ARRAY_NAMES:
            if getattr(model, name) is not None:
                raise key_problem(
                    f"model.{name}", "...",
                    f"initial arrays fit one K, but the select section fits a grid of K: "
                    f"remove model.{name} (or the select section)",
                )  # fmt: skip
        if model.warm_start:
            raise key_problem(
                "model.warm_start", True,
                "the select section starts every candidate from its own initialisation: "
                "set warm_start: false",
            )  # fmt: skip
        if model.algorithm != "em":
            raise key_problem(
                "model.algorithm", model.algorithm,
                "the select section fits its grid by batch EM: set model.algorithm: em, "
                "or remove the select section",
            )  # fmt: skip
        if model.warm_start_from is not None:
            raise key_problem(
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
