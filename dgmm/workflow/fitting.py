"""The fit step of a workflow, resumable: batch EM, stepwise EM or a model selection.

Each fit runs under the checkpoint directory's lock and resumes from the newest checkpoint
of the same settings and data (:func:`fit_resumably`, the one resume sequence: lock,
clear on ``--restart``, load the newest checkpoint, drop the metrics computed after it,
fit); the model is written to ``outputs.model`` with the run's stamp.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.variational import RecordedPosteriors
from ..data.model_io import read_model_meta, save_model
from ..engine.em import EMState
from ..engine.sample import RowSample
from ..engine.search import sample_from_record
from ..errors import CheckpointError, ConfigError, DataError
from ..estimators import load_model
from .checkpoint import CheckpointStore
from .progress import EMProgress, SelectionProgress, StepwiseProgress
from .report import selection_record
from .schema import Workflow

__all__ = ["Resumption", "fit_resumably", "fit_em", "fit_minibatch", "fit_selection",
           "load_selection", "seed"]


def seed(workflow: Workflow) -> int:
    """``model.random_state``, or else a seed derived from the settings hash (a workflow
    run twice, or resumed, gives the same model)."""
    if workflow.model.random_state is not None:
        return int(workflow.model.random_state)
    return int(workflow.settings_hash()[:8], 16)


@dataclass(frozen=True)
class Resumption:
    """How a fit of one kind resumes from its newest checkpoint.

    Parameters
    ----------
    what : str
        The fit, for messages (``'a fit'``, ``'a mini-batch fit'`` ...).
    from_record : callable
        ``(arrays, meta) -> state``; raises ``KeyError``, ``TypeError`` or ``ValueError``
        when the checkpoint lacks what the fit needs.
    kept_metrics : callable
        ``state -> (record -> bool)``: the ``metrics.jsonl`` records computed up to the
        state (those after it are computed again and dropped).
    position : callable
        ``state -> int``: where the fit resumes (``RunSummary.resumed_from``).
    describe : callable
        ``state -> str``: where the fit resumes, for the progress line.
    """

    what: str
    from_record: Callable[[dict, dict], Any]
    kept_metrics: Callable[[Any], Callable[[dict], bool]]
    position: Callable[[Any], int]
    describe: Callable[[Any], str]


def fit_resumably(store: CheckpointStore | None, resumption: Resumption, fit, *,
                  stamp: dict, restart: bool, emit, start=None) -> int | None:
    """Run ``fit(resume)`` under the lock of ``store``, from its newest checkpoint.

    Parameters
    ----------
    store : CheckpointStore or None
        The checkpoint directory; None runs ``fit(start)`` without checkpoints.
    resumption : Resumption
        How this kind of fit reads its checkpoint.
    fit : callable
        ``resume -> None``: runs the fit from ``resume`` (None: from the start).
    stamp : dict
        What the checkpoint's meta must hold (settings hash, data fingerprint ...);
        another raises ``CheckpointError``.
    restart : bool
        Remove the checkpoints (and the metrics) first.
    emit : callable
        Prints a progress line.
    start : object, optional
        The state to start from when there is no checkpoint (a warm start).

    Returns
    -------
    int or None
        ``resumption.position`` of the checkpoint resumed from; None when none was.
    """
    if store is None:
        fit(start)
        return None
    resumed_from = None
    with store.lock():
        if restart:
            removed = store.clear()
            if removed:
                emit(f"restart: removed {len(removed)} checkpoint file(s) in {store.dir}")
        resume = start
        found = store.load_latest(expect=stamp)
        if found is not None:
            try:
                resume = resumption.from_record(*found)
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(
                    f"The newest checkpoint in {store.dir} lacks what {resumption.what} "
                    f"needs ({exc}). Run again with --restart to start over."
                ) from None
            resumed_from = resumption.position(resume)
            store.truncate_metrics(resumption.kept_metrics(resume))
            emit(f"resuming from checkpoint: {resumption.describe(resume)}")
        fit(resume)
    return resumed_from


def _checkpoint_store(workflow: Workflow) -> CheckpointStore | None:
    cfg = workflow.checkpoint
    if not cfg.dir:
        return None
    return CheckpointStore(cfg.dir, keep=cfg.keep,
                           storage_options=workflow.storage_options_for("checkpoint"))


def _estimator_kwargs(workflow: Workflow) -> dict:
    kwargs = workflow.estimator_kwargs()
    kwargs["random_state"] = seed(workflow)
    kwargs["verbose"] = 0
    return kwargs


def _em_state(arrays: dict, meta: dict) -> EMState | RowSample:
    """The checkpointed ``EMState``, or the sample when the run stopped during the search."""
    if meta.get("kind") == "sample":
        return sample_from_record(arrays, meta)
    state = EMState.from_record(arrays, meta, RecordedPosteriors.of_record(arrays, meta))
    if not state.restarts:
        raise KeyError("restarts")
    return state


def _em_metrics_kept(state: EMState | RowSample):
    if isinstance(state, RowSample):
        return lambda r: r.get("phase") == "sample"
    done = {r.index: r.iteration for r in state.restarts}
    return lambda r: (r.get("iteration") or 0) <= done.get(r.get("init"), 0)


def _em_describe(state: EMState | RowSample) -> str:
    if isinstance(state, RowSample):
        return f"the sample of {state.rows.shape[0]:,} rows (the search runs again)"
    return f"init {state.init_index + 1}, iteration {state.iteration}"


EM_RESUMPTION = Resumption(
    what="a fit", from_record=_em_state, kept_metrics=_em_metrics_kept,
    position=lambda state: 0 if isinstance(state, RowSample) else state.iteration,
    describe=_em_describe,
)


def fit_em(workflow: Workflow, X, client, stamp: dict, restart: bool, emit):
    """The fit step with ``model.algorithm: em`` (batch EM, or batch variational inference
    with ``model.kind: variational_bayes``); returns ``(fitted GaussianMixture or
    BayesianGaussianMixture, position resumed from or None)``."""
    from ..estimators.bayesian import BayesianGaussianMixture
    from ..estimators.gaussian_mixture import ConvergenceWarning, GaussianMixture

    variational = workflow.model.kind == "variational_bayes"
    cls = BayesianGaussianMixture if variational else GaussianMixture
    estimator = cls(**_estimator_kwargs(workflow), client=client)
    store = _checkpoint_store(workflow)

    def fit(resume):
        progress = EMProgress(emit, store, workflow.checkpoint.every, stamp,
                              workflow.model.max_iter,
                              "lower bound" if variational else "mean log-lik")
        sample = resume if isinstance(resume, RowSample) else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            search = {} if variational else {"sample": sample,
                                             "search_callback": progress.search_event}
            estimator.fit(X, callback=progress, resume=None if sample else resume, **search)

    resumed_from = fit_resumably(store, EM_RESUMPTION, fit, stamp=stamp, restart=restart,
                                 emit=emit)
    if workflow.outputs.model:
        save_model(workflow.outputs.model, estimator, **stamp,
                   storage_options=workflow.storage_options_for("outputs"))
        bound = "lower bound" if variational else "mean log-likelihood"
        emit(f"fit: {estimator.n_iter_} iterations, converged={estimator.converged_}, "
             f"{bound} {estimator.lower_bound_:.6f}; model written to "
             f"{workflow.outputs.model}")
    return estimator, resumed_from


def _stepwise_state(arrays: dict, meta: dict):
    """The checkpointed ``StepwiseState`` (of posteriors, after stochastic variational
    inference)."""
    from ..engine.minibatch import StepwiseState

    return StepwiseState.from_record(arrays, meta, RecordedPosteriors.of_record(arrays, meta))


def _stepwise_resumption() -> Resumption:
    def kept(state):
        done = StepwiseProgress.key(state)
        return lambda r: r.get("key", -1) <= done

    return Resumption(
        what="a mini-batch fit", from_record=_stepwise_state, kept_metrics=kept,
        position=lambda state: state.n_steps,
        describe=lambda state: (f"pass {state.n_passes + 1}, chunk {state.position}, "
                                f"step {state.n_steps}"),
    )


def _warm_model(workflow: Workflow, kwargs: dict, n_features: int):
    """The saved model that ``model.warm_start_from`` continues, checked against the
    workflow (same kind, components, covariance type and features)."""
    warm_from = workflow.model.warm_start_from
    saved = load_model(warm_from, storage_options=workflow.storage_options_for("outputs"))
    saved_kind = ("variational_bayes" if hasattr(saved, "posterior_")
                  else "maximum_likelihood")
    if saved_kind != workflow.model.kind:
        raise ConfigError(
            f"model.kind is {workflow.model.kind!r}, but the model at "
            f"warm_start_from={warm_from!r} is a {saved_kind} mixture; an update continues "
            f"that model: set model.kind: {saved_kind}, or point warm_start_from at a "
            f"{workflow.model.kind} model."
        )
    for name in ("n_components", "covariance_type"):
        if getattr(saved, name) != kwargs[name]:
            raise ConfigError(
                f"model.{name}={kwargs[name]!r} differs from the {name} "
                f"{getattr(saved, name)!r} of the model at warm_start_from={warm_from!r}; "
                f"an update continues that model: set model.{name} to its value."
            )
    if saved.n_features_in_ != n_features:
        raise DataError(
            f"The data at {workflow.data.path!r} have {n_features} features, but the "
            f"model at warm_start_from={warm_from!r} has {saved.n_features_in_}. An "
            "update needs rows with the same features."
        )
    return saved


def _minibatch_estimator(workflow: Workflow, client, n_features: int, emit):
    """The estimator of ``model.algorithm: minibatch`` and the state it starts from when
    there is no checkpoint (a warm start's saved state, or None).

    A maximum-likelihood update starts ``MiniBatchGaussianMixture`` from the saved state
    (``max_iter`` becomes its passes plus ``model.max_iter``); a variational one gives the
    saved posterior, running averages and prior to a ``MiniBatchBayesianGaussianMixture``
    with ``warm_start``, which continues them (and keeps their prior on a resume)."""
    from ..estimators.minibatch import MiniBatchGaussianMixture, continuation
    from ..estimators.minibatch_bayesian import MiniBatchBayesianGaussianMixture

    kwargs = _estimator_kwargs(workflow)
    variational = workflow.model.kind == "variational_bayes"
    cls = MiniBatchBayesianGaussianMixture if variational else MiniBatchGaussianMixture
    if workflow.model.warm_start_from is None:
        return cls(**kwargs, client=client), None
    saved = _warm_model(workflow, kwargs, n_features)
    emit(f"warm start: {workflow.model.warm_start_from} ({saved.state_.n_passes} passes, "
         f"{saved.state_.n_steps} steps)")
    if variational:
        estimator = cls(**{**kwargs, "warm_start": True}, client=client)
        estimator._set_stepwise(saved.state_, saved.kind_)
        return estimator, None
    start = continuation(saved.state_)
    kwargs["max_iter"] = start.n_passes + workflow.model.max_iter
    return cls(**kwargs, client=client), start


def fit_minibatch(workflow: Workflow, X, client, stamp: dict, restart: bool, emit):
    """The fit step with ``model.algorithm: minibatch`` (stepwise EM, or stochastic
    variational inference with ``model.kind: variational_bayes``); returns ``(fitted
    MiniBatchGaussianMixture or MiniBatchBayesianGaussianMixture, step resumed from or
    None)``."""
    from ..estimators.gaussian_mixture import ConvergenceWarning

    estimator, start = _minibatch_estimator(workflow, client, X.shape[1], emit)
    store = _checkpoint_store(workflow)
    n_chunks = len(X.chunks[0]) if hasattr(X, "chunks") else 1
    variational = workflow.model.kind == "variational_bayes"

    def fit(resume):
        progress = StepwiseProgress(emit, store, workflow.checkpoint.every, stamp, n_chunks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator.fit(X, callback=progress, resume=resume)

    resumed_from = fit_resumably(store, _stepwise_resumption(), fit, stamp=stamp,
                                 restart=restart, emit=emit, start=start)
    if workflow.outputs.model:
        extra = {k: v for k, v in stamp.items()
                 if k not in ("settings_hash", "data_fingerprint")}
        save_model(workflow.outputs.model, estimator, settings_hash=stamp["settings_hash"],
                   data_fingerprint=stamp["data_fingerprint"], extra=extra,
                   storage_options=workflow.storage_options_for("outputs"))
        what = "mean log normaliser" if variational else "mean log-likelihood"
        emit(f"fit: {estimator.n_passes_} passes, {estimator.n_steps_} steps, "
             f"{what} {estimator.lower_bound_:.6f}; model written to "
             f"{workflow.outputs.model}")
    return estimator, resumed_from


# ------------------------------------------------------------------------- selection


def _selection_estimator(workflow: Workflow, client):
    from ..estimators.selection import GaussianMixtureSelection

    kwargs = _estimator_kwargs(workflow)
    for name in ("n_components", "covariance_type"):
        kwargs.pop(name)
    select = workflow.select
    return GaussianMixtureSelection(
        n_components=select.ks(), covariance_type=select.covariance_types(),
        criterion=select.criterion, memory_budget=select.memory_budget, client=client,
        **kwargs)


def _selection_resumption() -> Resumption:
    from ..estimators.selection import SelectionState

    def kept(state):
        done = {}
        for (k, c), candidate in zip(state.candidates, state.states, strict=True):
            for r in (candidate.restarts if candidate is not None else ()):
                done[(k, c, r.index)] = r.iteration
        return lambda r: (r.get("iteration") or 0) <= done.get(
            (r.get("n_components"), r.get("covariance_type"), r.get("init")), 0)

    return Resumption(
        what="a model selection", from_record=SelectionState.from_record, kept_metrics=kept,
        position=lambda state: state.passes,
        describe=lambda state: (f"pass {state.passes}, {state.n_live} of "
                                f"{len(state.candidates)} candidates live"),
    )


def fit_selection(workflow: Workflow, X, client, stamp: dict, restart: bool, emit):
    """The ``fit`` step of a workflow with a ``select`` section: every candidate of the
    grid in the same passes, checkpointed as a whole; returns
    ``(best model, fitted GaussianMixtureSelection, pass resumed from or None)``."""
    from ..estimators.gaussian_mixture import ConvergenceWarning

    selection = _selection_estimator(workflow, client)
    grid = [(k, c) for c in workflow.select.covariance_types() for k in workflow.select.ks()]
    emit(f"select: {len(grid)} candidates (K in {workflow.select.ks()} x "
         f"{', '.join(workflow.select.covariance_types())}), best by "
         f"{workflow.select.criterion.upper()}")
    store = _checkpoint_store(workflow)

    def fit(resume):
        progress = SelectionProgress(emit, store, workflow.checkpoint.every, stamp, len(grid))
        if resume is not None:
            progress.resume_from(resume)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            selection.fit(X, callback=progress, resume=resume)

    resumed_from = fit_resumably(store, _selection_resumption(), fit, stamp=stamp,
                                 restart=restart, emit=emit)
    for (k, c), why in selection.refused_.items():
        emit(f"select: refused candidate K={k} {c}: {why}")
    best = selection.best_estimator_
    emit(f"select: best by {selection.criterion.upper()}: K={best.n_components} "
         f"{best.covariance_type} ({selection.n_passes_} passes for "
         f"{len(selection.results_)} fits)")
    if workflow.outputs.model:
        save_model(workflow.outputs.model, best, **stamp,
                   extra={"selection": selection_record(selection)},
                   storage_options=workflow.storage_options_for("outputs"))
        emit(f"fit: {best.n_iter_} iterations, converged={best.converged_}, "
             f"mean log-likelihood {best.lower_bound_:.6f}; model written to "
             f"{workflow.outputs.model}")
    return best, selection, resumed_from


def load_selection(workflow: Workflow, model, storage_options: dict):
    """The selection of a fit run earlier, from the saved model's record (for the report)."""
    import pandas as pd

    from ..estimators.selection import RESULT_COLUMNS

    record = read_model_meta(workflow.outputs.model, storage_options).get("selection")
    if record is None:
        raise DataError(
            f"The model at outputs.model={workflow.outputs.model!r} holds no model "
            "selection table: it was not written by a workflow with a select section. Add "
            "'fit' to steps, or point outputs.model at the model of this workflow."
        )
    selection = _selection_estimator(workflow, None)
    selection.results_ = pd.DataFrame(record["results"], columns=RESULT_COLUMNS)
    selection.best_params_ = record["best_params"]
    selection.n_passes_ = record["n_passes"]
    selection.refused_ = {(r["n_components"], r["covariance_type"]): r["reason"]
                          for r in record.get("refused", ())}
    selection.best_estimator_ = model
    return selection
