"""The ``dgmm`` command: the only place that prints for the user and exits.

Each failure class has its own exit code (``dgmm.errors.EXIT_CODE_TABLE``, shown by
``dgmm --help``), for schedulers and scripts.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys
import traceback

from ._version import __version__
from .core.types import COVARIANCE_TYPES
from .errors import (
    EXIT_CODE_TABLE,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_UNEXPECTED,
    ConfigError,
    DgmmError,
)


def _redact(text: str) -> str:
    # imported when first needed: dgmm.data pulls in Dask, whose logging set-up must
    # come after main() has configured it
    from .data.redact import redact

    return redact(text)


def _emit(line: str) -> None:
    print(_redact(line), flush=True)


def _error(line: str) -> None:
    print(_redact(line), file=sys.stderr, flush=True)


class Stopped(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM or SIGINT: unwinds the run so that the
    checkpoint lock is released and the cluster's workers are stopped."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals():
    """Turn the first SIGTERM or SIGINT into ``Stopped``; later ones are ignored while
    the run cleans up."""
    stopping = []

    def handler(signum, frame):
        if stopping:
            return
        stopping.append(signum)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def exit_codes_text() -> str:
    """The exit-code table as plain text (the epilog of ``dgmm --help``)."""
    lines = ["exit codes:"]
    for row in EXIT_CODE_TABLE:
        error = f"{row.error.__name__}: " if row.error is not None else ""
        lines.append(f"  {row.code:<5}{error}{row.meaning}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dgmm",
        description="Fit Gaussian mixture models by out-of-core EM on a Dask cluster.",
        epilog=exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dgmm {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a workflow file (fit, predict, score, report)")
    run.add_argument("workflow", help="path of the workflow YAML file")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override a key, e.g. model.n_components=12")
    run.add_argument("--restart", action="store_true",
                     help="ignore and delete existing checkpoints; start the fit over")
    run.add_argument("--force", action="store_true",
                     help="rerun every step even when its outputs are up to date")
    run.add_argument("--quiet", action="store_true", help="print only the final summary")

    validate = sub.add_parser("validate", help="check a workflow file without running it")
    validate.add_argument("workflow", help="path of the workflow YAML file")
    validate.add_argument("--set", dest="overrides", action="append", default=[],
                          metavar="KEY=VALUE", help="override a key, as for run")

    make = sub.add_parser("make-data", help="write synthetic mixture data (Zarr or Parquet)")
    make.add_argument("--rows", type=int, required=True, help="number of rows")
    make.add_argument("--features", type=int, required=True, help="number of columns")
    make.add_argument("--components", type=int, required=True,
                      help="components of the generating mixture")
    make.add_argument("--out", required=True, help="*.zarr or *.parquet path or URL")
    make.add_argument("--covariance-type", default="full", choices=COVARIANCE_TYPES,
                      metavar="TYPE",
                      help="covariance type of the generating mixture: scikit-learn's four "
                           "or mclust's fourteen names (default: full)")
    make.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    make.add_argument("--chunk-rows", type=int, default=None,
                      help="rows per stored chunk (default: about 16 MiB per chunk)")
    make.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                      help="stored dtype (default: float64)")
    make.add_argument("--separation", type=float, default=4.0,
                      help="distance of the two closest means in standard deviations "
                      "(default: 4)")
    make.add_argument("--format", dest="fmt", default=None, choices=["zarr", "parquet"],
                      help="output format (default: from the suffix of --out)")
    make.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    make.add_argument("--cluster", default="local",
                      help="cluster profile name or path (default: local)")

    predict = sub.add_parser("predict", help="write predictions of a saved model for data")
    predict.add_argument("--model", required=True, help="model directory (outputs.model)")
    predict.add_argument("--data", required=True, help="data path or URL")
    predict.add_argument("--source", choices=["zarr", "parquet", "npy"], default=None,
                         help="data kind (default: from the suffix)")
    predict.add_argument("--columns", default=None, help="Parquet columns, comma-separated")
    predict.add_argument("--array-path", default=None, help="Zarr array inside a group")
    predict.add_argument("--out", required=True, help="*.zarr or *.parquet output")
    predict.add_argument("--cluster", default="local",
                         help="cluster profile name or path (default: local)")
    predict.add_argument("--report", default=None, metavar="DIR",
                         help="directory of report.html for the new data, with its drift "
                         "against the model's training data (default: beside --out, named "
                         "after it with the suffix .report)")
    predict.add_argument("--no-report", action="store_true", help="write no report")

    report = sub.add_parser("report", help="write report.html again from a run's report "
                            "directory or a model directory")
    report.add_argument("path", help="a report directory (outputs.report) or a model "
                        "directory (outputs.model)")

    inspect = sub.add_parser("inspect", help="show a model or a checkpoint directory (a "
                             "grid's checkpoint: every candidate)")
    inspect.add_argument("path", help="a model directory or a checkpoint directory")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _guess_source(path: str) -> str:
    from .data.files import format_from_suffix

    kind = format_from_suffix(path)
    if kind is None and path.rstrip("/").lower().endswith(".npy"):
        kind = "npy"
    if kind is not None:
        return kind
    raise ConfigError(f"Cannot tell the kind of data at {path!r} from its name; pass "
                      "--source zarr, parquet or npy.")


def cmd_run(args) -> int:
    from .workflow.loading import load_workflow
    from .workflow.runner import run_workflow

    workflow = load_workflow(args.workflow, args.overrides)
    emit = (lambda line: None) if args.quiet else _emit
    try:
        with _stop_on_signals():
            summary = run_workflow(workflow, restart=args.restart, force=args.force,
                                   emit=emit)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        kept = (f"the checkpoints in {workflow.checkpoint.dir} are kept"
                if workflow.checkpoint.dir else "no checkpoint directory is set, so the fit "
                "starts over")
        _error(f"dgmm: stopped by {signal.Signals(signum).name}: the run was stopped and "
               f"its workers shut down; {kept}. Run `dgmm run {args.workflow}` again to "
               "resume.")
        return EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED
    if summary.did_nothing:
        _emit(f"nothing to do: the outputs of {args.workflow} are up to date "
              "(use --force to rerun)")
    else:
        _emit(f"done: ran {', '.join(summary.ran)}"
              + (f"; up to date: {', '.join(summary.skipped)}" if summary.skipped else ""))
    return 0


def cmd_validate(args) -> int:
    from .workflow import cluster
    from .workflow.loading import load_workflow

    workflow = load_workflow(args.workflow, args.overrides)
    _emit(f"{args.workflow}: valid")
    _emit(f"  data:    {workflow.data.source} at {workflow.data.path}")
    m = workflow.model
    if workflow.select is not None:
        s = workflow.select
        _emit(f"  select:  K in {s.ks()} x {', '.join(s.covariance_types())}, best by "
              f"{s.criterion.upper()}; init {m.init_params}, n_init {m.n_init}, "
              f"max_iter {m.max_iter}, tol {m.tol}")
    else:
        _emit(f"  model:   {m.n_components} components, {m.covariance_type}, "
              f"init {m.init_params}, max_iter {m.max_iter}, tol {m.tol}")
    _emit(f"  cluster: {cluster.describe(workflow.cluster)}")
    _emit(f"  steps:   {', '.join(workflow.steps)}")
    if workflow.monitor is not None:
        limits = {k: v for k, v in workflow.monitor.model_dump().items() if v is not None}
        _emit("  monitor: exit 9 when " + (", ".join(f"{k} > {v:g}" for k, v in limits.items())
                                           or "never (no threshold set)"))
    _emit(f"  settings hash: {workflow.settings_hash()[:16]}")
    if workflow.cluster.kind in ("slurm", "pbs"):
        _emit(f"  job script ({workflow.cluster.kind}), as dask-jobqueue will submit it:")
        for line in cluster.render_job_script(workflow.cluster).splitlines():
            _emit(f"    {line}")
    return 0


def cmd_make_data(args) -> int:
    from .data.synthetic import make_gmm_data
    from .workflow import cluster
    from .workflow.loading import load_cluster_profile

    profile = load_cluster_profile(args.cluster)
    with cluster.connect(profile) as client:
        info, params = make_gmm_data(
            args.out, args.rows, args.features, args.components,
            covariance_type=args.covariance_type, chunk_rows=args.chunk_rows, seed=args.seed,
            dtype=args.dtype, separation=args.separation, fmt=args.fmt, client=client,
            overwrite=args.overwrite,
        )
    _emit(f"wrote {info.describe()}")
    _emit("true parameters stored beside the data (dgmm.data.load_true_params)")
    return 0


def cmd_predict(args) -> int:
    from .core.nonfinite import nonfinite_rule
    from .data.outputs import write_predictions
    from .data.readers import open_source
    from .estimators import load_model
    from .workflow import cluster
    from .workflow.loading import load_cluster_profile

    kind = args.source or _guess_source(args.data)
    options = {}
    if args.columns:
        options["columns"] = [c.strip() for c in args.columns.split(",") if c.strip()]
    if args.array_path:
        options["array_path"] = args.array_path
    profile = load_cluster_profile(args.cluster)
    model = load_model(args.model)
    X, info = open_source(kind, args.data, **options)
    with cluster.connect(profile) as client:
        write_predictions(X, model.params_, args.out, client=client,
                          marginalize=nonfinite_rule(model.nonfinite).missing_values)
        _emit(f"wrote predictions for {info.n_samples:,} rows to {args.out}")
        if not args.no_report:
            from .data.model_io import read_model_meta
            from .workflow.report import write_report

            directory = args.report or _report_beside(args.out)
            meta = read_model_meta(args.model)
            training = meta.get("training")
            write_report(directory, model, X, info, client=client, training=training,
                         run={"cluster": cluster.describe(profile), "model_path": args.model})
            _emit(f"wrote {directory}/report.html"
                  + ("" if training else " (the model keeps no training summary: no drift "
                     "section; refit it with this dgmm to get one)"))
    return 0


def _report_beside(out: str) -> str:
    """``runs/new-pred.zarr`` -> ``runs/new-pred.report``."""
    stem = out.rstrip("/")
    for suffix in (".zarr", ".parquet", ".pq"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem + ".report"


def cmd_report(args) -> int:
    from .workflow.report import rebuild_page

    _emit(f"wrote {rebuild_page(args.path)}")
    return 0


def _inspect_payload(path: str) -> dict:
    from .data.files import is_url
    from .data.model_io import read_model_meta
    from .data.publish import join, read_bytes, resolve
    from .workflow.checkpoint import CheckpointStore

    if read_bytes(join(resolve(path), "model.json")) is not None:
        meta = read_model_meta(path)
        return {"kind": "model", "path": path, **{k: v for k, v in meta.items() if k != "arrays"}}
    if not is_url(path) and not os.path.isdir(path):
        raise ConfigError(f"Nothing to inspect at {path!r}: give a model directory "
                          "(outputs.model) or a checkpoint directory (checkpoint.dir).")
    store = CheckpointStore(path)
    checkpoints = store.list()
    if not checkpoints:
        raise ConfigError(f"{path!r} holds neither a dgmm model (model.json) nor checkpoints "
                          "(ckpt-*.npz).")
    found = store.load_latest()
    latest = grid = None
    if found is not None:
        _, meta = found
        latest = {k: meta.get(k) for k in ("init_index", "iteration", "lower_bound",
                                           "converged", "covariance_type", "settings_hash",
                                           "data_fingerprint")}
        latest["history_length"] = len(meta.get("history", []))
        if meta.get("kind") == "stepwise":  # mini-batch EM or stochastic VI
            latest = {"passes_done": meta.get("n_passes"),
                      "chunks_done_in_pass": meta.get("position"), "step": meta.get("n_steps"),
                      **{k: latest[k] for k in ("lower_bound", "converged",
                                                "covariance_type", "settings_hash",
                                                "data_fingerprint", "history_length")}}
        if meta.get("kind") == "selection":
            latest = {"passes": meta.get("passes"), "settings_hash": meta.get("settings_hash"),
                      "data_fingerprint": meta.get("data_fingerprint")}
            grid = [_candidate_row(entry) for entry in meta.get("candidates", ())]
    metrics = store.read_metrics()
    return {
        "kind": "checkpoints",
        "path": path,
        "checkpoints": [c.path.rsplit("/", 1)[-1] for c in checkpoints],
        "latest": latest,
        "grid": grid,
        "metrics_lines": len(metrics),
        "last_metrics": metrics[-1] if metrics else None,
    }


def _candidate_row(entry: dict) -> dict:
    """One candidate of a grid's checkpoint: its state, iterations and best bound."""
    state = entry.get("state") or {}
    restarts = state.get("restarts") or []
    finished = state.get("best") or {}
    bounds = [r["lower_bound"] for r in restarts if r.get("lower_bound") is not None]
    bounds += [finished["lower_bound"]] if finished.get("lower_bound") is not None else []
    finite = [b for b in bounds if isinstance(b, (int, float)) and math.isfinite(b)]
    return {
        "n_components": entry.get("n_components"),
        "covariance_type": entry.get("covariance_type"),
        "status": "live" if entry.get("live") else ("done" if state else "not started"),
        "iterations": max([r.get("iteration") or 0 for r in restarts]
                          + [finished.get("n_iter") or 0]),
        "restarts": len(restarts),
        "best_lower_bound": max(finite) if finite else None,
        "converged": finished.get("converged"),
    }


def cmd_inspect(args) -> int:
    payload = _inspect_payload(args.path)
    if args.json:
        _emit(json.dumps(payload, indent=2, default=str))
        return 0
    if payload["kind"] == "model":
        _emit(f"model {payload['path']}")
        for key in ("covariance_type", "n_components", "n_features", "n_iter", "converged",
                    "lower_bound", "dgmm_version", "created", "data_fingerprint"):
            _emit(f"  {key}: {payload.get(key)}")
        training = payload.get("training")
        if training:
            _emit(f"  training data: {training['n_scored']:,} rows, mean log-likelihood "
                  f"{training['mean_log_likelihood']:.6f}, 1% log-density quantile "
                  f"{training['anomaly_threshold']:.6f} (the drift baseline)")
    else:
        _emit(f"checkpoints in {payload['path']}: {', '.join(payload['checkpoints'])}")
        for key, value in (payload["latest"] or {}).items():
            _emit(f"  {key}: {value}")
        if payload["grid"]:
            _emit(f"  grid: {len(payload['grid'])} candidates")
            _emit(f"    {'K':>4}  {'covariance':<10}  {'status':<11}  {'iterations':>10}  "
                  f"{'restarts':>8}  best mean log-lik")
            for row in payload["grid"]:
                bound = row["best_lower_bound"]
                _emit(f"    {row['n_components']:>4}  {row['covariance_type']:<10}  "
                      f"{row['status']:<11}  {row['iterations']:>10}  {row['restarts']:>8}  "
                      + ("-" if bound is None else f"{bound:.6f}"))
        _emit(f"  metrics.jsonl lines: {payload['metrics_lines']}")
    return 0


COMMANDS = {
    "run": cmd_run,
    "validate": cmd_validate,
    "make-data": cmd_make_data,
    "predict": cmd_predict,
    "inspect": cmd_inspect,
    "report": cmd_report,
}


def main(argv=None) -> int:
    """Entry point of the ``dgmm`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    if not args.debug:
        # before distributed is imported: its own logging setup reads this, and worker
        # processes inherit it, so Dask's INFO chatter stays out of the user's terminal
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from .data.redact import install_log_filter

    install_log_filter()
    if not args.debug:
        for noisy in ("distributed", "tornado", "bokeh", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return COMMANDS[args.command](args)
    except DgmmError as exc:
        if args.debug:
            _error(traceback.format_exc())
        _error(f"dgmm: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _error("dgmm: interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug, not a user's mistake
        if args.debug:
            _error(traceback.format_exc())
        _error(f"dgmm: unexpected error: {type(exc).__name__}: {exc}\nThis is a bug in "
               "dgmm or its environment; rerun with --debug for the traceback.")
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
