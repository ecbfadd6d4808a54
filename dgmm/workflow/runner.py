"""Run a workflow's steps: fit, predict, score, report; resumable and idempotent.

``run_workflow(workflow)`` connects to the cluster of the workflow, opens (or first
generates) the data, and runs the steps in order:

- ``fit``: EM with a checkpoint after every ``checkpoint.every`` iterations (under the
  checkpoint directory's lock); a run that finds a checkpoint of the same settings and
  data resumes from the newest valid one and ends with exactly the parameters of an
  uninterrupted run. The fitted model is written to ``outputs.model``. With
  ``model.algorithm: minibatch`` the fit is stepwise EM (``MiniBatchGaussianMixture``),
  checkpointed after every ``checkpoint.every`` chunk tasks and at the end of each pass;
  ``model.warm_start_from`` continues a saved mini-batch model on this data (its
  running statistics and step counter) for ``max_iter`` more passes.
- ``predict``: per-row labels, probabilities and log-likelihood to ``outputs.predictions``.
- ``score``: mean log-likelihood, BIC and AIC of the data under the model.
- ``report``: ``report.json`` and plots in ``outputs.report``.

``restart=True`` deletes the checkpoints first; ``force=True`` reruns every step and
refits from scratch (it implies ``restart``).

Idempotence: every output carries a stamp (the settings hash, the data fingerprint, the
checksum of the ``warm_start_from`` model if any, and the model's checksum). A step whose
output exists with a matching stamp is skipped; when every step is skipped the run did
nothing, and says so. ``force=True`` reruns every step.

The fit step and its resume sequence are in ``dgmm.workflow.fitting``, the progress lines
and checkpoints of each kind of fit in ``dgmm.workflow.progress``, the stamps in
``dgmm.workflow.stamps``.

When ``model.random_state`` is not set, the seed is derived from the settings hash, so a
workflow run twice (or resumed) gives the same model.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dask.utils import format_bytes

from ..core.nonfinite import nonfinite_rule
from ..data import readers as data_io
from ..data.files import is_url
from ..data.publish import join, read_json, write_json
from ..data.redact import redact, register
from ..engine.persist import decide_persist
from ..engine.tasks import cluster_task_bytes, task_bytes
from ..errors import DataError, NotConvergedError
from ..estimators import load_model
from . import cluster as cluster_mod
from . import fitting
from .checkpoint import CheckpointStore
from .monitoring import StepClock, ensure_training_record, fit_passes, training_of
from .schema import Workflow
from .stamps import model_matches, params_checksum, stamp_matches, warm_start_checksum, write_stamp

log = logging.getLogger(__name__)



@dataclass
class RunSummary:
    """What a run did: the steps run and skipped, and the figures worth printing."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    resumed_from: int | None = None
    best_params: dict | None = None
    n_iter: int | None = None
    converged: bool | None = None
    lower_bound: float | None = None
    score: dict | None = None
    outputs: dict = field(default_factory=dict)

    @property
    def did_nothing(self) -> bool:
        return not self.ran


def _open_data(workflow: Workflow, client, emit):
    cfg = workflow.data
    if cfg.source == "synthetic":
        from ..data.synthetic import make_gmm_data

        exists = os.path.exists(cfg.path) if not is_url(cfg.path) else None
        if exists is False:
            s = cfg.synthetic
            emit(f"generating {s.rows:,} rows x {s.features} features ({s.components} "
                 f"components) at {cfg.path}")
            make_gmm_data(
                cfg.path, s.rows, s.features, s.components, covariance_type=s.covariance_type,
                chunk_rows=s.chunk_rows, seed=s.seed, dtype=cfg.dtype,
                separation=s.separation, fmt="zarr", client=client,
            )
    kwargs = cfg.open_kwargs()
    if cfg.chunk_bytes is None and client is not None:
        kwargs["target_chunk_bytes"] = default_task_bytes(workflow.cluster, client)
    return data_io.open_source(cfg.reader_kind, cfg.path, **kwargs)


def default_task_bytes(cluster_config, client) -> int:
    """Bytes of rows per chunk task when ``data.chunk_bytes`` is unset
    (``dgmm.engine.tasks.task_bytes``): for a batch-job profile, from its configured size
    (jobs, or the adaptive maximum), since its jobs start over minutes and the chunking,
    part of the data's fingerprint, must come out the same when a run resumes; otherwise
    from the workers the client sees."""
    planned = getattr(cluster_config, "planned_workers", None)
    if planned is not None:
        threads, memory_limit = planned()
        return task_bytes(threads, memory_limit=memory_limit)
    return cluster_task_bytes(client)


def _load_saved_model(path: str | None, storage_options: dict, client):
    """The fitted estimator saved at ``path`` (``dgmm.load_model`` with the outputs'
    storage options)."""
    if path is None:
        raise DataError("No fitted model: add 'fit' to steps, or point outputs.model at a "
                        "model written by a previous fit.")
    try:
        return load_model(path, storage_options=storage_options, client=client)
    except DataError as exc:
        raise DataError(f"No fitted model at outputs.model={path!r} ({exc}): add 'fit' to "
                        "steps, or point outputs.model at a model written by a previous "
                        "fit.") from None


def _storage_error(workflow: Workflow, exc: BaseException) -> DataError:
    """A storage failure (after the retries of the storage client) as a ``DataError``
    naming the workflow's URLs, with secrets redacted."""
    places = [("data.path", workflow.data.path), ("checkpoint.dir", workflow.checkpoint.dir),
              ("outputs.model", workflow.outputs.model),
              ("outputs.predictions", workflow.outputs.predictions),
              ("outputs.report", workflow.outputs.report)]
    urls = ", ".join(f"{key}={value}" for key, value in places if value and is_url(value))
    return DataError(redact(
        f"Storage failed: {type(exc).__name__}: {exc}"
        + (f" (this workflow's URLs: {urls})" if urls else "")
        + ". The requests were retried and still failed: check that the store is "
        "reachable and the credentials in storage_options, then run again; finished "
        "checkpoints and outputs are kept, and the run resumes from the last checkpoint."
    ))


def _is_storage_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    if module.startswith(("distributed", "tornado")):  # the cluster's comms, not storage
        return False
    if isinstance(exc, OSError):
        return True
    return module.startswith(("botocore", "aiobotocore", "aiohttp", "google", "azure"))


def run_workflow(
    workflow: Workflow,
    *,
    restart: bool = False,
    force: bool = False,
    emit: Callable[[str], None] = lambda line: None,
) -> RunSummary:
    """Run ``workflow.steps`` in order; see the module docstring. Returns a RunSummary.

    A storage failure that outlives the storage client's retries (a store that stays
    down) raises ``DataError`` naming the workflow's URLs.
    """
    for section in ("data", "checkpoint", "outputs"):
        register(getattr(workflow, section).storage_options)
    try:
        return _run(workflow, restart=restart, force=force, emit=emit)
    except Exception as exc:
        if _is_storage_error(exc):
            raise _storage_error(workflow, exc) from None
        raise


def _run(workflow: Workflow, *, restart: bool, force: bool, emit) -> RunSummary:
    summary = RunSummary()
    restart = restart or force
    out_options = workflow.storage_options_for("outputs")
    emit(f"cluster: {cluster_mod.describe(workflow.cluster)}")
    with cluster_mod.connect(workflow.cluster) as client:
        if getattr(client, "dashboard_link", None):
            emit(f"dashboard: {client.dashboard_link}")
        X, info = _open_data(workflow, client, emit)
        emit(f"data: {info.describe()}")
        data_io.validate_rows(info, workflow.model.n_components)
        stamp = {"settings_hash": workflow.settings_hash(), "data_fingerprint": info.fingerprint}
        if workflow.model.warm_start_from is not None:
            stamp["warm_start_checksum"] = warm_start_checksum(workflow)
        outputs = workflow.outputs

        model = selection = training = None
        clock = StepClock()
        if "fit" in workflow.steps:
            if not force and not restart and model_matches(outputs.model, stamp, out_options):
                summary.skipped.append("fit")
                emit(f"fit: up to date ({outputs.model})")
                clock.done("fit", "up to date")
            else:
                if decide_persist(info.nbytes, workflow.data.persist, client):
                    emit(f"data: keeping {format_bytes(info.nbytes)} in worker memory")
                    X = client.persist(X)
                if workflow.select is not None:
                    model, selection, summary.resumed_from = fitting.fit_selection(
                        workflow, X, client, stamp, restart, emit)
                    summary.best_params = dict(selection.best_params_)
                else:
                    fit = (fitting.fit_minibatch if workflow.model.algorithm == "minibatch"
                           else fitting.fit_em)
                    model, summary.resumed_from = fit(workflow, X, client, stamp, restart,
                                                      emit)
                summary.ran.append("fit")
                clock.done("fit", "ran", fit_passes(model, selection) or 0)
        if model is None:
            model = _load_saved_model(outputs.model, out_options, client)
            if workflow.select is not None:
                selection = fitting.load_selection(workflow, model, out_options)
        if "fit" in workflow.steps:  # the training data's summary, kept in the model
            training, reads = ensure_training_record(
                outputs.model, model, X, info, client, out_options,
                nonfinite_rule(workflow.data.nonfinite).missing_values)
            clock.add_reads("fit", reads)
        else:
            training = training_of(outputs.model, out_options)
        summary.n_iter, summary.converged = model.n_iter_, model.converged_
        summary.lower_bound = model.lower_bound_
        expected = {**stamp, "model_checksum": params_checksum(model.params_)}

        if "predict" in workflow.steps:
            path = outputs.predictions
            options = out_options
            if not force and stamp_matches(path, expected, options):
                summary.skipped.append("predict")
                emit(f"predict: up to date ({path})")
            else:
                from ..data.outputs import write_predictions

                t0 = time.perf_counter()
                write_predictions(X, model.inference_params(), path,
                                  format=outputs.predictions_format,
                                  client=client, storage_options=options,
                                  marginalize=nonfinite_rule(
                                      workflow.data.nonfinite).missing_values)
                write_stamp(path, expected, options)
                emit(f"predict: wrote {path} ({time.perf_counter() - t0:.1f} s)")
                summary.ran.append("predict")
            ran = summary.ran[-1:] == ["predict"]
            clock.done("predict", "ran" if ran else "up to date", int(ran))
            summary.outputs["predictions"] = path

        if "score" in workflow.steps:
            score_path = join(outputs.report, "score.json") if outputs.report else None
            previous = read_json(score_path, out_options) if score_path else None
            if (not force and previous is not None
                    and all(previous.get(k) == v for k, v in expected.items())):
                summary.score = previous["score"]
                summary.skipped.append("score")
                emit("score: up to date")
            else:
                from ..estimators.gaussian_mixture import information_criteria

                mean_ll, n = model.score_and_count(X)
                # a variational posterior has no BIC or AIC (as in scikit-learn)
                bic = aic = None
                if not hasattr(model, "posterior_"):
                    bic, aic = information_criteria(mean_ll, n,
                                                    model.params_.n_free_parameters())
                summary.score = {"mean_log_likelihood": mean_ll, "bic": bic, "aic": aic,
                                 "n_rows": n}
                if score_path:
                    write_json(score_path, {**expected, "score": summary.score}, out_options)
                emit(f"score: mean log-likelihood {mean_ll:.6f}"
                     + ("" if bic is None else f", BIC {bic:.1f}"))
                summary.ran.append("score")
            ran = summary.ran[-1:] == ["score"]
            clock.done("score", "ran" if ran else "up to date", int(ran))

        # scoring against a saved model: the page (with drift) even without a report step
        page_only = ("report" not in workflow.steps and "fit" not in workflow.steps
                     and outputs.report is not None
                     and any(s in workflow.steps for s in ("predict", "score")))
        if "report" in workflow.steps or page_only:
            # a report that failed its drift thresholds has no stamp: a rerun checks again
            expected = {**expected, "monitor": (workflow.monitor.model_dump()
                                                if workflow.monitor else None)}
            if (not force and "fit" not in summary.ran
                    and stamp_matches(outputs.report, expected, out_options)):
                summary.skipped.append("report")
                emit(f"report: up to date ({outputs.report})")
            else:
                from .report import write_report

                written = write_report(
                    outputs.report, model, X, info, workflow=workflow, score=summary.score,
                    client=client, storage_options=out_options, selection=selection,
                    run={"cluster": cluster_mod.describe(workflow.cluster),
                         "model_path": outputs.model, "steps": clock.current("report")},
                    metrics=_metrics(workflow), training=training, monitor=workflow.monitor,
                )
                write_stamp(outputs.report, expected, out_options)
                emit(f"report: wrote {', '.join(p.rsplit('/', 1)[-1] for p in written)} "
                     f"in {outputs.report}")
                summary.ran.append("report")
            summary.outputs["report"] = outputs.report

    if workflow.model.require_convergence and not summary.converged:
        raise NotConvergedError(
            f"EM did not converge within max_iter={workflow.model.max_iter} iterations "
            f"(last change above tol={workflow.model.tol}); the model was written to "
            f"{outputs.model}. Raise model.max_iter or model.tol, or set "
            "model.require_convergence: false to accept it."
        )
    return summary


def _metrics(workflow: Workflow) -> list | None:
    """The checkpoint's metric records (every restart's iterations), or None."""
    if not workflow.checkpoint.dir:
        return None
    store = CheckpointStore(workflow.checkpoint.dir,
                            storage_options=workflow.storage_options_for("checkpoint"))
    return store.read_metrics()
