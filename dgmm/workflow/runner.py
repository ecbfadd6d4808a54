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

When ``model.random_state`` is not set, the seed is derived from the settings hash, so a
workflow run twice (or resumed) gives the same model.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from dask.utils import format_bytes

from ..core.nonfinite import nonfinite_rule
from ..data import readers as data_io
from ..data.files import is_url
from ..data.model_io import read_model_meta, save_model
from ..data.publish import join, read_json, write_json
from ..data.redact import redact, register
from ..engine.em import EMState, IterationInfo
from ..errors import CheckpointError, ConfigError, DataError, NotConvergedError
from ..estimators import load_model
from . import cluster as cluster_mod
from .checkpoint import CheckpointStore
from .schema import Workflow

log = logging.getLogger(__name__)

STAMP_FILE = "_dgmm_stamp.json"


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


def _params_checksum(params) -> str:
    digest = hashlib.sha256()
    for name, arr in params.to_arrays().items():
        digest.update(name.encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _seed(workflow: Workflow) -> int:
    if workflow.model.random_state is not None:
        return int(workflow.model.random_state)
    return int(workflow.settings_hash()[:8], 16)


class _Progress:
    """Turns iteration callbacks into progress lines, metrics and checkpoints."""

    def __init__(self, emit, store: CheckpointStore | None, every: int, stamp: dict,
                 max_iter: int):
        self.emit = emit
        self.store = store
        self.every = every
        self.max_iter = max_iter
        self.stamp = stamp
        self.started = time.perf_counter()

    def __call__(self, info: IterationInfo) -> None:
        st = info.state
        if info.phase == "init":
            self.emit(f"init {st.init_index + 1}: initial parameters ready "
                      f"({info.seconds:.2f} s)")
        else:
            change = f"{info.change: .3e}" if math.isfinite(info.change) else "     n/a  "
            self.emit(
                f"init {st.init_index + 1} iter {st.iteration:4d}  "
                f"mean log-lik {st.lower_bound: .8f}  change {change}  "
                f"{info.seconds:6.2f} s  {info.rows_per_second:,.0f} rows/s"
                + (f"  empty components {list(info.empty)}" if info.empty else "")
            )
        if self.store is None:
            return
        if info.phase == "iteration":
            self.store.append_metrics({
                "init": st.init_index, "iteration": st.iteration,
                "lower_bound": st.lower_bound,
                # strict JSON: the first iteration's change (from -inf) is null
                "change": info.change if math.isfinite(info.change) else None,
                "seconds": info.seconds,
                "rows_per_second": info.rows_per_second, "n_rows": st.n_rows,
                "converged": st.converged, "time": time.time(),
            })
        last = st.converged or info.phase == "init" or st.iteration >= self.max_iter
        if last or st.iteration % self.every == 0:
            arrays, meta = st.to_record()
            meta.update(self.stamp)
            self.store.save(self._step(st), arrays, meta)

    @staticmethod
    def _step(state: EMState) -> int:
        # restarts run in lockstep: the passes made so far increase across all of them
        return state.passes


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
    return data_io.open_source(cfg.reader_kind, cfg.path, **cfg.open_kwargs())


def _write_stamp(path: str, stamp: dict, storage_options: dict) -> None:
    """The stamp of a finished output (local path or fsspec URL)."""
    write_json(join(path, STAMP_FILE), stamp, storage_options)


def _stamp_matches(path: str | None, expected: dict, storage_options: dict) -> bool:
    if path is None:
        return False
    stamp = read_json(join(path, STAMP_FILE), storage_options)
    return isinstance(stamp, dict) and all(stamp.get(k) == v for k, v in expected.items())


def _model_matches(path: str | None, expected: dict, storage_options: dict) -> bool:
    if path is None:
        return False
    try:
        meta = read_model_meta(path, storage_options)
    except DataError:
        return False
    return all(meta.get(key) == value for key, value in expected.items())


def _warm_start_checksum(workflow: Workflow) -> str:
    """sha256 of the ``warm_start_from`` model's array checksums and saved state."""
    path = workflow.model.warm_start_from
    if workflow.outputs.model is not None and (
            os.path.abspath(path) == os.path.abspath(workflow.outputs.model)):
        raise ConfigError(
            f"model.warm_start_from and outputs.model are both {path!r}: an update writes "
            "a new model next to the one it continues. Give outputs.model a path of its "
            "own (for example one directory per day)."
        )
    meta = read_model_meta(path)
    if meta.get("stepwise") is None:
        raise ConfigError(
            f"model.warm_start_from={path!r}: that model was not fitted by mini-batch EM, "
            "so it has no running statistics to continue. Point warm_start_from at a model "
            "written by a workflow with model.algorithm: minibatch."
        )
    text = json.dumps({"arrays": meta["arrays"], "stepwise": meta["stepwise"]},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


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
            stamp["warm_start_checksum"] = _warm_start_checksum(workflow)
        outputs = workflow.outputs

        model = selection = None
        if "fit" in workflow.steps:
            if not force and not restart and _model_matches(outputs.model, stamp, out_options):
                summary.skipped.append("fit")
                emit(f"fit: up to date ({outputs.model})")
            else:
                if data_io.decide_persist(info.nbytes, workflow.data.persist, client):
                    emit(f"data: keeping {format_bytes(info.nbytes)} in worker memory")
                    X = client.persist(X)
                if workflow.select is not None:
                    model, selection = _fit_selection(workflow, X, client, stamp, restart,
                                                      emit, summary)
                else:
                    fit = _fit_minibatch if workflow.model.algorithm == "minibatch" else _fit
                    model = fit(workflow, X, client, stamp, restart, emit, summary)
                summary.ran.append("fit")
        if model is None:
            model = _load_saved_model(outputs.model, out_options, client)
            if workflow.select is not None:
                selection = _load_selection(workflow, model, out_options)
        summary.n_iter, summary.converged = model.n_iter_, model.converged_
        summary.lower_bound = model.lower_bound_
        expected = {**stamp, "model_checksum": _params_checksum(model.params_)}

        if "predict" in workflow.steps:
            path = outputs.predictions
            options = out_options
            if not force and _stamp_matches(path, expected, options):
                summary.skipped.append("predict")
                emit(f"predict: up to date ({path})")
            else:
                from ..data.outputs import write_predictions

                t0 = time.perf_counter()
                write_predictions(X, model.params_, path, format=outputs.predictions_format,
                                  client=client, storage_options=options,
                                  marginalize=nonfinite_rule(
                                      workflow.data.nonfinite).missing_values)
                _write_stamp(path, expected, options)
                emit(f"predict: wrote {path} ({time.perf_counter() - t0:.1f} s)")
                summary.ran.append("predict")
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
                bic, aic = information_criteria(mean_ll, n, model.params_.n_free_parameters())
                summary.score = {"mean_log_likelihood": mean_ll, "bic": bic, "aic": aic,
                                 "n_rows": n}
                if score_path:
                    write_json(score_path, {**expected, "score": summary.score}, out_options)
                emit(f"score: mean log-likelihood {mean_ll:.6f}, BIC {summary.score['bic']:.1f}")
                summary.ran.append("score")

        if "report" in workflow.steps:
            if (not force and "fit" not in summary.ran
                    and _stamp_matches(outputs.report, expected, out_options)):
                summary.skipped.append("report")
                emit(f"report: up to date ({outputs.report})")
            else:
                from .report import write_report

                written = write_report(
                    outputs.report, model, X, info, workflow=workflow, score=summary.score,
                    client=client, storage_options=out_options, selection=selection,
                )
                _write_stamp(outputs.report, expected, out_options)
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


def _fit(workflow: Workflow, X, client, stamp, restart, emit, summary: RunSummary):
    from ..core.variational import RecordedPosteriors
    from ..estimators.bayesian import BayesianGaussianMixture
    from ..estimators.gaussian_mixture import ConvergenceWarning, GaussianMixture

    cfg = workflow.checkpoint
    kwargs = workflow.estimator_kwargs()
    kwargs["random_state"] = _seed(workflow)
    kwargs["verbose"] = 0
    variational = workflow.model.kind == "variational_bayes"
    cls = BayesianGaussianMixture if variational else GaussianMixture
    estimator = cls(**kwargs, client=client)
    store = (CheckpointStore(cfg.dir, keep=cfg.keep,
                             storage_options=workflow.storage_options_for("checkpoint"))
             if cfg.dir else None)

    def fit(resume):
        progress = _Progress(emit, store, cfg.every, stamp, workflow.model.max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator.fit(X, callback=progress, resume=resume)

    if store is None:
        fit(None)
    else:
        with store.lock():
            if restart:
                removed = store.clear()
                if removed:
                    emit(f"restart: removed {len(removed)} checkpoint file(s) in {cfg.dir}")
            resume = None
            found = store.load_latest(expect=stamp)
            if found is not None:
                arrays, meta = found
                try:
                    resume = EMState.from_record(
                        arrays, meta,
                        RecordedPosteriors(meta["covariance_type"]) if variational else None)
                    if not resume.restarts:
                        raise KeyError("restarts")
                except (KeyError, TypeError, ValueError) as exc:
                    raise CheckpointError(
                        f"The newest checkpoint in {cfg.dir} lacks what a fit needs ({exc}). "
                        "Run again with --restart to start over."
                    ) from None
                summary.resumed_from = resume.iteration
                done = {r.index: r.iteration for r in resume.restarts}
                store.truncate_metrics(
                    lambda r: (r.get("iteration") or 0) <= done.get(r.get("init"), 0))
                emit(f"resuming from checkpoint: init {resume.init_index + 1}, "
                     f"iteration {resume.iteration}")
            fit(resume)
    if workflow.outputs.model:
        save_model(workflow.outputs.model, estimator, **stamp,
                   storage_options=workflow.storage_options_for("outputs"))
        bound = "lower bound" if variational else "mean log-likelihood"
        emit(f"fit: {estimator.n_iter_} iterations, converged={estimator.converged_}, "
             f"{bound} {estimator.lower_bound_:.6f}; model written to "
             f"{workflow.outputs.model}")
    return estimator


class _StepwiseProgress:
    """Turns stepwise callbacks into progress lines (pass and step), metrics and
    checkpoints: after every ``every`` chunk tasks of a pass, at the end of every pass,
    after initialisation and after every ``every`` polish iterations."""

    def __init__(self, emit, store: CheckpointStore | None, every: int, stamp: dict,
                 n_chunks: int):
        self.emit = emit
        self.store = store
        self.every = every
        self.stamp = stamp
        self.n_chunks = n_chunks
        self.pass_seconds = 0.0

    @staticmethod
    def key(state) -> int:
        """One increasing number across restarts: (steps, polish iteration)."""
        polish = 0 if state.polish is None else state.polish.iteration + 1
        return state.n_steps * 1_000_000 + polish

    def __call__(self, info) -> None:
        st, phase = info.state, info.phase
        if phase == "init":
            self.emit("init: initial parameters ready")
            save = True
        elif phase == "chunk":
            self.pass_seconds += info.seconds
            self.emit(f"pass {st.n_passes + 1} chunk {st.position}/{self.n_chunks} "
                      f"step {st.n_steps}  {info.seconds:6.2f} s")
            save = st.position % self.every == 0
        elif phase == "pass":
            seconds, self.pass_seconds = self.pass_seconds + info.seconds, 0.0
            self.emit(f"pass {st.n_passes} done  step {st.n_steps}  "
                      f"mean log-lik {st.lower_bound: .8f}  {seconds:6.2f} s")
            save = True
            self._metrics({"pass": st.n_passes, "n_steps": st.n_steps,
                           "lower_bound": st.lower_bound, "n_rows": st.n_rows,
                           "converged": st.converged, "seconds": seconds}, st)
        elif st.polish.iteration == 0:  # the polish starts from the stepwise result
            self.emit(f"polish: batch EM from step {st.n_steps}")
            save = False
        else:
            polish = st.polish
            self.emit(f"polish iter {polish.iteration:4d}  step {st.n_steps}  "
                      f"mean log-lik {polish.lower_bound: .8f}  {info.seconds:6.2f} s")
            save = polish.converged or polish.iteration % self.every == 0
            self._metrics({"polish_iteration": polish.iteration, "n_steps": st.n_steps,
                           "lower_bound": polish.lower_bound,
                           "converged": polish.converged, "seconds": info.seconds}, st)
        if self.store is not None and save:
            arrays, meta = st.to_record()
            meta.update(self.stamp)
            self.store.save(self.key(st), arrays, meta)

    def _metrics(self, record: dict, state) -> None:
        if self.store is not None:
            bound = record["lower_bound"]
            record["lower_bound"] = bound if math.isfinite(bound) else None
            self.store.append_metrics({**record, "key": self.key(state), "time": time.time()})


def _fit_minibatch(workflow: Workflow, X, client, stamp, restart, emit, summary: RunSummary):
    """The fit step with ``model.algorithm: minibatch`` (stepwise EM, resumable)."""
    from ..engine.minibatch import StepwiseState
    from ..estimators.gaussian_mixture import ConvergenceWarning
    from ..estimators.minibatch import MiniBatchGaussianMixture, continuation

    cfg = workflow.checkpoint
    kwargs = workflow.estimator_kwargs()
    kwargs["random_state"] = _seed(workflow)
    kwargs["verbose"] = 0
    start = None
    warm_from = workflow.model.warm_start_from
    if warm_from is not None:
        saved = load_model(warm_from,
                           storage_options=workflow.storage_options_for("outputs"))
        for name in ("n_components", "covariance_type"):
            if getattr(saved, name) != kwargs[name]:
                raise ConfigError(
                    f"model.{name}={kwargs[name]!r} differs from the {name} "
                    f"{getattr(saved, name)!r} of the model at warm_start_from={warm_from!r}; "
                    f"an update continues that model: set model.{name} to its value."
                )
        if saved.n_features_in_ != X.shape[1]:
            raise DataError(
                f"The data at {workflow.data.path!r} have {X.shape[1]} features, but the "
                f"model at warm_start_from={warm_from!r} has {saved.n_features_in_}. An "
                "update needs rows with the same features."
            )
        start = continuation(saved.state_)
        # max_iter more passes after those of the saved model
        kwargs["max_iter"] = start.n_passes + workflow.model.max_iter
        emit(f"warm start: {warm_from} ({start.n_passes} passes, {start.n_steps} steps)")
    estimator = MiniBatchGaussianMixture(**kwargs, client=client)
    store = (CheckpointStore(cfg.dir, keep=cfg.keep,
                             storage_options=workflow.storage_options_for("checkpoint"))
             if cfg.dir else None)
    n_chunks = len(X.chunks[0]) if hasattr(X, "chunks") else 1

    def fit(resume):
        progress = _StepwiseProgress(emit, store, cfg.every, stamp, n_chunks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator.fit(X, callback=progress, resume=resume)

    if store is None:
        fit(start)
    else:
        with store.lock():
            if restart:
                removed = store.clear()
                if removed:
                    emit(f"restart: removed {len(removed)} checkpoint file(s) in {cfg.dir}")
            resume = start
            found = store.load_latest(expect=stamp)
            if found is not None:
                arrays, meta = found
                try:
                    resume = StepwiseState.from_record(arrays, meta)
                except (KeyError, TypeError, ValueError) as exc:
                    raise CheckpointError(
                        f"The newest checkpoint in {cfg.dir} lacks what a mini-batch fit "
                        f"needs ({exc}). Run again with --restart to start over."
                    ) from None
                summary.resumed_from = resume.n_steps
                done = _StepwiseProgress.key(resume)
                store.truncate_metrics(lambda r: r.get("key", -1) <= done)
                emit(f"resuming from checkpoint: pass {resume.n_passes + 1}, chunk "
                     f"{resume.position}, step {resume.n_steps}")
            fit(resume)
    if workflow.outputs.model:
        extra = {k: v for k, v in stamp.items()
                 if k not in ("settings_hash", "data_fingerprint")}
        save_model(workflow.outputs.model, estimator, settings_hash=stamp["settings_hash"],
                   data_fingerprint=stamp["data_fingerprint"], extra=extra)
        emit(f"fit: {estimator.n_passes_} passes, {estimator.n_steps_} steps, "
             f"mean log-likelihood {estimator.lower_bound_:.6f}; model written to "
             f"{workflow.outputs.model}")
    return estimator


# ------------------------------------------------------------------------- selection


class _SelectionProgress:
    """Turns the rounds of a grid fit into progress lines, metrics and checkpoints."""

    def __init__(self, emit, store: CheckpointStore | None, every: int, stamp: dict,
                 n_candidates: int):
        self.emit = emit
        self.store = store
        self.every = every
        self.stamp = stamp
        self.n_candidates = n_candidates
        self.saved_passes = -1
        self.last_passes = None
        self.started = time.perf_counter()
        self._done: set = set()  # candidates already reported done

    def __call__(self, progress) -> None:
        finished = []
        for (k, c), info in progress.events:
            st = info.state
            if info.phase == "iteration" and self.store is not None:
                self.store.append_metrics({
                    "n_components": k, "covariance_type": c, "init": st.init_index,
                    "iteration": st.iteration, "lower_bound": st.lower_bound,
                    "change": info.change if math.isfinite(info.change) else None,
                    "seconds": info.seconds, "converged": st.converged,
                    "time": time.time(),
                })
        for (k, c), state, live in zip(progress.candidates, progress.states, progress.live,
                                       strict=True):
            if not live and state is not None and (k, c) not in self._done:
                self._done.add((k, c))
                best = state.best
                finished.append(
                    f"candidate K={k} {c}: done, {best.n_iter} iterations, converged="
                    f"{best.converged}, mean log-lik {best.lower_bound:.6f}"
                    if best is not None else f"candidate K={k} {c}: done")
        moved = progress.passes != self.last_passes
        if moved:
            self.last_passes = progress.passes
            self.emit(f"pass {progress.passes:4d}  candidates live {progress.n_live}/"
                      f"{self.n_candidates}  {time.perf_counter() - self.started:7.1f} s")
        for line in finished:
            self.emit(line)
        if self.store is None or not moved:
            return
        if finished or progress.n_live == 0 or progress.passes - self.saved_passes >= self.every:
            arrays, meta = progress.to_record()
            meta.update(self.stamp)
            self.store.save(progress.passes, arrays, meta)
            self.saved_passes = progress.passes


def _selection_estimator(workflow: Workflow, client):
    from ..estimators.selection import GaussianMixtureSelection

    kwargs = workflow.estimator_kwargs()
    for name in ("n_components", "covariance_type"):
        kwargs.pop(name)
    kwargs["random_state"] = _seed(workflow)
    kwargs["verbose"] = 0
    select = workflow.select
    return GaussianMixtureSelection(
        n_components=select.ks(), covariance_type=select.covariance_types(),
        criterion=select.criterion, memory_budget=select.memory_budget, client=client,
        **kwargs)


def _fit_selection(workflow: Workflow, X, client, stamp, restart, emit, summary: RunSummary):
    """The ``fit`` step of a workflow with a ``select`` section: every candidate of the
    grid in the same passes, checkpointed as a whole; returns (best model, selection)."""
    from ..estimators.gaussian_mixture import ConvergenceWarning
    from ..estimators.selection import SelectionState

    cfg = workflow.checkpoint
    selection = _selection_estimator(workflow, client)
    grid = [(k, c) for c in workflow.select.covariance_types() for k in workflow.select.ks()]
    emit(f"select: {len(grid)} candidates (K in {workflow.select.ks()} x "
         f"{', '.join(workflow.select.covariance_types())}), best by "
         f"{workflow.select.criterion.upper()}")
    store = (CheckpointStore(cfg.dir, keep=cfg.keep,
                             storage_options=workflow.storage_options_for("checkpoint"))
             if cfg.dir else None)

    def fit(resume):
        progress = _SelectionProgress(emit, store, cfg.every, stamp, len(grid))
        if resume is not None:
            progress._done = {kc for kc, live in zip(resume.candidates, resume.live, strict=True)
                              if not live}
            progress.saved_passes = progress.last_passes = resume.passes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            selection.fit(X, callback=progress, resume=resume)

    if store is None:
        fit(None)
    else:
        with store.lock():
            if restart:
                removed = store.clear()
                if removed:
                    emit(f"restart: removed {len(removed)} checkpoint file(s) in {cfg.dir}")
            resume = None
            found = store.load_latest(expect=stamp)
            if found is not None:
                arrays, meta = found
                try:
                    resume = SelectionState.from_record(arrays, meta)
                except (KeyError, TypeError, ValueError) as exc:
                    raise CheckpointError(
                        f"The newest checkpoint in {cfg.dir} lacks what a model selection "
                        f"needs ({exc}). Run again with --restart to start over."
                    ) from None
                done = {}
                for (k, c), state in zip(resume.candidates, resume.states, strict=True):
                    for r in (state.restarts if state is not None else ()):
                        done[(k, c, r.index)] = r.iteration
                store.truncate_metrics(lambda r: (r.get("iteration") or 0) <= done.get(
                    (r.get("n_components"), r.get("covariance_type"), r.get("init")), 0))
                summary.resumed_from = resume.passes
                emit(f"resuming from checkpoint: pass {resume.passes}, "
                     f"{resume.n_live} of {len(resume.candidates)} candidates live")
            fit(resume)
    for (k, c), why in selection.refused_.items():
        emit(f"select: refused candidate K={k} {c}: {why}")
    best = selection.best_estimator_
    summary.best_params = dict(selection.best_params_)
    emit(f"select: best by {selection.criterion.upper()}: K={best.n_components} "
         f"{best.covariance_type} ({selection.n_passes_} passes for "
         f"{len(selection.results_)} fits)")
    if workflow.outputs.model:
        save_model(workflow.outputs.model, best, **stamp,
                   extra={"selection": _selection_record(selection)},
                   storage_options=workflow.storage_options_for("outputs"))
        emit(f"fit: {best.n_iter_} iterations, converged={best.converged_}, "
             f"mean log-likelihood {best.lower_bound_:.6f}; model written to "
             f"{workflow.outputs.model}")
    return best, selection


def _selection_record(selection) -> dict:
    """The selection's table and choice as JSON (kept with the saved model)."""
    return {
        "criterion": selection.criterion,
        "best_params": dict(selection.best_params_),
        "n_passes": int(selection.n_passes_),
        "refused": [{"n_components": k, "covariance_type": c, "reason": why}
                    for (k, c), why in selection.refused_.items()],
        "results": [{key: getattr(value, "item", lambda value=value: value)()
                     for key, value in row.items()}
                    for row in selection.results_.to_dict(orient="records")],
    }


def _load_selection(workflow: Workflow, model, storage_options: dict):
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
