"""The EM loop: one pass over the data per iteration, ``n_init`` restarts, callbacks, resume.

The pass that moves theta_{t-1} to theta_t also yields the mean log-likelihood of
theta_{t-1}; that value is the iteration's lower bound, as in scikit-learn. A run converges
when two successive lower bounds differ by less than ``tol``.

The whole loop state is an ``EMState``: after every iteration it goes to the callback, which
may checkpoint it (``EMState.to_record``); ``fit_em(..., resume=state)`` continues from it and
ends with exactly the parameters an uninterrupted run reaches, since every pass is a
deterministic function of (data, chunking, parameters).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from . import passes as engine
from ..errors import DataError
from .init import initial_params
from ..core.model_parameters import DEFAULTS
from ..core.mstep import m_step
from ..core.params import GMMParams
from ..core.threads import caller_blas_threads, single_blas_thread

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
    nonfinite: str = DEFAULTS["nonfinite"]
    split_every: int = DEFAULTS["split_every"]


@dataclass(frozen=True)
class RunResult:
    """One finished initialisation: its parameters and lower-bound history."""

    params: GMMParams
    lower_bound: float
    n_iter: int
    converged: bool
    history: tuple[float, ...]


@dataclass(frozen=True)
class EMState:
    """Everything needed to continue a fit after an iteration.

    seed: the fit's root seed (an int; restart i uses (seed, i));
    init_index: the restart in progress (0-based); iteration: iterations done in it
    (0 = just initialised); params: theta after ``iteration`` iterations; lower_bound:
    the mean log-likelihood of the previous parameters (-inf before the first pass);
    history: lower bound per iteration of this restart; converged: this restart is done;
    best: the best finished restart so far; n_rows: rows used; n_nonfinite: rows skipped.
    """

    seed: int
    init_index: int
    iteration: int
    params: GMMParams
    lower_bound: float
    history: tuple[float, ...] = ()
    converged: bool = False
    best: RunResult | None = None
    n_rows: int = 0
    n_nonfinite: int = 0

    def to_record(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, JSON-able metadata) that ``from_record`` turns back into this state."""
        arrays = {f"params.{k}": v for k, v in self.params.to_arrays().items()}
        meta = {
            "seed": self.seed,
            "init_index": self.init_index,
            "iteration": self.iteration,
            "lower_bound": self.lower_bound,
            "history": list(self.history),
            "converged": self.converged,
            "covariance_type": self.params.covariance_type,
            "n_rows": self.n_rows,
            "n_nonfinite": self.n_nonfinite,
            "best": None,
        }
        if self.best is not None:
            arrays.update({f"best.{k}": v for k, v in self.best.params.to_arrays().items()})
            meta["best"] = {
                "lower_bound": self.best.lower_bound,
                "n_iter": self.best.n_iter,
                "converged": self.best.converged,
                "history": list(self.best.history),
            }
        return arrays, meta

    @classmethod
    def from_record(cls, arrays: dict[str, np.ndarray], meta: dict) -> "EMState":
        cov = meta["covariance_type"]

        def params(prefix):
            return GMMParams(
                **{k: arrays[f"{prefix}.{k}"] for k in
                   ("weights", "means", "covariances", "precisions_cholesky")},
                covariance_type=cov,
            )

        best = None
        if meta.get("best"):
            b = meta["best"]
            best = RunResult(params("best"), float(b["lower_bound"]), int(b["n_iter"]),
                             bool(b["converged"]), tuple(b["history"]))
        return cls(
            seed=int(meta["seed"]),
            init_index=int(meta["init_index"]),
            iteration=int(meta["iteration"]),
            params=params("params"),
            lower_bound=float(meta["lower_bound"]),
            history=tuple(float(v) for v in meta["history"]),
            converged=bool(meta["converged"]),
            best=best,
            n_rows=int(meta.get("n_rows", 0)),
            n_nonfinite=int(meta.get("n_nonfinite", 0)),
        )


@dataclass(frozen=True)
class IterationInfo:
    """What a callback receives after initialisation and after each iteration.

    phase: 'init' (theta_0 ready) or 'iteration'; change: lower bound minus the previous
    one (nan for 'init'); seconds: wall time of the pass(es); rows_per_second: rows read
    per second in this pass; empty: components found empty in this M-step.
    """

    state: EMState
    phase: str
    change: float
    seconds: float
    rows_per_second: float
    empty: tuple[int, ...] = field(default=())


@dataclass(frozen=True)
class FitResult:
    """The best restart, as the estimator exposes it."""

    params: GMMParams
    lower_bound: float
    n_iter: int
    converged: bool
    history: tuple[float, ...]
    n_rows: int
    n_nonfinite: int
    final_state: EMState


def resolve_seed(random_state) -> int:
    """An int root seed from None, an int, a numpy Generator or a RandomState."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(np.iinfo(np.int32).max))
    raise ValueError(f"random_state must be None, an int or a numpy generator, got {random_state!r}")


def restart_seed(seed: int, init_index: int) -> int:
    """The seed of restart ``init_index`` of a fit whose root seed is ``seed``."""
    return seed + 7919 * init_index


def _check_rows(n_rows: int, n_nonfinite: int, first_nonfinite: int, settings: EMSettings,
                weighted: bool = False):
    if n_nonfinite and settings.nonfinite == "raise":
        where = "the data or their sample_weight" if weighted else "the data"
        raise DataError(
            f"{where[0].upper()}{where[1:]} hold {n_nonfinite} row(s) with NaN or inf values "
            f"(the first at row {first_nonfinite}). Clean them, skip those rows with "
            "nonfinite='drop' (in a workflow: data.nonfinite: drop), or treat NaN entries "
            "as missing values with nonfinite='marginalize'."
        )
    if n_rows < settings.n_components:
        skipped = "empty (all-NaN)" if settings.nonfinite == "marginalize" else "non-finite"
        raise DataError(
            f"Only {n_rows} usable row(s) for n_components={settings.n_components}"
            + (f" after skipping {n_nonfinite} {skipped} row(s)" if n_nonfinite else "")
            + ". Use fewer components or more data."
        )


@single_blas_thread()
def fit_em(
    data: engine.ChunkedData,
    settings: EMSettings,
    *,
    seed: int,
    fixed_init: Callable[[engine.ChunkedData, int], GMMParams] | None = None,
    warm_start: tuple[GMMParams, float] | None = None,
    callback: Callable[[IterationInfo], None] | None = None,
    resume: EMState | None = None,
    client=None,
) -> FitResult:
    """Fit by EM; the best of ``settings.n_init`` restarts by final lower bound.

    fixed_init: ``fixed_init(data, init_index)`` returns theta_0 for a restart (user-given
    initial parameters) instead of ``settings.init_params``; warm_start: (params, lower_bound) to continue from, one
    restart only; resume: a state from a callback, to continue an interrupted fit.
    """
    n_init = 1 if warm_start is not None else settings.n_init
    state = resume
    n_rows, n_nonfinite = (state.n_rows, state.n_nonfinite) if state else (0, 0)
    best = state.best if state else None
    first_index = state.init_index if state else 0
    split = dict(split_every=settings.split_every, client=client)
    weighted = data.weights is not None

    for init_index in range(first_index, n_init):
        if state is None or state.init_index != init_index:
            t0 = time.perf_counter()
            if warm_start is not None:
                params, lower_bound = warm_start
            elif fixed_init is not None:
                params, lower_bound = fixed_init(data, init_index), -math.inf
            else:
                init = initial_params(
                    data, settings.n_components, settings.covariance_type,
                    settings.init_params, settings.reg_covar, restart_seed(seed, init_index),
                    on_first_pass=lambda *counts: _check_rows(*counts, settings, weighted),
                    nonfinite=settings.nonfinite, **split,
                )
                if init.n_rows:
                    n_rows, n_nonfinite = init.n_rows, init.n_nonfinite
                params, lower_bound = init.params, -math.inf
            state = EMState(seed, init_index, 0, params, lower_bound, (), False, best,
                            n_rows, n_nonfinite)
            if callback:
                seconds = time.perf_counter() - t0
                with caller_blas_threads():
                    callback(IterationInfo(state, "init", math.nan, seconds, math.nan))

        while state.iteration < settings.max_iter and not state.converged:
            t0 = time.perf_counter()
            stats = engine.estep_pass(data, state.params, nonfinite=settings.nonfinite, **split)
            seconds = time.perf_counter() - t0
            _check_rows(stats.n_rows, stats.n_nonfinite, stats.first_nonfinite, settings,
                        weighted)
            if weighted and not stats.n > 0:  # a lazy sample_weight, seen only now
                raise DataError(
                    "sample_weight sums to 0 over the usable rows: at least one row needs a "
                    "positive weight."
                )
            step = m_step(stats, settings.reg_covar, previous=state.params)
            if step.empty:
                log.warning("components %s are empty; they keep their previous mean and "
                            "covariance (see dgmm.mstep)", list(step.empty))
            change = step.mean_loglik - state.lower_bound
            state = replace(
                state,
                iteration=state.iteration + 1,
                params=step.params,
                lower_bound=step.mean_loglik,
                history=state.history + (step.mean_loglik,),
                converged=abs(change) < settings.tol,
                n_rows=stats.n_rows,
                n_nonfinite=stats.n_nonfinite,
            )
            if callback:
                rate = stats.n_rows / seconds if seconds > 0 else math.inf
                with caller_blas_threads():
                    callback(IterationInfo(state, "iteration", change, seconds, rate, step.empty))

        run = RunResult(state.params, state.lower_bound, state.iteration, state.converged,
                        state.history)
        if best is None or run.lower_bound > best.lower_bound:
            best = run
        state = replace(state, best=best)

    return FitResult(best.params, best.lower_bound, best.n_iter, best.converged, best.history,
                     state.n_rows, state.n_nonfinite, state)
