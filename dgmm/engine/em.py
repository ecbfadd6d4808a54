"""The EM loop: one pass over the data per iteration, ``n_init`` restarts in lockstep,
many models in lockstep (``fit_models``), callbacks, resume.

The pass that moves theta_{t-1} to theta_t also yields the mean log-likelihood of
theta_{t-1}; that value is the iteration's lower bound, as in scikit-learn. A run converges
when two successive lower bounds differ by less than ``tol``.

The whole loop state is an ``EMState``: after every iteration it goes to the callback, which
may checkpoint it (``EMState.to_record``); ``fit_em(..., resume=state)`` continues from it and
ends with exactly the parameters an uninterrupted run reaches, since every pass is a
deterministic function of (data, chunking, parameters). For the same reason a restart
or model run in lockstep with others (``dgmm.engine.models``) ends bit-identical to the same
restart run alone.
"""
from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from ..core.model_parameters import DEFAULTS
from ..core.mstep import m_step
from ..core.params import GMMParams
from ..core.threads import caller_blas_threads, single_blas_thread
from ..errors import DataError
from . import models
from . import passes as engine
from .init import initial_param_steps

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
class RestartState:
    """One restart of a fit: ``params`` is None while it is still being initialised.

    index: the restart (0-based); iteration: EM iterations done (0 = just initialised);
    params: theta after ``iteration`` iterations; lower_bound: the mean log-likelihood of
    the previous parameters (-inf before the first pass); history: lower bound per
    iteration; converged: the last change was below ``tol``.
    """

    index: int
    iteration: int = 0
    params: GMMParams | None = None
    lower_bound: float = -math.inf
    history: tuple[float, ...] = ()
    converged: bool = False

    def finished(self, max_iter: int) -> bool:
        return self.params is not None and (self.converged or self.iteration >= max_iter)

    def run(self) -> RunResult:
        return RunResult(self.params, self.lower_bound, self.iteration, self.converged,
                         self.history)


def _best(restarts, max_iter: int) -> RunResult | None:
    """The finished restart with the highest final lower bound (the first on a tie)."""
    best = None
    for restart in restarts:
        if restart.finished(max_iter) and (best is None or restart.lower_bound > best.lower_bound):
            best = restart.run()
    return best


@dataclass(frozen=True)
class EMState:
    """Everything needed to continue a fit after an iteration of any of its restarts.

    The restarts run in lockstep (one pass serves all of them); ``restarts`` holds every
    restart's ``RestartState``. The other fields describe the restart that just moved:
    seed: the fit's root seed (an int; restart i uses ``restart_seed(seed, i)``);
    init_index, iteration, params, lower_bound, history, converged: that restart's
    ``RestartState`` fields; best: the best finished restart so far; n_rows: rows used;
    n_nonfinite: rows skipped; passes: data passes made by the fit so far.
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
    restarts: tuple[RestartState, ...] = ()
    passes: int = 0

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
            "passes": self.passes,
            "best": None,
            "restarts": [],
        }
        if self.best is not None:
            arrays.update({f"best.{k}": v for k, v in self.best.params.to_arrays().items()})
            meta["best"] = {
                "lower_bound": self.best.lower_bound,
                "n_iter": self.best.n_iter,
                "converged": self.best.converged,
                "history": list(self.best.history),
            }
        for restart in self.restarts:
            if restart.params is not None:
                arrays.update({f"restart{restart.index}.{k}": v
                               for k, v in restart.params.to_arrays().items()})
            meta["restarts"].append({
                "index": restart.index,
                "initialised": restart.params is not None,
                "iteration": restart.iteration,
                "lower_bound": restart.lower_bound,
                "history": list(restart.history),
                "converged": restart.converged,
            })
        return arrays, meta

    @classmethod
    def from_record(cls, arrays: dict[str, np.ndarray], meta: dict) -> EMState:
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
        restarts = tuple(
            RestartState(
                index=int(r["index"]),
                iteration=int(r["iteration"]),
                params=params(f"restart{int(r['index'])}") if r["initialised"] else None,
                lower_bound=float(r["lower_bound"]),
                history=tuple(float(v) for v in r["history"]),
                converged=bool(r["converged"]),
            )
            for r in meta.get("restarts", ())
        )
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
            restarts=restarts,
            passes=int(meta.get("passes", 0)),
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
    raise ValueError(
        f"random_state must be None, an int or a numpy generator, got {random_state!r}")


def restart_seed(seed: int, init_index: int) -> int:
    """The seed of restart ``init_index`` of a fit whose root seed is ``seed``.

    ``numpy.random.SeedSequence([seed, init_index])`` gives two 32-bit words, joined into
    one 64-bit int: distinct (seed, restart) pairs give unrelated seeds.
    """
    low, high = np.random.SeedSequence([int(seed), int(init_index)]).generate_state(2, np.uint32)
    return int(low) | (int(high) << 32)


class _TooFewRows(Exception):
    """A model has more components than the usable rows (refused, not fitted)."""


def _check_rows(n_rows: int, n_nonfinite: int, first_nonfinite: int, settings: EMSettings,
                weighted: bool = False, refuse: bool = False):
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
        message = (
            f"Only {n_rows} usable row(s) for n_components={settings.n_components}"
            + (f" after skipping {n_nonfinite} {skipped} row(s)" if n_nonfinite else "")
            + ". Use fewer components or more data."
        )
        raise _TooFewRows(message) if refuse else DataError(message)


class _Restart:
    """One restart while the fit runs: its state, and its initialisation's requests
    (a generator from ``dgmm.engine.init``) until theta_0 is ready."""

    def __init__(self, fit: _ModelFit, state: RestartState, init_steps=None):
        self.fit = fit
        self.state = state
        self.init_steps = init_steps
        self.refused: str | None = None
        self.request = None
        if init_steps is not None:
            self._send_init(None)

    @property
    def live(self) -> bool:
        return self.refused is None and not self.state.finished(self.fit.settings.max_iter)

    def _send_init(self, answer) -> tuple | None:
        try:
            self.request = self.init_steps.send(answer)
            return None
        except StopIteration as stop:
            init = stop.value
        except _TooFewRows as exc:
            self.refused = str(exc)
            self.init_steps = self.request = None
            return None
        self.init_steps = None
        if init.n_rows:
            self.fit.n_rows, self.fit.n_nonfinite = init.n_rows, init.n_nonfinite
        params = init.params
        if self.fit.init_transform is not None:
            params = self.fit.init_transform(params)
        self.state = replace(self.state, params=params)
        self._next_estep()
        return ("init", math.nan, ())

    def _next_estep(self):
        self.request = (models.Pass(engine._estep_chunk,
                                    (self.state.params, self.fit.settings.nonfinite))
                        if self.live
                        else None)

    def receive(self, answer, seconds: float) -> tuple | None:
        """Take the answer to ``self.request``; (phase, change, empty, rate) when theta_0
        became ready or an iteration ended, else None."""
        if self.init_steps is not None:
            event = self._send_init(answer)
            return None if event is None else event + (math.nan,)
        stats, settings, state = answer, self.fit.settings, self.state
        try:
            _check_rows(stats.n_rows, stats.n_nonfinite, stats.first_nonfinite, settings,
                        self.fit.weighted, refuse=self.fit.refuse_small)
        except _TooFewRows as exc:
            self.refused, self.request = str(exc), None
            return None
        if self.fit.weighted and not stats.n > 0:  # a lazy sample_weight, seen only now
            raise DataError(
                "sample_weight sums to 0 over the usable rows: at least one row needs a "
                "positive weight."
            )
        step = m_step(stats, settings.reg_covar, previous=state.params)
        if step.empty:
            log.warning("components %s are empty; they keep their previous mean and "
                        "covariance (see dgmm.mstep)", list(step.empty))
        if step.inner_capped:
            log.warning("the %s M-step stopped after %d inner iterations before meeting "
                        "its tolerance (dgmm.core.structured.INNER_MAX_ITER)",
                        settings.covariance_type, step.inner_iterations)
        change = step.mean_loglik - state.lower_bound
        self.state = replace(
            state,
            iteration=state.iteration + 1,
            params=step.params,
            lower_bound=step.mean_loglik,
            history=state.history + (step.mean_loglik,),
            converged=abs(change) < settings.tol,
        )
        self.fit.n_rows, self.fit.n_nonfinite = stats.n_rows, stats.n_nonfinite
        self._next_estep()
        rate = stats.n_rows / seconds if seconds > 0 else math.inf
        return ("iteration", change, step.empty, rate)


class _ModelFit:
    """One model (one ``EMSettings``) and its restarts, within a lockstep run."""

    def __init__(self, data, settings: EMSettings, seed: int, *, fixed_init=None,
                 warm_start=None, init_transform=None, resume: EMState | None = None,
                 callback=None, refuse_small=False):
        self.settings = settings
        self.seed = seed
        self.callback = callback
        self.init_transform = init_transform
        self.refuse_small = refuse_small
        self.weighted = data.weights is not None
        self.n_rows, self.n_nonfinite = (resume.n_rows, resume.n_nonfinite) if resume else (0, 0)
        self.passes = resume.passes if resume else 0
        n_init = 1 if warm_start is not None else settings.n_init
        saved = {r.index: r for r in resume.restarts} if resume else {}
        self.restarts: list[_Restart] = []
        self.events: list[tuple[_Restart, tuple]] = []
        for index in range(n_init):
            if index in saved and saved[index].params is not None:
                restart = _Restart(self, saved[index])
                restart._next_estep()
                self.restarts.append(restart)
                continue
            if warm_start is not None:
                params, lower_bound = warm_start
                state = RestartState(index, params=params, lower_bound=lower_bound)
                restart = _Restart(self, state)
            elif fixed_init is not None:
                restart = _Restart(self, RestartState(index, params=fixed_init(data, index)))
            else:
                def on_first_pass(*counts):
                    _check_rows(*counts, settings, self.weighted, refuse=refuse_small)

                steps = initial_param_steps(
                    data, settings.n_components, settings.covariance_type,
                    settings.init_params, settings.reg_covar, restart_seed(seed, index),
                    on_first_pass=on_first_pass, nonfinite=settings.nonfinite,
                )
                restart = _Restart(self, RestartState(index), steps)
            if restart.init_steps is None and restart.refused is None:
                restart._next_estep()
                self.events.append((restart, ("init", math.nan, (), math.nan)))
            self.restarts.append(restart)

    @property
    def refused(self) -> str | None:
        """Why every restart was refused, or None."""
        reasons = [r.refused for r in self.restarts]
        return reasons[0] if reasons and all(reasons) else None

    def snapshot(self, focus: RestartState) -> EMState:
        states = tuple(r.state for r in self.restarts)
        return EMState(
            self.seed, focus.index, focus.iteration, focus.params, focus.lower_bound,
            focus.history, focus.converged, _best(states, self.settings.max_iter),
            self.n_rows, self.n_nonfinite, states, self.passes,
        )

    def report(self, seconds: float) -> None:
        """Send the events of the last round to the callback, one per restart that moved."""
        events, self.events = self.events, []
        if self.callback is None:
            return
        for restart, (phase, change, empty, rate) in sorted(events, key=lambda e: e[0].state.index):
            info = IterationInfo(self.snapshot(restart.state), phase, change, seconds, rate,
                                 tuple(empty))
            with caller_blas_threads():
                self.callback(info)

    def result(self) -> FitResult | None:
        states = tuple(r.state for r in self.restarts)
        best = _best(states, self.settings.max_iter)
        if best is None:
            return None
        final = replace(self.snapshot(states[-1]), best=best)
        return FitResult(best.params, best.lower_bound, best.n_iter, best.converged,
                         best.history, self.n_rows, self.n_nonfinite, final)


def _run_lockstep(data, fits: list[_ModelFit], *, split_every: int, client,
                  after_round=None) -> int:
    """Run the fits' restarts together until none is live; returns the passes made.

    after_round: ``after_round(passes, live)`` after every round of requests (once the
    fits' callbacks have seen its events): the passes made so far, and per fit whether
    any of its restarts is still live."""
    driver = models.Lockstep(data, split_every=split_every, client=client)
    for fit in fits:
        fit.report(0.0)
    while True:
        pending = {(f, i): r.request for f, fit in enumerate(fits)
                   for i, r in enumerate(fit.restarts) if r.request is not None}
        if not pending:
            return driver.passes
        fetches = {k: r for k, r in pending.items() if isinstance(r, models.FetchRows)}
        t0 = time.perf_counter()
        answers = driver.serve(fetches or pending)
        seconds = time.perf_counter() - t0
        moved = {f for f, _ in answers} if not fetches else set()
        for (f, i), answer in answers.items():
            restart = fits[f].restarts[i]
            event = restart.receive(answer, seconds)
            if event is not None:
                fits[f].events.append((restart, event))
        for f, fit in enumerate(fits):
            fit.passes += f in moved
            fit.report(seconds)
        if after_round is not None:
            after_round(driver.passes, tuple(any(r.live for r in fit.restarts)
                                             for fit in fits))


@single_blas_thread()
def fit_em(
    data: engine.ChunkedData,
    settings: EMSettings,
    *,
    seed: int,
    fixed_init: Callable[[engine.ChunkedData, int], GMMParams] | None = None,
    warm_start: tuple[GMMParams, float] | None = None,
    init_transform: Callable[[GMMParams], GMMParams] | None = None,
    callback: Callable[[IterationInfo], None] | None = None,
    resume: EMState | None = None,
    client=None,
) -> FitResult:
    """Fit by EM; the best of ``settings.n_init`` restarts by final lower bound.

    The restarts run in lockstep: each pass serves every live restart (initialisation
    passes included), so the passes made are the most any restart needs. Restart i starts
    from ``restart_seed(seed, i)`` and reaches exactly what it reaches fitted alone.

    fixed_init: ``fixed_init(data, init_index)`` returns theta_0 for a restart (user-given
    initial parameters) instead of ``settings.init_params``; init_transform: applied to
    theta_0 of ``init_params`` (e.g. to put in user-given means); warm_start: (params,
    lower_bound) to continue from, one restart only; callback: called with an
    ``IterationInfo`` when a restart's theta_0 is ready and after each of its iterations;
    resume: a state from a callback, to continue an interrupted fit (restarts that were
    still initialising start their initialisation again).
    """
    if resume is not None and not resume.restarts:
        raise ValueError("the state holds no restarts: it cannot be resumed")
    fit = _ModelFit(data, settings, seed, fixed_init=fixed_init, warm_start=warm_start,
                    init_transform=init_transform, resume=resume, callback=callback)
    _run_lockstep(data, [fit], split_every=settings.split_every, client=client)
    return fit.result()


@dataclass(frozen=True)
class ModelSpec:
    """One model of ``fit_models``: its settings, root seed and initial-parameter hooks
    (as in ``fit_em``)."""

    settings: EMSettings
    seed: int
    fixed_init: Callable[[engine.ChunkedData, int], GMMParams] | None = None
    init_transform: Callable[[GMMParams], GMMParams] | None = None


@single_blas_thread()
def fit_models(
    data: engine.ChunkedData,
    specs: list[ModelSpec],
    *,
    client=None,
    resume: list[EMState | None] | None = None,
    callback: Callable[[int, IterationInfo], None] | None = None,
    after_round: Callable[[int, tuple[bool, ...]], None] | None = None,
) -> tuple[list, int]:
    """Fit many models in lockstep: one pass serves every live restart of every model.

    Each model's result is exactly ``fit_em(data, spec.settings, seed=spec.seed, ...)``.
    Returns (per model a ``FitResult``, or for a model with more components than usable
    rows the reason it was refused (a str); passes made). All settings must share
    ``split_every``.

    resume: per model an ``EMState`` from the callback to continue from, or None (start
    that model afresh); callback: ``callback(model_index, info)`` as ``fit_em``'s;
    after_round: ``after_round(passes, live)`` after every round of requests, once the
    callback has seen its events (a consistent moment to checkpoint every model): the
    passes made by this call, and per model whether it is still live.
    """
    split_every = {spec.settings.split_every for spec in specs}
    if len(split_every) != 1:
        raise ValueError("models fitted together must share split_every")
    resume = resume or [None] * len(specs)
    fits = [_ModelFit(data, spec.settings, spec.seed, fixed_init=spec.fixed_init,
                      init_transform=spec.init_transform, refuse_small=True,
                      resume=state if state is not None and state.restarts else None,
                      callback=None if callback is None else functools.partial(callback, i))
            for i, (spec, state) in enumerate(zip(specs, resume, strict=True))]
    passes = _run_lockstep(data, fits, split_every=split_every.pop(), client=client,
                           after_round=after_round)
    return [fit.refused or fit.result() for fit in fits], passes
