"""One EM iteration, and the plain loop of one model: start here to read the engine.

An iteration (``em_iteration``) is: the E-step over the data (one pass: per chunk the
statistics under the model kind's E-step terms, merged by a fixed tree), the checks of the
rows it counted, the M-step (the kind's, pure), the objective and the convergence test.
``fit_one`` is the whole loop of one model from its initial parameters::

    state = RestartState(0, params=params)
    while not state.finished(settings.max_iter):
        state = em_iteration(data, settings, state, kind).state

Restarts and model grids run the same ``estep_request``, ``check_stats`` and ``em_step``
in lockstep, one pass serving every live restart (``dgmm.engine.em``); tests prove them
bit-identical to ``fit_one``. The model kind (``dgmm.core.model_kinds``) is the only
thing that knows what is being fitted.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any

from ..core.model_kinds import MaximumLikelihood, ModelKind
from ..core.model_parameters import DEFAULTS
from ..core.nonfinite import NonFiniteRule, nonfinite_rule
from ..core.stats import SuffStats
from ..errors import DataError
from . import passes
from .models import Pass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EMSettings:
    """The settings of a fit that change its numbers: the parameters declared ``engine``
    in ``dgmm.core.model_parameters``, with their declared defaults."""

    n_components: int
    covariance_type: str = DEFAULTS["covariance_type"]
    tol: float = DEFAULTS["tol"]
    reg_covar: float = DEFAULTS["reg_covar"]
    max_iter: int = DEFAULTS["max_iter"]
    n_init: int = DEFAULTS["n_init"]
    init_params: str = DEFAULTS["init_params"]
    init_size: int | None = DEFAULTS["init_size"]
    nonfinite: str = DEFAULTS["nonfinite"]
    split_every: int = DEFAULTS["split_every"]

    @property
    def nonfinite_rule(self) -> NonFiniteRule:
        """The non-finite policy's object (``dgmm.core.nonfinite``)."""
        return nonfinite_rule(self.nonfinite)

    def model_kind(self) -> ModelKind:
        """The kind of model these settings fit: maximum-likelihood EM for their
        covariance type (the engine takes any other ``ModelKind`` as ``kind=``)."""
        return MaximumLikelihood(self.covariance_type, self.reg_covar)


@dataclass(frozen=True)
class RunResult:
    """One finished initialisation: its parameters and objective history."""

    params: Any
    lower_bound: float
    n_iter: int
    converged: bool
    history: tuple[float, ...]


@dataclass(frozen=True)
class RestartState:
    """One restart of a fit: ``params`` is None while it is still being initialised.

    index: the restart (0-based); iteration: EM iterations done (0 = just initialised);
    params: theta after ``iteration`` iterations; lower_bound: the objective of the last
    iteration (-inf before the first pass); history: the objective per iteration;
    converged: the last change was below ``tol``.
    """

    index: int
    iteration: int = 0
    params: Any = None
    lower_bound: float = -math.inf
    history: tuple[float, ...] = ()
    converged: bool = False

    def finished(self, max_iter: int) -> bool:
        return self.params is not None and (self.converged or self.iteration >= max_iter)

    def run(self) -> RunResult:
        return RunResult(self.params, self.lower_bound, self.iteration, self.converged,
                         self.history)


@dataclass(frozen=True)
class Step:
    """What one iteration did: the restart's new state, the change of the objective and
    the components the M-step found empty."""

    state: RestartState
    change: float
    empty: tuple[int, ...]


class TooFewRows(Exception):
    """A model has more components than the usable rows (refused, not fitted)."""


def check_rows(n_rows: int, n_nonfinite: int, first_nonfinite: int, settings: EMSettings,
               weighted: bool = False, refuse: bool = False) -> None:
    """After a pass counted the rows: a ``DataError`` for bad rows the policy forbids, and
    for fewer usable rows than components (``TooFewRows`` instead with ``refuse``)."""
    rule = settings.nonfinite_rule
    rule.check_skipped(n_nonfinite, first_nonfinite, weighted)
    if n_rows < settings.n_components:
        message = (
            f"Only {n_rows} usable row(s) for n_components={settings.n_components}"
            + (f" after skipping {n_nonfinite} {rule.skipped_rows} row(s)"
               if n_nonfinite else "")
            + ". Use fewer components or more data."
        )
        raise TooFewRows(message) if refuse else DataError(message)


def check_stats(stats: SuffStats, settings: EMSettings, weighted: bool,
                refuse: bool = False) -> None:
    """The checks of an E-step pass's counts (``check_rows``), and a positive total
    weight (a lazy ``sample_weight`` is first seen by the pass)."""
    check_rows(stats.n_rows, stats.n_nonfinite, stats.first_nonfinite, settings, weighted,
               refuse)
    if weighted and not stats.n > 0:
        raise DataError("sample_weight sums to 0 over the usable rows: at least one row "
                        "needs a positive weight.")


def estep_request(kind: ModelKind, params: Any, rule: NonFiniteRule) -> Pass:
    """The E-step over the data under ``params``: one pass whose chunks give statistics
    under the kind's E-step terms, merged (``dgmm.engine.models.Pass``)."""
    return Pass(passes.estep_chunk, (kind.estep_terms(params), rule))


def em_step(state: RestartState, stats: SuffStats, kind: ModelKind, tol: float) -> Step:
    """The rest of an iteration once the E-step's statistics are merged: the M-step, the
    objective, and the convergence test |objective - previous objective| < ``tol``."""
    update = kind.m_step(stats, state.params)
    if update.empty:
        log.warning("components %s are empty; they keep their previous mean and "
                    "covariance (see dgmm.core.mstep.m_step)", list(update.empty))
    if update.inner_capped:
        # debug, not a warning: the next iteration's M-step goes on from these parameters,
        # and in a grid of EVE/VVE candidates this happened hundreds of times per fit
        log.debug("the %s M-step stopped after %d inner iterations before meeting its "
                  "tolerance (dgmm.core.structured.INNER_MAX_ITER)",
                  update.params.covariance_type, update.inner_iterations)
    objective = kind.objective(stats, state.params, update.params)
    change = objective - state.lower_bound
    new = replace(state, iteration=state.iteration + 1, params=update.params,
                  lower_bound=objective, history=state.history + (objective,),
                  converged=abs(change) < tol)
    return Step(new, change, tuple(update.empty))


def em_iteration(data: passes.ChunkedData, settings: EMSettings, state: RestartState,
                 kind: ModelKind, *, client=None) -> Step:
    """One EM iteration of one restart over the data.

    The E-step over the data (one pass: every chunk's statistics under
    ``kind.estep_terms(state.params)``, merged by the fixed tree), the checks of the rows
    it counted, then ``em_step``: the M-step, the objective and the convergence test.
    """
    request = estep_request(kind, state.params, settings.nonfinite_rule)
    stats = passes.map_reduce(data, request.chunk_fn, *request.args,
                              split_every=settings.split_every, client=client)
    check_stats(stats, settings, weighted=data.weights is not None)
    return em_step(state, stats, kind, settings.tol)


def fit_one(data: passes.ChunkedData, settings: EMSettings, params: Any, *,
            kind: ModelKind | None = None, client=None) -> RestartState:
    """EM from ``params`` until converged or ``settings.max_iter`` iterations: one model,
    one restart, nothing else (no callbacks, no checkpoints). ``kind`` defaults to
    ``settings.model_kind()``. Returns the restart's final state."""
    kind = settings.model_kind() if kind is None else kind
    state = RestartState(0, params=params)
    while not state.finished(settings.max_iter):
        state = em_iteration(data, settings, state, kind, client=client).state
    return state
