"""The state of a fit and what it reports: ``EMState`` (everything needed to continue a
fit after any iteration of any of its restarts, and its checkpoint record),
``IterationInfo`` (what a callback receives) and ``FitResult`` (the best restart).

``EMState.to_record`` gives (arrays, JSON-able metadata) and ``EMState.from_record`` turns
them back into the state; a fit resumed from it (``dgmm.engine.em.fit_em(...,
resume=state)``) ends bit-identical to an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.model_kinds import MaximumLikelihood, ModelKind
from .iteration import RestartState, RunResult


def best_run(restarts, max_iter: int) -> RunResult | None:
    """The finished restart with the highest final objective (the first on a tie)."""
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
    params: Any
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
    def from_record(cls, arrays: dict[str, np.ndarray], meta: dict,
                    kind: ModelKind | None = None) -> EMState:
        """The state ``to_record`` gave; ``kind`` rebuilds the parameters (default:
        maximum likelihood of the recorded covariance type)."""
        kind = MaximumLikelihood(meta["covariance_type"]) if kind is None else kind

        def params(prefix):
            start = f"{prefix}."
            return kind.params_from_arrays({k[len(start):]: v for k, v in arrays.items()
                                            if k.startswith(start)})

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

    phase: 'init' (theta_0 ready) or 'iteration'; change: objective minus the previous
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

    params: Any
    lower_bound: float
    n_iter: int
    converged: bool
    history: tuple[float, ...]
    n_rows: int
    n_nonfinite: int
    final_state: EMState
