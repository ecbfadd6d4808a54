"""The ``model`` and ``select`` sections of a workflow file: what is fitted.

The fields, defaults and bounds of ``model`` come from ``dgmm.core.model_parameters``.
Validation is pure: an init array given as a ``.npy`` path is kept as its path and read
after validation (``dgmm.workflow.loading.read_init_files``).
"""
from __future__ import annotations

import math
import os
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from ..core.families import MCLUST_MODELS, SKLEARN_TYPES, family
from ..core.model_parameters import BY_NAME, ESTIMATORS, WORKFLOW_PARAMETERS
from ..core.types import CovarianceType
from ..data.files import is_url
from ..errors import ConfigError
from .validators import FORBID, key_problem, path_text, positive_size

__all__ = ["ModelConfig", "SelectConfig", "InitFile", "INIT_ARRAY_NAMES"]

#: the model's array parameters: nested lists of numbers or the path of a .npy file
INIT_ARRAY_NAMES = tuple(p.name for p in WORKFLOW_PARAMETERS if p.kind == "array")


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
        return path_text(value)
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


_DeclaredModelFields = create_model("_DeclaredModelFields", __config__=FORBID,
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
    ``variational_bayes`` (``dgmm.BayesianGaussianMixture``, batch variational inference,
    or with ``algorithm: minibatch`` ``dgmm.MiniBatchBayesianGaussianMixture``, stochastic
    variational inference, which takes no ``polish_iter``; ``init_size`` goes with the
    latter only;
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
                raise key_problem("weights_init", weights,
                                   "must be a flat list of n_components weights")
            if len(weights) != k:
                raise key_problem(
                    "weights_init", weights,
                    f"has {len(weights)} weights but n_components is {k}; give one weight "
                    "per component",
                )  # fmt: skip
        means = self.means_init
        if isinstance(means, list):
            if _nesting_depth(means) != 2:
                raise key_problem("means_init", means,
                                   "must be a list of n_components rows of n_features numbers")
            if len(means) != k:
                raise key_problem(
                    "means_init", means,
                    f"has {len(means)} rows but n_components is {k}; give one mean per "
                    "component",
                )  # fmt: skip
        precisions = self.precisions_init
        if isinstance(precisions, list):
            covariance_type = self.covariance_type
            depth = family(covariance_type).depth
            if _nesting_depth(precisions) != depth:
                raise key_problem(
                    "precisions_init", precisions,
                    f"must be nested {depth} deep for covariance_type {covariance_type!r} "
                    "(full: (K, d, d), tied: (d, d), diag: (K, d), spherical: (K,))",
                )  # fmt: skip
            if family(covariance_type).per_component and len(precisions) != k:
                raise key_problem(
                    "precisions_init", precisions,
                    f"has {len(precisions)} entries but n_components is {k}; give one "
                    "precision per component",
                )  # fmt: skip
        return self

    @field_validator("warm_start_from", mode="before")
    @classmethod
    def _warm_start_path(cls, value):
        return None if value is None else path_text(value)

    @model_validator(mode="after")
    def _kind_parameters(self):
        for parameter in WORKFLOW_PARAMETERS:
            own = parameter.model_kind
            if (own is not None and own != self.kind
                    and getattr(self, parameter.name) != parameter.default):
                raise key_problem(
                    parameter.name, "..." if parameter.kind == "array"
                    else getattr(self, parameter.name),
                    f"applies to kind {own!r} only, but model.kind is {self.kind!r}; set "
                    f"model.kind: {own} or remove {parameter.name}",
                )  # fmt: skip
        if self.kind == "variational_bayes" and self.covariance_type not in SKLEARN_TYPES:
            raise key_problem(
                "covariance_type", self.covariance_type,
                f"a variational Bayesian mixture takes {', '.join(SKLEARN_TYPES)} (a "
                "Gaussian-Wishart prior per component); choose one of them",
            )  # fmt: skip
        if self._batch_variational and self.init_size is not None:
            raise key_problem(
                "init_size", self.init_size,
                "batch variational inference starts on all rows, as scikit-learn's "
                "BayesianGaussianMixture; remove init_size, or set model.algorithm: "
                "minibatch (whose start searches a sample of init_size rows)",
            )  # fmt: skip
        if self.kind == "variational_bayes" and self.polish_iter:
            raise key_problem(
                "polish_iter", self.polish_iter,
                "the polish runs maximum-likelihood EM, which a variational Bayesian "
                "mixture does not; remove polish_iter (or set model.kind: "
                "maximum_likelihood)",
            )  # fmt: skip
        return self

    @model_validator(mode="after")
    def _algorithm_parameters(self):
        for parameter in WORKFLOW_PARAMETERS:
            own = parameter.algorithm
            # a default value passes, so that a dumped workflow validates again
            if (own is not None and own != self.algorithm
                    and getattr(self, parameter.name) != parameter.default):
                raise key_problem(
                    parameter.name, getattr(self, parameter.name),
                    f"applies to algorithm {own!r} only, but model.algorithm is "
                    f"{self.algorithm!r}; set model.algorithm: {own} or remove "
                    f"{parameter.name}",
                )  # fmt: skip
        if self.warm_start_from is not None and is_url(self.warm_start_from):
            raise key_problem(
                "warm_start_from", self.warm_start_from,
                "a saved model is a local directory; copy it locally first",
            )  # fmt: skip
        if self.algorithm == "minibatch" and self.n_init != 1:
            raise key_problem(
                "n_init", self.n_init,
                "mini-batch EM runs one initialisation; set n_init: 1",
            )  # fmt: skip
        return self

    @property
    def _batch_variational(self) -> bool:
        return self.kind == "variational_bayes" and self.algorithm == "em"

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
        if self._batch_variational:
            exclude.add("init_size")
        return self.model_dump(mode="json", exclude=exclude)

    def estimator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``dgmm.GaussianMixture``, with ``algorithm:
        minibatch`` ``dgmm.MiniBatchGaussianMixture``, with ``kind: variational_bayes``
        ``dgmm.BayesianGaussianMixture`` or (minibatch)
        ``dgmm.MiniBatchBayesianGaussianMixture`` (array parameters as float64 arrays).

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
            *(("polish_iter",) if self.kind == "variational_bayes" else ()),
            *(("init_size",) if self._batch_variational else ()),
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


#: the selection's own parameters, as ``dgmm.GaussianMixtureSelection`` declares them
_CRITERION, _MEMORY_BUDGET = (next(p for p in ESTIMATORS["GaussianMixtureSelection"]
                                   if p.name == name)
                              for name in ("criterion", "memory_budget"))


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

    model_config = FORBID

    n_components: list[int]
    covariance_type: CovarianceType | Literal["all"] | list[CovarianceType] = "full"
    criterion: _CRITERION.annotation = _CRITERION.default
    memory_budget: _MEMORY_BUDGET.annotation = _MEMORY_BUDGET.default

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
        positive_size(value, "1GiB")
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
