"""Stepwise (mini-batch) EM over row chunks: the step loop, its state, checkpoints, polish.

A pass visits the chunks in an order drawn from (seed, step counter) and takes them in
waves of ``wave_width`` chunks. Every chunk of a wave is one chain of steps from the
state the wave started with: its rows dealt into batches of at most ``batch_size`` rows
(batch b: every n_batches-th row from b on), visited in an order drawn from (seed, step
counter, chain), one step (``dgmm.core.stepwise``) each. After the wave the chains'
running statistics are averaged (``average_chains``) into the next state. The chains
of a wave run side by side, one task each where its chunk is, so the longest chain of
dependent tasks in a pass is two per wave. The result depends only on (data, chunking,
seed, settings, initial parameters), never on the cluster; ``partial_fit`` chunk by chunk with
``wave_width=1`` gives the same numbers. ``tol`` applies to the change of a pass's mean
log-likelihood; an optional polish runs batch EM. Why and how: docs/design.md,
"Mini-batch (stepwise) EM on a cluster".
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import dask
import numpy as np

from ..core import kernels
from ..core.nonfinite import NonFiniteRule, nonfinite_rule
from ..core.params import GMMParams
from ..core.stats import SuffStats
from ..core.stepwise import average_chains, statistics_of, step_size, stepwise_update
from ..core.threads import caller_blas_threads, single_blas_thread
from ..errors import DataError
from . import em
from . import passes as engine
from .init import initial_params

log = logging.getLogger(__name__)

#: waves submitted to a cluster ahead of the one the driver waits for: their chunks are
#: read while the running wave steps, and at most this many waves more are held in memory
WAVES_AHEAD = 1

@dataclass(frozen=True)
class StepwiseSettings:
    """The settings of a stepwise fit that change its numbers."""

    n_components: int
    covariance_type: str = "full"
    batch_size: int = 32768
    step_power: float = 0.6
    wave_width: int = 8
    max_iter: int = 100
    tol: float = 1e-3
    reg_covar: float = 1e-6
    polish_iter: int = 0
    init_params: str = "kmeans"
    nonfinite: str = "raise"
    split_every: int = engine.DEFAULT_SPLIT_EVERY
    #: a model kind whose ``m_step_from_averages`` updates from the running statistics
    #: (``dgmm.core.variational.VariationalBayes``: stochastic variational inference);
    #: None for maximum likelihood
    kind: Any = None

    def em_settings(self) -> em.EMSettings:
        """The batch EM settings of the polish."""
        return em.EMSettings(
            n_components=self.n_components, covariance_type=self.covariance_type,
            tol=self.tol, reg_covar=self.reg_covar, max_iter=self.polish_iter, n_init=1,
            init_params=self.init_params, nonfinite=self.nonfinite,
            split_every=self.split_every,
        )


_STATS_ARRAYS = ("shift", "nk", "s1", "s2")


@dataclass(frozen=True)
class StepwiseState:
    """Everything needed to continue a stepwise fit after any chunk.

    seed: the root seed; params: theta after ``n_steps`` steps; running: the running
    statistics (averages about ``params.means``); n_steps: steps done (t); n_passes:
    complete passes; position: chunks done in the current pass; pass_start: the step
    counter at the start of the current pass (it keys the pass's chunk order);
    pass_loglik, pass_weight: sums over the current pass's batches of log-likelihood and
    weight; pass_rows, pass_nonfinite: rows used and skipped in the current pass;
    lower_bound: the last complete pass's mean log-likelihood (-inf before);
    history: that value per pass; converged: the last change was below tol; n_rows,
    n_nonfinite: rows used and skipped in the last complete pass; polish: the batch EM
    state of the polish once it started, else None.
    """

    seed: int
    params: GMMParams
    running: SuffStats
    n_steps: int = 0
    n_passes: int = 0
    position: int = 0
    pass_start: int = 0
    pass_loglik: float = 0.0
    pass_weight: float = 0.0
    pass_rows: int = 0
    pass_nonfinite: int = 0
    lower_bound: float = -math.inf
    history: tuple[float, ...] = ()
    converged: bool = False
    n_rows: int = 0
    n_nonfinite: int = 0
    polish: em.EMState | None = None

    @classmethod
    def initial(cls, seed: int, params: GMMParams, reg_covar: float,
                kind=None) -> StepwiseState:
        """Step 0: the running statistics of ``params`` themselves (with a model ``kind``:
        its parameters and running statistics of the initialisation's mixture)."""
        if kind is not None:
            return cls(seed=seed, params=kind.initial_params(params),
                       running=kind.initial_running(params))
        return cls(seed=seed, params=params, running=statistics_of(params, reg_covar))

    def to_record(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, JSON-able metadata) that ``from_record`` turns back into this state."""
        arrays = {f"params.{k}": v for k, v in self.params.to_arrays().items()}
        arrays.update({f"running.{k}": getattr(self.running, k) for k in _STATS_ARRAYS})
        meta = {
            "kind": "stepwise",
            "seed": self.seed,
            "covariance_type": self.params.covariance_type,
            "running": {"n": self.running.n, "loglik": self.running.loglik,
                        "n_rows": self.running.n_rows,
                        "n_nonfinite": self.running.n_nonfinite},
            "polish": None,
        }
        for name in ("n_steps", "n_passes", "position", "pass_start", "pass_loglik",
                     "pass_weight", "pass_rows", "pass_nonfinite", "lower_bound",
                     "converged", "n_rows", "n_nonfinite"):
            meta[name] = getattr(self, name)
        meta["history"] = list(self.history)
        if self.polish is not None:
            polish_arrays, meta["polish"] = self.polish.to_record()
            arrays.update({f"polish.{k}": v for k, v in polish_arrays.items()})
        return arrays, meta

    @classmethod
    def from_record(cls, arrays: dict[str, np.ndarray], meta: dict,
                    kind=None) -> StepwiseState:
        """The state ``to_record`` gave; ``kind`` (anything with ``params_from_arrays``)
        rebuilds parameters other than a maximum-likelihood mixture's."""
        cov = meta["covariance_type"]
        recorded = {k[len("params."):]: v for k, v in arrays.items()
                    if k.startswith("params.")}
        params = (GMMParams(**recorded, covariance_type=cov) if kind is None
                  else kind.params_from_arrays(recorded))
        r = meta["running"]
        running = SuffStats(
            covariance_type=cov, n=float(r["n"]), loglik=float(r["loglik"]),
            n_rows=int(r["n_rows"]), n_nonfinite=int(r["n_nonfinite"]),
            **{k: np.array(arrays[f"running.{k}"], dtype=np.float64) for k in _STATS_ARRAYS},
        )
        polish = None
        if meta.get("polish") is not None:
            prefix = "polish."
            polish = em.EMState.from_record(
                {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)},
                meta["polish"])
        ints = ("n_steps", "n_passes", "position", "pass_start", "pass_rows",
                "pass_nonfinite", "n_rows", "n_nonfinite")
        return cls(
            seed=int(meta["seed"]), params=params, running=running,
            **{k: int(meta[k]) for k in ints},
            pass_loglik=float(meta["pass_loglik"]), pass_weight=float(meta["pass_weight"]),
            lower_bound=float(meta["lower_bound"]),
            history=tuple(float(v) for v in meta["history"]),
            converged=bool(meta["converged"]), polish=polish,
        )


@dataclass(frozen=True)
class StepwiseInfo:
    """What a callback receives: phase 'init' (theta_0 ready), 'chunk' (a wave of chunks'
    steps done, in mid-pass), 'pass' (a pass done) or 'polish' (a batch EM iteration of the
    polish: ``state.polish`` holds its state); seconds since the previous call."""

    state: StepwiseState
    phase: str
    seconds: float


def chunk_order(seed: int, pass_start: int, n_chunks: int) -> np.ndarray:
    """The order in which a pass that starts at step ``pass_start`` visits the chunks."""
    return np.random.default_rng([seed, pass_start, 1]).permutation(n_chunks)


def batch_count(n_rows: int, batch_size: int) -> int:
    """Batches of a chunk of ``n_rows`` rows: ceil(n_rows / batch_size), at least one.
    Batch b holds rows b, b + n_batches, b + 2 n_batches, ... (sizes differ by at most
    one row)."""
    return max(1, -(-n_rows // batch_size))


def _usable_rows(X, weights, row_offset, rule: NonFiniteRule):
    """The chunk's rows (float) that the non-finite policy's ``rule`` lets a step use:
    (X, weights, rows skipped)."""
    X = np.asarray(X)
    if X.dtype.kind != "f":
        X = X.astype(np.float64)
    return rule.usable_rows(X, weights, row_offset)


@single_blas_thread()
def advance_chunk(X, weights, row_offset: int, state: StepwiseState,
                  settings: StepwiseSettings, chain: int = 0) -> StepwiseState:
    """All the steps of one chunk's batches, from ``state``; returns the state after them.

    X: (n_samples, n_features) rows of the chunk; weights: (n_samples,) or None;
    row_offset: the chunk's first global row (for error messages); chain: the chunk's
    place in its wave (it seeds the order of the batches with the seed and step counter).
    """
    rule = nonfinite_rule(settings.nonfinite)
    X, weights, n_bad = _usable_rows(X, weights, row_offset, rule)
    n_batches = batch_count(X.shape[0], settings.batch_size)
    batches = np.random.default_rng([state.seed, state.n_steps, 0, chain]).permutation(n_batches)
    params, running, n_steps = state.params, state.running, state.n_steps
    loglik, weight = state.pass_loglik, state.pass_weight
    empty: set[int] = set()
    workspace = kernels.Workspace(kernels.compute_dtype(X))
    buffer = np.empty((-(-X.shape[0] // n_batches), X.shape[1]), dtype=X.dtype)
    for b in batches:
        # every n_batches-th row from b on: each batch spans the whole chunk, so rows
        # stored in some order do not bias a step. Copied into one contiguous buffer:
        # BLAS on a strided view may round differently from process to process.
        rows = X[b::n_batches]
        batch = buffer[: rows.shape[0]]
        np.copyto(batch, rows)
        batch_w = None if weights is None else np.array(weights[b::n_batches])
        stats = kernels.chunk_stats(batch, params, batch_w, nonfinite=rule,
                                    workspace=workspace)
        if not stats.n > 0:  # no rows, or only zero weights: nothing to learn from
            continue
        step = stepwise_update(params, running, stats,
                               step_size(n_steps, settings.step_power), settings.reg_covar,
                               settings.kind)
        params, running, n_steps = step.params, step.running, n_steps + 1
        loglik, weight = loglik + stats.loglik, weight + stats.n
        empty.update(step.empty)
    if empty:
        log.warning("components %s were empty in steps on rows %d..%d; they keep their "
                    "previous mean and covariance (see dgmm.core.mstep)", sorted(empty),
                    row_offset, row_offset + X.shape[0] + n_bad - 1)
    return replace(state, params=params, running=running, n_steps=n_steps,
                   position=state.position + 1, pass_loglik=loglik, pass_weight=weight,
                   pass_rows=state.pass_rows + X.shape[0],
                   pass_nonfinite=state.pass_nonfinite + n_bad)


@single_blas_thread()
def end_wave(start: StepwiseState, *chains: StepwiseState,
             reg_covar: float, kind=None) -> StepwiseState:
    """The state after a wave: ``chains`` are the states each chunk's chain of steps
    reached from ``start``. One chain is the next state as it is; several are averaged
    (``dgmm.core.stepwise.average_chains``, weighted by the rows each stepped through),
    the step counter advances by the longest chain's steps and the pass accumulators add
    up."""
    if len(chains) == 1:
        return chains[0]
    gained = [c.pass_weight - start.pass_weight for c in chains]
    params, running = start.params, start.running
    if any(g > 0 for g in gained):
        step = average_chains(start.params, [c.running for c in chains], gained, reg_covar,
                              kind)
        params, running = step.params, step.running
        if step.empty:
            log.warning("components %s were empty after averaging a wave's chains; they "
                        "keep their previous mean and covariance", list(step.empty))

    def added(name):
        return sum(getattr(c, name) - getattr(start, name) for c in chains)

    return replace(
        start, params=params, running=running,
        n_steps=max(c.n_steps for c in chains), position=start.position + len(chains),
        pass_loglik=start.pass_loglik + added("pass_loglik"),
        pass_weight=start.pass_weight + added("pass_weight"),
        pass_rows=start.pass_rows + added("pass_rows"),
        pass_nonfinite=start.pass_nonfinite + added("pass_nonfinite"),
    )


def wave_starts(position: int, n_chunks: int, wave_width: int) -> list[int]:
    """The positions in the chunk order where the waves from ``position`` on start."""
    return list(range(position, n_chunks, wave_width))


def wave_graph(data: engine.ChunkedData, order: np.ndarray, state, settings: StepwiseSettings,
               position: int):
    """The lazy state after the wave that starts at ``position`` of ``order``.

    ``state``: the state the wave starts from, as a value, a Delayed or a Future (the
    previous wave's, still running). One task per chunk of the wave (its chain of steps,
    depending on the chunk's read and on ``state``), then one task that ends the wave.
    """
    if isinstance(state, StepwiseState):
        state = dask.delayed(state, pure=True, traverse=False)
    advance = dask.delayed(advance_chunk, pure=True)
    chains = []
    stop = min(data.n_chunks, position + settings.wave_width)
    for chain, at in enumerate(range(position, stop)):
        i = int(order[at])
        w = None if data.weights is None else data.weights[i]
        chains.append(advance(data.blocks[i], w, data.offsets[i], state, settings, chain))
    return dask.delayed(end_wave, pure=True)(state, *chains, reg_covar=settings.reg_covar,
                                             kind=settings.kind)


def pass_graph(data: engine.ChunkedData, state: StepwiseState, settings: StepwiseSettings):
    """The lazy state at the end of the rest of the current pass (no ``end_pass``): the
    waves from ``state.position`` on, each depending on the one before."""
    order = chunk_order(state.seed, state.pass_start, data.n_chunks)
    carry = state
    for position in wave_starts(state.position, data.n_chunks, settings.wave_width):
        carry = wave_graph(data, order, carry, settings, position)
    return carry


def _wave_states_local(data: engine.ChunkedData, order, state, settings):
    """The state after each remaining wave of the pass, computed by the default
    scheduler (the chains of a wave side by side)."""
    for position in wave_starts(state.position, data.n_chunks, settings.wave_width):
        state = dask.compute(wave_graph(data, order, state, settings, position))[0]
        yield state


def _wave_states_cluster(data: engine.ChunkedData, order, state, settings, client):
    """The same on a cluster: each wave submitted as soon as ``WAVES_AHEAD`` waves are
    queued before it, its chains depending on the previous wave's (future) state, so its
    chunks are read while that wave runs and no wave waits for a round trip."""
    queued: deque = deque()
    carry = state
    for position in wave_starts(state.position, data.n_chunks, settings.wave_width):
        carry = client.compute(wave_graph(data, order, carry, settings, position))
        queued.append(carry)
        if len(queued) > WAVES_AHEAD:
            yield queued.popleft().result()
    while queued:
        yield queued.popleft().result()


def end_pass(state: StepwiseState, tol: float | None) -> StepwiseState:
    """Fold the pass accumulators into the pass history and start the next pass;
    ``tol`` None records the pass without judging convergence (``partial_fit``)."""
    mean = state.pass_loglik / state.pass_weight if state.pass_weight > 0 else math.nan
    change = mean - state.lower_bound
    return replace(
        state, n_passes=state.n_passes + 1, position=0, pass_start=state.n_steps,
        pass_loglik=0.0, pass_weight=0.0, pass_rows=0, pass_nonfinite=0,
        lower_bound=mean, history=state.history + (mean,),
        converged=tol is not None and abs(change) < tol,
        n_rows=state.pass_rows, n_nonfinite=state.pass_nonfinite,
    )


def _notify(callback, state, phase, t0):
    if callback is not None:
        with caller_blas_threads():
            callback(StepwiseInfo(state, phase, time.perf_counter() - t0))
    return time.perf_counter()


def run_pass(data: engine.ChunkedData, state: StepwiseState, settings: StepwiseSettings, *,
             callback: Callable[[StepwiseInfo], None] | None = None, client=None,
             tol: float | None = None) -> StepwiseState:
    """The rest of the current pass from ``state.position``; returns the state after it
    (passed through ``end_pass``). ``callback`` gets a 'chunk' state after every wave
    but the last, then the 'pass' state."""
    order = chunk_order(state.seed, state.pass_start, data.n_chunks)
    if client is None:
        states = _wave_states_local(data, order, state, settings)
    else:
        states = _wave_states_cluster(data, order, state, settings, client)
    t0 = time.perf_counter()
    for state in states:
        if state.position < data.n_chunks:
            t0 = _notify(callback, state, "chunk", t0)
    state = end_pass(state, tol)
    if state.n_rows < settings.n_components:
        raise DataError(
            f"Only {state.n_rows} usable row(s) for n_components={settings.n_components}"
            + (f" after skipping {state.n_nonfinite} non-finite row(s)"
               if state.n_nonfinite else "") + ". Use fewer components or more data."
        )
    _notify(callback, state, "pass", t0)
    return state


def initial_state(data: engine.ChunkedData, settings: StepwiseSettings, seed: int, *,
                  fixed_init: Callable[[engine.ChunkedData], GMMParams] | None = None,
                  client=None) -> StepwiseState:
    """theta_0 (by ``settings.init_params`` or ``fixed_init``) and its running statistics."""
    if fixed_init is not None:
        params = fixed_init(data)
    else:
        def check_rows(n_rows, n_nonfinite, first_nonfinite):
            nonfinite_rule(settings.nonfinite).check_skipped(n_nonfinite, first_nonfinite)
            if n_rows < settings.n_components:
                raise DataError(
                    f"Only {n_rows} usable row(s) for n_components={settings.n_components}. "
                    "Use fewer components or more data.")

        params = initial_params(
            data, settings.n_components, settings.covariance_type, settings.init_params,
            settings.reg_covar, em.restart_seed(seed, 0), on_first_pass=check_rows,
            split_every=settings.split_every, client=client,
        ).params
    return StepwiseState.initial(seed, params, settings.reg_covar, settings.kind)


@single_blas_thread()
def fit_stepwise(data: engine.ChunkedData, settings: StepwiseSettings, state: StepwiseState,
                 *, callback: Callable[[StepwiseInfo], None] | None = None,
                 client=None) -> StepwiseState:
    """Passes from ``state`` (an initial state, a checkpointed one in mid-pass, or a fitted
    one to continue) until ``settings.max_iter`` passes in all or convergence, then the
    polish when ``settings.polish_iter`` > 0. Returns the final state."""
    while state.n_passes < settings.max_iter and not state.converged and state.polish is None:
        state = run_pass(data, state, settings, callback=callback, client=client,
                         tol=settings.tol)
    if settings.polish_iter > 0:
        state = _polish(data, state, settings, callback, client)
    return state


def _polish(data, state, settings, callback, client) -> StepwiseState:
    stepwise = state

    def on_iteration(info: em.IterationInfo):
        if callback is not None:
            callback(StepwiseInfo(replace(stepwise, polish=info.state), "polish",
                                  info.seconds))

    if settings.kind is not None:
        raise ValueError("the polish runs maximum-likelihood EM: no polish_iter with a "
                         "model kind")
    result = em.fit_em(
        data, settings.em_settings(), seed=state.seed,
        warm_start=(state.params, -math.inf), callback=on_iteration,
        resume=state.polish, client=client,
    )
    return replace(state, params=result.params,
                   running=statistics_of(result.params, settings.reg_covar),
                   polish=result.final_state)
