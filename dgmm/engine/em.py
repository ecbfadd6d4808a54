"""The EM loop of a fit: ``n_init`` restarts in lockstep (``fit_em``), many models in
lockstep (``fit_models``), callbacks, resume.

Each restart runs the iteration of ``dgmm.engine.iteration`` (``estep_request``, then
``em_step``); its life is a generator (``_restart_life``) that yields requests for data
(its initialisation's, then one E-step pass per iteration) and ``RestartEvent``s, and
never sees the others. ``_run_lockstep`` answers the requests of every live restart of
every model with one pass per round (``dgmm.engine.models.Lockstep``); as every pass is a
deterministic function of (data, chunking, parameters), a restart run in lockstep ends
bit-identical to the same restart fitted alone (``iteration.fit_one``), and a fit resumed
from a recorded ``EMState`` (``dgmm.engine.fit_state``) ends with exactly the parameters
of an uninterrupted one.
"""
from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..core.model_kinds import ModelKind
from ..core.params import GMMParams
from ..core.threads import caller_blas_threads, single_blas_thread
from . import models
from . import passes as engine
from .fit_state import EMState, FitResult, IterationInfo, best_run
from .init import InitResult, initial_param_steps
from .iteration import (
    EMSettings,
    RestartState,
    RunResult,
    TooFewRows,
    check_rows,
    check_stats,
    em_step,
    estep_request,
)

__all__ = ["EMSettings", "EMState", "FitResult", "IterationInfo", "ModelOutcome", "ModelSpec",
           "RestartEvent", "RestartState", "RunResult", "fit_em", "fit_models", "resolve_seed",
           "restart_seed"]


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


@dataclass(frozen=True)
class RestartEvent:
    """A restart moved: theta_0 is ready (phase 'init') or an iteration ended.

    counts: (rows used, rows skipped) the pass behind it counted, or None; rows: rows the
    iteration's pass read (for the rate), or None.
    """

    state: RestartState
    phase: str
    change: float = math.nan
    empty: tuple[int, ...] = ()
    counts: tuple[int, int] | None = None
    rows: int | None = None


def _ready(params) -> Generator[Any, Any, InitResult]:
    """An initialisation that needs no data: ``params`` as they are."""
    return InitResult(params, 0, 0, -1)
    yield  # pragma: no cover - makes this a generator


def _restart_life(state: RestartState, init_steps: Generator | None, kind: ModelKind,
                  settings: EMSettings, *, weighted: bool, refuse: bool,
                  init_transform=None, announce: bool = False
                  ) -> Generator[Any, Any, RestartState]:
    """One restart, from its initialisation to its last iteration.

    init_steps: requests returning an ``InitResult``, or None when ``state`` holds the
    parameters (a resumed restart, or a warm start, ``announce``d by an 'init' event).
    Yields requests (``models.Pass``/``FetchRows``, answered by their value) and
    ``RestartEvent``s (answered by None); returns the final state. Raises ``TooFewRows``
    when ``refuse`` and there are fewer usable rows than components."""
    if init_steps is not None:
        init = yield from init_steps
        params = init.params if init_transform is None else init_transform(init.params)
        state = replace(state, params=kind.initial_params(params))
        counts = (init.n_rows, init.n_nonfinite) if init.n_rows else None
        yield RestartEvent(state, "init", counts=counts)
    elif announce:
        yield RestartEvent(state, "init")
    while not state.finished(settings.max_iter):
        stats = yield estep_request(kind, state.params, settings.nonfinite_rule)
        check_stats(stats, settings, weighted, refuse)
        step = em_step(state, stats, kind, settings.tol)
        state = step.state
        yield RestartEvent(state, "iteration", step.change, step.empty,
                           (stats.n_rows, stats.n_nonfinite), stats.n_rows)
    return state


@dataclass(frozen=True)
class ModelSpec:
    """One model of ``fit_models``: its settings, root seed, initial-parameter hooks (as
    in ``fit_em``) and kind (default ``settings.model_kind()``)."""

    settings: EMSettings
    seed: int
    fixed_init: Callable[[engine.ChunkedData, int], Any] | None = None
    init_transform: Callable[[GMMParams], GMMParams] | None = None
    kind: ModelKind | None = None


@dataclass(frozen=True)
class ModelOutcome:
    """A model of ``fit_models``: its ``fit``, or why it was ``refused`` (more components
    than usable rows); exactly one of them is set."""

    fit: FitResult | None = None
    refused: str | None = None


@dataclass
class _Restart:
    """The driver's record of one restart: its life, its latest state, what it waits
    for (None once it ended) and why it was refused, if it was."""

    life: Generator
    state: RestartState
    request: Any = None
    refused: str | None = None


class _ModelRun:
    """One model and its restarts within a lockstep run: the driver's bookkeeping. The
    restarts' lives only yield to it; it sends their events to the callback."""

    def __init__(self, data, spec: ModelSpec, *, warm_start=None,
                 resume: EMState | None = None, callback=None, refuse: bool = False):
        settings = spec.settings
        self.settings, self.seed, self.callback = settings, spec.seed, callback
        kind = settings.model_kind() if spec.kind is None else spec.kind
        weighted = data.weights is not None
        self.n_rows, self.n_nonfinite = (resume.n_rows, resume.n_nonfinite) if resume else (0, 0)
        self.passes = resume.passes if resume else 0
        self.events: list[tuple[RestartEvent, float]] = []
        saved = {r.index: r for r in resume.restarts} if resume else {}
        life = functools.partial(_restart_life, kind=kind, settings=settings,
                                 weighted=weighted, refuse=refuse)
        self.restarts: list[_Restart] = []
        for index in range(1 if warm_start is not None else settings.n_init):
            state, init_steps, announce = RestartState(index), None, False
            if index in saved and saved[index].params is not None:
                state = saved[index]
            elif warm_start is not None:
                state, announce = RestartState(index, params=warm_start[0],
                                               lower_bound=warm_start[1]), True
            elif spec.fixed_init is not None:
                init_steps = _ready(spec.fixed_init(data, index))
            else:
                def on_first_pass(*counts):
                    check_rows(*counts, settings, weighted, refuse=refuse)

                init_steps = initial_param_steps(
                    data, settings.n_components, settings.covariance_type,
                    settings.init_params, settings.reg_covar, restart_seed(spec.seed, index),
                    on_first_pass=on_first_pass, nonfinite=settings.nonfinite,
                )
            transform = spec.init_transform if spec.fixed_init is None else None
            restart = _Restart(life(state, init_steps, init_transform=transform,
                                    announce=announce), state)
            self.restarts.append(restart)
            self.advance(index, None, 0.0)

    def advance(self, index: int, answer, seconds: float) -> None:
        """Send restart ``index`` the answer to its request; keep its events until the
        next request."""
        restart = self.restarts[index]
        try:
            item = restart.life.send(answer)
            while isinstance(item, RestartEvent):
                restart.state = item.state
                if item.counts is not None:
                    self.n_rows, self.n_nonfinite = item.counts
                rate = (math.nan if item.rows is None
                        else item.rows / seconds if seconds > 0 else math.inf)
                self.events.append((item, rate))
                item = next(restart.life)
            restart.request = item
        except StopIteration:
            restart.request = None
        except TooFewRows as exc:
            restart.refused, restart.request = str(exc), None

    @property
    def live(self) -> bool:
        return any(r.request is not None for r in self.restarts)

    @property
    def refused(self) -> str | None:
        """Why every restart was refused, or None."""
        reasons = [r.refused for r in self.restarts]
        return reasons[0] if reasons and all(reasons) else None

    def snapshot(self, focus: RestartState) -> EMState:
        states = tuple(r.state for r in self.restarts)
        return EMState(
            self.seed, focus.index, focus.iteration, focus.params, focus.lower_bound,
            focus.history, focus.converged, best_run(states, self.settings.max_iter),
            self.n_rows, self.n_nonfinite, states, self.passes,
        )

    def report(self, seconds: float) -> None:
        """Send the events of the last round to the callback, by restart."""
        events, self.events = self.events, []
        if self.callback is None:
            return
        for event, rate in sorted(events, key=lambda e: e[0].state.index):
            info = IterationInfo(self.snapshot(event.state), event.phase, event.change,
                                 seconds, rate, event.empty)
            with caller_blas_threads():
                self.callback(info)

    def outcome(self) -> ModelOutcome:
        if self.refused is not None:
            return ModelOutcome(refused=self.refused)
        states = tuple(r.state for r in self.restarts)
        best = best_run(states, self.settings.max_iter)
        final = replace(self.snapshot(states[-1]), best=best)
        return ModelOutcome(FitResult(best.params, best.lower_bound, best.n_iter,
                                      best.converged, best.history, self.n_rows,
                                      self.n_nonfinite, final))


def _run_lockstep(data, runs: list[_ModelRun], *, split_every: int, client,
                 after_round=None) -> int:
    """Answer every live restart's request until none is left; returns the passes made.

    A round serves the pending row fetches (in one read) if there are any, otherwise every
    pending pass request in one pass. after_round: ``after_round(passes, live)`` after
    every round, once the callbacks have seen its events: the passes made so far, and per
    run whether it is still live."""
    driver = models.Lockstep(data, split_every=split_every, client=client)
    for run in runs:
        run.report(0.0)
    while True:
        pending = {(r, i): restart.request for r, run in enumerate(runs)
                   for i, restart in enumerate(run.restarts) if restart.request is not None}
        if not pending:
            return driver.passes
        fetches = {k: q for k, q in pending.items() if isinstance(q, models.FetchRows)}
        t0 = time.perf_counter()
        answers = driver.serve(fetches or pending)
        seconds = time.perf_counter() - t0
        for (r, i), answer in answers.items():
            runs[r].advance(i, answer, seconds)
        moved = set() if fetches else {r for r, _ in answers}
        for r, run in enumerate(runs):
            run.passes += r in moved
            run.report(seconds)
        if after_round is not None:
            after_round(driver.passes, tuple(run.live for run in runs))


@single_blas_thread()
def fit_em(
    data: engine.ChunkedData,
    settings: EMSettings,
    *,
    seed: int,
    fixed_init: Callable[[engine.ChunkedData, int], Any] | None = None,
    warm_start: tuple[Any, float] | None = None,
    init_transform: Callable[[GMMParams], GMMParams] | None = None,
    callback: Callable[[IterationInfo], None] | None = None,
    resume: EMState | None = None,
    kind: ModelKind | None = None,
    client=None,
) -> FitResult:
    """Fit by EM; the best of ``settings.n_init`` restarts by final objective.

    The restarts run in lockstep: each pass serves every live restart (initialisation
    passes included), so the passes made are the most any restart needs. Restart i starts
    from ``restart_seed(seed, i)`` and reaches exactly what it reaches fitted alone.

    fixed_init: ``fixed_init(data, init_index)`` returns theta_0 for a restart (user-given
    initial parameters) instead of ``settings.init_params``; init_transform: applied to
    theta_0 of ``init_params`` (e.g. to put in user-given means); warm_start: (params,
    lower_bound) to continue from, one restart only; callback: called with an
    ``IterationInfo`` when a restart's theta_0 is ready and after each of its iterations;
    resume: a state from a callback, to continue an interrupted fit (restarts that were
    still initialising start their initialisation again); kind: the ``ModelKind``
    (default ``settings.model_kind()``).
    """
    if resume is not None and not resume.restarts:
        raise ValueError("the state holds no restarts: it cannot be resumed")
    spec = ModelSpec(settings, seed, fixed_init, init_transform, kind)
    run = _ModelRun(data, spec, warm_start=warm_start, resume=resume, callback=callback)
    _run_lockstep(data, [run], split_every=settings.split_every, client=client)
    return run.outcome().fit


@single_blas_thread()
def fit_models(
    data: engine.ChunkedData,
    specs: list[ModelSpec],
    *,
    client=None,
    resume: list[EMState | None] | None = None,
    callback: Callable[[int, IterationInfo], None] | None = None,
    after_round: Callable[[int, tuple[bool, ...]], None] | None = None,
) -> tuple[list[ModelOutcome], int]:
    """Fit many models in lockstep: one pass serves every live restart of every model.

    Each model's fit is exactly ``fit_em(data, spec.settings, seed=spec.seed, ...)``.
    Returns (per model a ``ModelOutcome``: its fit, or, for a model with more components
    than usable rows, why it was refused; passes made). All settings must share
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
    runs = [_ModelRun(data, spec, refuse=True,
                      resume=state if state is not None and state.restarts else None,
                      callback=None if callback is None else functools.partial(callback, i))
            for i, (spec, state) in enumerate(zip(specs, resume, strict=True))]
    passes = _run_lockstep(data, runs, split_every=split_every.pop(), client=client,
                          after_round=after_round)
    return [run.outcome() for run in runs], passes
