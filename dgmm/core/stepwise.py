"""Stepwise (mini-batch) EM on running statistics: pure functions, no Dask.

Running statistics ``s`` are a ``SuffStats`` divided by the weight it came from
(``n == 1``: averages per row), kept about the current means. One step on a mini-batch B:

    s_B = stats(B; theta) / |B|;   eta_t = (t + 2)^(-alpha), 0.5 < alpha <= 1
    s  <- (1 - eta_t) s + eta_t s_B;   theta <- M-step(s);   t <- t + 1

then ``s`` moves to the new means as shift (S1 and S2 about c' from those about c), so that
it shares the shift of the next batch's statistics. With eta = 1 and B = all rows a step is
one batch EM iteration. Chains of steps run side by side from one state end in one state
by ``average_chains``: their running statistics averaged (weighted by the rows each chain
saw), then the M-step. References: Liang and Klein 2009; Cappe and Moulines 2009.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .families import family
from .mstep import m_step
from .params import GMMParams
from .stats import SuffStats


def step_size(n_steps: int, step_power: float) -> float:
    """eta_t = (t + 2)^(-alpha) for the step that follows ``n_steps`` steps."""
    return float((n_steps + 2.0) ** (-step_power))


def as_average(stats: SuffStats) -> SuffStats:
    """``stats`` divided by its total weight (``n`` becomes 1); ``stats.n`` must be > 0."""
    n = stats.n
    return replace(stats, n=1.0, loglik=stats.loglik / n, nk=stats.nk / n, s1=stats.s1 / n,
                   s2=stats.s2 / n)


def moved_to(stats: SuffStats, shift: np.ndarray) -> SuffStats:
    """The same statistics about another shift (K, d): S1 and S2 about ``shift``."""
    shift = np.asarray(shift, dtype=np.float64)
    delta = stats.shift - shift
    s2 = family(stats.covariance_type).move_s2(stats.s2, stats.nk, stats.s1, delta)
    return replace(stats, shift=shift, s1=stats.s1 + stats.nk[:, None] * delta, s2=s2)


def blend(running: SuffStats, batch: SuffStats, eta: float) -> SuffStats:
    """(1 - eta) running + eta batch, both averages about the same shift."""
    if not np.array_equal(running.shift, batch.shift):
        raise ValueError("running and batch statistics must share their shift")
    keep = 1.0 - eta
    return replace(
        running,
        n=keep * running.n + eta * batch.n,
        loglik=keep * running.loglik + eta * batch.loglik,
        nk=keep * running.nk + eta * batch.nk,
        s1=keep * running.s1 + eta * batch.s1,
        s2=keep * running.s2 + eta * batch.s2,
        n_rows=running.n_rows + batch.n_rows,
        n_nonfinite=running.n_nonfinite + batch.n_nonfinite,
    )


def statistics_of(params: GMMParams, reg_covar: float) -> SuffStats:
    """Average statistics about ``params.means`` whose M-step gives back ``params``
    (up to rounding): the running statistics a fit starts from."""
    kind = params.family
    s2 = kind.moments_of(params.weights, params.covariances, reg_covar, params.n_features)
    return SuffStats(
        covariance_type=params.covariance_type,
        shift=np.array(params.means),
        n=1.0,
        loglik=0.0,
        nk=np.array(params.weights, dtype=np.float64),
        s1=np.zeros_like(params.means),
        s2=np.asarray(s2, dtype=np.float64),
    )


@dataclass(frozen=True)
class StepResult:
    """One step's outcome: the new parameters, the running statistics about their means,
    and the components found empty by the M-step."""

    params: GMMParams
    running: SuffStats
    empty: tuple[int, ...]


def _update(running: SuffStats, params, reg_covar: float, kind):
    """The M-step of running statistics: maximum likelihood's ``m_step`` (``kind`` None),
    or the model kind's update from averages (``m_step_from_averages``, e.g. stochastic
    variational inference)."""
    if kind is None:
        return m_step(running, reg_covar, previous=params)
    return kind.m_step_from_averages(running, params)


def stepwise_update(params: GMMParams, running: SuffStats, batch: SuffStats, eta: float,
                    reg_covar: float, kind=None) -> StepResult:
    """One step: blend the batch's statistics (raw sums under ``params``, shift = its
    means, ``batch.n > 0``) into ``running`` with weight ``eta``, then the M-step.

    The M-step is ``dgmm.core.mstep.m_step`` with its empty-component and collapse rules,
    or with a model ``kind`` its ``m_step_from_averages``.
    """
    merged = blend(running, as_average(batch), eta)
    step = _update(merged, params, reg_covar, kind)
    return StepResult(step.params, moved_to(merged, step.params.means), step.empty)


def average_chains(params: GMMParams, chains: list[SuffStats], weights: list[float],
                   reg_covar: float, kind=None) -> StepResult:
    """One state from chains of steps that all started at ``params``.

    chains: each chain's running statistics (averages, each about its own means);
    weights: the weight of the rows each chain stepped through (>= 0, sum > 0). The
    weighted average is taken about ``params.means`` (a valid running statistic: a convex
    combination of valid ones), then the M-step (``previous=params`` for empty
    components). A chain that saw all rows in one step with eta makes this exactly one
    step with eta on the union of the chains' rows.
    """
    total = float(sum(weights))
    if not total > 0:
        raise ValueError("the chains' weights must have a positive sum")
    shift = np.asarray(params.means, dtype=np.float64)
    mean = None
    for running, weight in zip(chains, weights, strict=True):
        if weight <= 0:
            continue
        part = moved_to(running, shift)
        share = weight / total
        scaled = replace(part, n=share * part.n, loglik=share * part.loglik,
                         nk=share * part.nk, s1=share * part.s1, s2=share * part.s2)
        mean = scaled if mean is None else mean.merge(scaled)
    mean = replace(mean, n_rows=sum(c.n_rows for c in chains),
                   n_nonfinite=sum(c.n_nonfinite for c in chains), first_nonfinite=-1)
    step = _update(mean, params, reg_covar, kind)
    return StepResult(step.params, moved_to(mean, step.params.means), step.empty)
