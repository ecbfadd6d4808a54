"""The parameters of a Gaussian mixture model, declared once.

Each ``ModelParameter`` gives a name, default, kind (``int``, ``float``, ``bool``,
``choice``, ``seed``, ``array``, ``object``), bounds or options, where it is used and a
one-line doc. The estimator's ``_parameter_constraints``, the engine's ``EMSettings``
(``ENGINE_SETTINGS``), the ``SAVED`` entries of ``model.json`` and the workflow's
``model:`` section (``WORKFLOW_PARAMETERS``, via ``annotation`` and ``field_kwargs``) all
come from this table. See docs/design.md, "Model parameters declared once".
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from .families import COVARIANCE_TYPES, SKLEARN_TYPES
from .types import INIT_PARAMS, MODEL_KINDS, NONFINITE_POLICIES, WEIGHT_PRIOR_TYPES

KINDS = ("int", "float", "bool", "choice", "seed", "array", "path", "size", "count",
         "object")
#: how a workflow fits: batch EM (``GaussianMixture``) or stepwise EM on mini-batches
#: (``MiniBatchGaussianMixture``)
ALGORITHMS = ("em", "minibatch")


@dataclass(frozen=True)
class ModelParameter:
    """One parameter of the model.

    name, default, kind (one of ``KINDS``), doc: a one-line description;
    ge, gt, le, lt: bounds of an ``int``, ``float`` or ``seed`` (None: unbounded);
    options: the allowed strings of a ``choice``;
    estimator: a constructor parameter of ``dgmm.GaussianMixture``;
    engine: a field of the engine's ``EMSettings``;
    saved: recorded in a saved model's ``model.json``;
    workflow: a field of a workflow's ``model:`` section;
    changes_fit: changes the fitted numbers (part of a workflow's settings hash);
    algorithm: None for a parameter of every fit, else the one workflow ``algorithm``
    it belongs to (``'minibatch'``: a parameter of ``MiniBatchGaussianMixture`` only, left
    out of GaussianMixture and of the settings hash of a batch EM workflow);
    model_kind: None for a parameter of every kind of model, else the one kind
    (``MODEL_KINDS``) it belongs to: the prior of ``BayesianGaussianMixture``
    ('variational_bayes'), the initial parameters of ``GaussianMixture``
    ('maximum_likelihood');
    grid: the estimator also takes a list of values, one candidate each
    (``GaussianMixtureSelection``'s ``n_components`` and ``covariance_type``).
    A ``size`` is a number of bytes (>= ``ge``) or a text such as ``'1GiB'``; a ``count``
    an int (>= ``ge``) or None for a value chosen automatically. A ``float``
    whose default is None also takes None (e.g. a prior computed from the data); an
    ``array`` with bounds also takes one number within them.
    """

    name: str
    default: Any
    kind: str
    doc: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    options: tuple[str, ...] = ()
    estimator: bool = True
    engine: bool = False
    saved: bool = False
    workflow: bool = True
    changes_fit: bool = True
    algorithm: str | None = None
    model_kind: str | None = None
    grid: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if (self.kind == "choice") != bool(self.options):
            raise ValueError(f"{self.name}: options go with kind 'choice' only")
        if self.algorithm is not None and self.algorithm not in ALGORITHMS:
            raise ValueError(f"{self.name}: algorithm must be one of {ALGORITHMS}")
        if self.model_kind is not None and self.model_kind not in MODEL_KINDS:
            raise ValueError(f"{self.name}: model_kind must be one of {MODEL_KINDS}")

    @property
    def bounds(self) -> dict[str, float]:
        """The bounds that are set, e.g. ``{'ge': 1}``."""
        return {key: value for key in ("ge", "gt", "le", "lt")
                if (value := getattr(self, key)) is not None}

    @property
    def annotation(self):
        """The Python type of a value given in a configuration file."""
        if self.kind == "choice":
            return Literal[self.options]
        if self.kind in ("seed", "count"):
            return int | None
        if self.kind == "path":
            return str | None
        if self.kind == "float" and self.default is None:
            return float | None
        if self.kind == "size":
            return int | str
        return {"int": int, "float": float, "bool": bool}.get(self.kind, Any)

    def field_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a pydantic ``Field``: default, bounds, description."""
        return {"default": self.default, **self.bounds, "description": self.doc}

    def coerce(self, value):
        """``value`` as the plain Python type of its kind (e.g. a NumPy int as ``int``)."""
        if self.kind == "int" or (self.kind == "count" and value is not None):
            return int(value)
        if self.kind == "float":
            return None if value is None else float(value)
        if self.kind == "bool":
            return bool(value)
        return value


def _minibatch(name, default, kind, doc, **kwargs) -> ModelParameter:
    """A parameter of ``MiniBatchGaussianMixture`` only, saved with its models."""
    return ModelParameter(name, default, kind, doc, estimator=False, saved=True,
                          algorithm="minibatch", **kwargs)


def _prior(name, default, kind, doc, **kwargs) -> ModelParameter:
    """A parameter of ``BayesianGaussianMixture`` only (its prior), saved with its models."""
    return ModelParameter(name, default, kind, doc, saved=True,
                          model_kind="variational_bayes", **kwargs)


def _fit(name, default, kind, doc, **kwargs) -> ModelParameter:
    """A parameter that goes to the engine and into the saved model."""
    return ModelParameter(name, default, kind, doc, engine=True, saved=True, **kwargs)


PARAMETERS: tuple[ModelParameter, ...] = (
    _fit("n_components", 1, "int", "Number of mixture components K.", ge=1),
    _fit("covariance_type", "full", "choice", "Form of each component's covariance.",
         options=COVARIANCE_TYPES),
    _fit("tol", 1e-3, "float",
         "Convergence threshold on the change of the mean log-likelihood.", ge=0),
    _fit("reg_covar", 1e-6, "float", "Added to the covariance diagonals.", ge=0),
    _fit("max_iter", 100, "int", "EM iterations per initialisation.", ge=0),
    _fit("n_init", 1, "int", "Initialisations; the best lower bound is kept.", ge=1),
    _fit("init_params", "kmeans", "choice", "How the initial parameters are chosen.",
         options=INIT_PARAMS),
    # both kinds: the search of maximum likelihood, or the online variational start (a
    # batch variational workflow refuses it: it starts on all rows, as scikit-learn's)
    _fit("init_size", None, "count",
         "Rows of the in-memory sample the initial search runs on (None: from K, d and "
         "tol; 0: no sample, the initialisation reads all rows).", ge=0),
    ModelParameter("weights_init", None, "array",
                   "User-given initial weights, shape (K,).", model_kind="maximum_likelihood"),
    ModelParameter("means_init", None, "array",
                   "User-given initial means, shape (K, d).", model_kind="maximum_likelihood"),
    ModelParameter("precisions_init", None, "array",
                   "User-given initial precisions, shaped as the covariances: (K, d, d) "
                   "full, (d, d) tied, (K, d) diag, (K,) spherical.",
                   model_kind="maximum_likelihood"),
    ModelParameter("random_state", None, "seed", "Seed of the initialisations.",
                   ge=0, lt=2**32, saved=True),
    ModelParameter("warm_start", False, "bool",
                   "Start the next fit from the last fitted parameters."),
    ModelParameter("verbose", 0, "int", "Print progress (1) and timings (2).", ge=0,
                   changes_fit=False),
    ModelParameter("verbose_interval", 10, "int", "Iterations between progress lines.",
                   ge=1, changes_fit=False),
    ModelParameter("client", None, "object",
                   "The distributed.Client to run on (None: the default scheduler).",
                   workflow=False, changes_fit=False),
    _fit("split_every", 8, "int", "Fan-in of the reduction tree.", ge=2),
    # a workflow sets this in its data section (data.nonfinite), not in model:
    _fit("nonfinite", "raise", "choice", "Rows holding NaN or inf: an error, or skipped.",
         options=NONFINITE_POLICIES, workflow=False),
    ModelParameter("require_convergence", False, "bool",
                   "Fail (exit code 5) when EM stops at max_iter without converging.",
                   estimator=False, changes_fit=False),
    # the workflow's choice of estimator; a batch EM workflow's hash leaves it out
    ModelParameter("algorithm", "em", "choice",
                   "Batch EM (em) or stepwise EM on mini-batches (minibatch).",
                   options=ALGORITHMS, estimator=False),
    # what the fit estimates; a maximum-likelihood workflow's hash leaves it out
    ModelParameter("kind", "maximum_likelihood", "choice",
                   "Maximum-likelihood EM (maximum_likelihood) or the variational posterior "
                   "of a Bayesian mixture (variational_bayes).",
                   options=MODEL_KINDS, estimator=False),
    _prior("weight_concentration_prior_type", "dirichlet_process", "choice",
           "Prior on the weights: a Dirichlet process (stick-breaking) or a Dirichlet "
           "distribution.", options=WEIGHT_PRIOR_TYPES),
    _prior("weight_concentration_prior", None, "float",
           "gamma_0 (Dirichlet process) or alpha_0 (Dirichlet); None: 1 / n_components.",
           gt=0),
    _prior("mean_precision_prior", None, "float",
           "beta_0, the precision of the prior on the means; None: 1.", gt=0),
    _prior("mean_prior", None, "array", "m_0, shape (d,); None: the mean of the data."),
    _prior("degrees_of_freedom_prior", None, "float",
           "nu_0 of the Wishart prior (> n_features - 1); None: n_features.", gt=0),
    _prior("covariance_prior", None, "array",
           "W_0^-1, shaped as one component's covariance (a number for spherical); "
           "None: the covariance of the data.", gt=0),
    _minibatch("batch_size", 32768, "int", "Rows per step of stepwise EM.", ge=1),
    _minibatch("step_power", 0.6, "float",
               "alpha of the step size eta_t = (t + 2)^(-alpha).", gt=0.5, le=1.0),
    _minibatch("polish_iter", 0, "int",
               "Batch EM iterations run from the stepwise result.", ge=0),
    _minibatch("wave_width", 8, "int",
               "Chunks stepped side by side from one state; their running statistics "
               "are averaged after each wave.", ge=1),
    ModelParameter("warm_start_from", None, "path",
                   "A saved mini-batch model whose fit continues on this data "
                   "(its running statistics and step counter).",
                   estimator=False, algorithm="minibatch"),
)

BY_NAME: dict[str, ModelParameter] = {p.name: p for p in PARAMETERS}
#: the constructor parameters of ``GaussianMixture``
ESTIMATOR_PARAMETERS: tuple[ModelParameter, ...] = tuple(
    p for p in PARAMETERS if p.estimator and p.model_kind in (None, "maximum_likelihood"))
WORKFLOW_PARAMETERS: tuple[ModelParameter, ...] = tuple(p for p in PARAMETERS if p.workflow)
ENGINE_SETTINGS: tuple[str, ...] = tuple(p.name for p in PARAMETERS if p.engine)
SAVED: tuple[str, ...] = tuple(p.name for p in PARAMETERS if p.saved)
DEFAULTS: dict[str, Any] = {p.name: p.default for p in PARAMETERS}
#: the constructor parameters of ``MiniBatchGaussianMixture`` beyond GaussianMixture's
MINIBATCH_PARAMETERS: tuple[ModelParameter, ...] = tuple(
    p for p in PARAMETERS if p.algorithm == "minibatch" and p.saved)

#: ``MiniBatchGaussianMixture``: GaussianMixture's parameters (one initialisation: stepwise
#: EM runs a single chain), then its own
MINIBATCH_ESTIMATOR_PARAMETERS: tuple[ModelParameter, ...] = tuple(
    replace(p, le=1, doc="Initialisations: stepwise EM runs one.") if p.name == "n_init"
    else p for p in ESTIMATOR_PARAMETERS) + MINIBATCH_PARAMETERS

#: ``GaussianMixtureSelection``: the grid (``n_components`` and ``covariance_type`` take a
#: list of values), the criterion and the memory budget, then every other parameter of
#: GaussianMixture, shared by the candidates
SELECTION_PARAMETERS: tuple[ModelParameter, ...] = (
    replace(BY_NAME["n_components"], default=tuple(range(1, 9)), grid=True,
            doc="The values of K to try: an int >= 1, a list or a range of them."),
    replace(BY_NAME["covariance_type"], grid=True,
            options=(*BY_NAME["covariance_type"].options, "all"),
            doc="The covariance types to try: a name, a list of names, or 'all' for "
                "mclust's fourteen (EII ... VVV)."),
    ModelParameter("criterion", "bic", "choice",
                   "Information criterion choosing the best candidate (lower is better), "
                   "from each restart's final lower bound on the usable rows. 'icl' is BIC "
                   "- 2 sum_i w_i log max_k r_ik with each candidate's fitted "
                   "responsibilities: one more pass, for every candidate at once.",
                   options=("bic", "aic", "icl"), estimator=False, workflow=False),
    ModelParameter("memory_budget", "1GiB", "size",
                   "Bytes the responsibilities and statistics of all live candidates may "
                   "take per chunk task (an int or a text such as '1GiB'); a grid above "
                   "it runs in waves of candidates (logged). It does not change the "
                   "numbers.",
                   ge=1, estimator=False, workflow=False, changes_fit=False),
    ModelParameter("seed_from_other_types", 0, "int",
                   "After the grid, each candidate also runs from the fitted solutions of "
                   "up to this many other covariance types at the same K (the best by BIC "
                   "first) and keeps the better end, in one more set of passes; 0: no "
                   "such round.", ge=0, estimator=False, workflow=False),
    *(p for p in ESTIMATOR_PARAMETERS if p.name not in ("n_components", "covariance_type")),
)

#: ``BayesianGaussianMixture``: scikit-learn's parameters in its order (the prior after
#: init_params; scikit-learn's four covariance types; no initial arrays), dgmm's own
#: (``init_size`` after init_params, 0 by default: scikit-learn's start), then the steps of
#: ``partial_fit`` (stochastic variational inference)
BAYESIAN_PARAMETERS: tuple[ModelParameter, ...] = tuple(
    replace(BY_NAME[name], options=SKLEARN_TYPES) if name == "covariance_type"
    else replace(BY_NAME[name], default=0, doc=(
        "0 (the default): the start by init_params on all rows, as scikit-learn's; None or "
        "a number of rows: batch variational inference on a sample of that many rows "
        "(None: from K, d and tol), drawn in the pass that takes the data's moments, "
        "gives the start")) if name == "init_size"
    else BY_NAME[name] for name in (
        "n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init",
        "init_params", "init_size", "weight_concentration_prior_type",
        "weight_concentration_prior",
        "mean_precision_prior", "mean_prior", "degrees_of_freedom_prior",
        "covariance_prior", "random_state", "warm_start", "verbose", "verbose_interval",
        "client", "split_every", "nonfinite", "batch_size", "step_power", "wave_width"))

#: ``MiniBatchBayesianGaussianMixture``: BayesianGaussianMixture's parameters, with
#: ``max_iter`` and ``tol`` counted in passes of stochastic variational inference and one
#: initialisation
MINIBATCH_BAYESIAN_PARAMETERS: tuple[ModelParameter, ...] = tuple(
    q for p in BAYESIAN_PARAMETERS for q in {
        "n_init": (replace(p, le=1, doc="Initialisations: stochastic variational inference "
                                        "runs one."),),
        "max_iter": (replace(p, doc="Passes of stochastic variational inference over the "
                                    "data."),),
        "tol": (replace(p, doc="Convergence threshold on the change, between passes, of "
                               "the pass's mean log of the E-step's normaliser per row."),),
        "init_size": (replace(
            p, default=None,
            doc="Rows of the in-memory sample that batch variational inference starts on, "
                "drawn in the pass that takes the data's moments (None: from K, d and "
                "tol; 0: no sample, init_params on all rows)."),),
    }.get(p.name, (p,)))

#: every estimator's constructor parameters, in the order of its signature, by class name
ESTIMATORS: dict[str, tuple[ModelParameter, ...]] = {
    "GaussianMixture": ESTIMATOR_PARAMETERS,
    "MiniBatchGaussianMixture": MINIBATCH_ESTIMATOR_PARAMETERS,
    "GaussianMixtureSelection": SELECTION_PARAMETERS,
    "BayesianGaussianMixture": BAYESIAN_PARAMETERS,
    "MiniBatchBayesianGaussianMixture": MINIBATCH_BAYESIAN_PARAMETERS,
}
