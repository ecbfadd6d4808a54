"""The ``report`` step: ``report.html``, ``report.json`` and PNG plots of a fitted mixture.

``report.html`` is one self-contained page (``dgmm.workflow.html_report``) built from
``report.json``'s content, the model and ``sample.npy`` (the rows drawn), so
``rebuild_page`` writes it again from a report directory alone, or from a model
directory (its ``model.json``: the training record, the history, the selection table).

Plots:

- ``loglik.png``: the mean log-likelihood per EM iteration;
- ``components.png``: a sample of rows coloured by their label, with each component's
  standard-deviation ellipses. Data with two features are drawn as they are; with
  more, as a scatter-plot matrix of the features (``dgmm.workflow.plots.pairs_figure``:
  all up to six, beyond that the ones that separate the components most);
- ``variational.png`` (a variational Bayesian mixture): its lower bound per iteration
  beside its weights, the kept components filled (``plots.variational_figure``);
- ``selection.png`` (for a model chosen by ``GaussianMixtureSelection``): the criterion
  against K, one line per covariance type; the table goes into report.json.

The sample is taken from a few chunks spread evenly over the data (at most
``SAMPLE_ROWS`` rows), so drawing never reads the whole data set.
"""
from __future__ import annotations

import io
import logging
import time

import numpy as np

from .._version import __version__
from ..core import kernels
from ..core.params import GMMParams
from ..data.publish import join, write_bytes, write_json

log = logging.getLogger(__name__)

SAMPLE_ROWS = 20_000
SAMPLE_CHUNKS = 8
#: the drawing sample kept beside report.json (for ``dgmm report``) at most
MAX_SAVED_SAMPLE_BYTES = 4 * 2**20


def full_covariances(params: GMMParams) -> np.ndarray:
    """(K, d, d) covariance matrices whatever the covariance type."""
    return params.family.full_covariances(params.covariances, params.n_components,
                                          params.n_features)


def principal_axes(params: GMMParams) -> np.ndarray:
    """(d, 2) projection onto the two main axes of the mixture's total covariance."""
    covs = full_covariances(params)
    mean = params.weights @ params.means
    centred = params.means - mean
    total = np.einsum("k,kij->ij", params.weights, covs) + (centred.T * params.weights) @ centred
    values, vectors = np.linalg.eigh(total)
    return vectors[:, ::-1][:, :2]


def sample_rows(X, client=None, max_rows: int = SAMPLE_ROWS) -> np.ndarray:
    """Up to ``max_rows`` rows from a few chunks spread evenly over a row-chunked array."""
    import dask.array as da

    if not isinstance(X, da.Array):
        X = np.asarray(X)
        step = max(1, X.shape[0] // max_rows)
        sample = np.asarray(X[::step][:max_rows], dtype=np.float64)
        return sample[np.isfinite(sample).all(axis=1)]
    starts = np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]])
    picks = np.unique(np.linspace(0, len(starts) - 1, min(SAMPLE_CHUNKS, len(starts))).astype(int))
    per_chunk = max(1, max_rows // len(picks))
    parts = [X[int(starts[i]): int(starts[i]) + min(per_chunk, X.chunks[0][i])] for i in picks]
    sample = da.concatenate(parts)
    out = sample.compute() if client is None else client.compute(sample, sync=True)
    out = np.asarray(out, dtype=np.float64)
    return out[np.isfinite(out).all(axis=1)]


def _save_figure(fig, path: str, storage_options: dict | None = None) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_bytes(path, buffer.getvalue(), storage_options)


def _figure(figsize):
    """A figure on its own Agg canvas: no pyplot, no process-wide backend switch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def plot_loglik(history, path: str, storage_options: dict | None = None) -> None:
    import matplotlib.ticker

    fig = _figure((6, 4))
    ax = fig.subplots()
    ax.plot(np.arange(1, len(history) + 1), history, marker="o", ms=3)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("mean log-likelihood per row")
    ax.set_title("Convergence")
    ax.grid(alpha=0.3)
    _save_figure(fig, path, storage_options)


def plot_components(params: GMMParams, sample: np.ndarray, path: str,
                    storage_options: dict | None = None) -> None:
    """Rows coloured by label with each component's ellipses (2-D or principal axes)."""
    from matplotlib import colormaps
    from matplotlib.patches import Ellipse

    d = params.n_features
    projection = np.eye(2) if d == 2 else principal_axes(params)
    labels = kernels.predict(sample, params) if len(sample) else np.zeros(0, int)
    points = sample @ projection if len(sample) else np.zeros((0, 2))
    means = params.means @ projection
    covs = np.einsum("ia,kij,jb->kab", projection, full_covariances(params), projection)
    colours = colormaps["tab10"](np.arange(params.n_components) % 10)
    fig = _figure((6, 6))
    ax = fig.subplots()
    ax.scatter(points[:, 0], points[:, 1], c=colours[labels], s=2, alpha=0.4, linewidths=0)
    for k in range(params.n_components):
        values, vectors = np.linalg.eigh(covs[k])
        angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
        for n_std in (1, 2, 3):
            width, height = 2 * n_std * np.sqrt(np.maximum(values[::-1], 0))
            ax.add_patch(Ellipse(means[k], width, height, angle=angle, fill=False,
                                 color=colours[k], lw=1.2, alpha=0.9 / n_std))
        ax.plot(*means[k], "x", color="black", ms=6)
    axis = ("feature", "feature") if d == 2 else ("principal axis", "principal axis")
    ax.set_xlabel(f"{axis[0]} 1")
    ax.set_ylabel(f"{axis[1]} 2")
    ax.set_title(f"{params.n_components} components ({params.covariance_type}), "
                 f"{len(sample):,} sampled rows")
    ax.set_aspect("equal", adjustable="datalim")
    _save_figure(fig, path, storage_options)


def convergence_curves(model, metrics: list | None = None, selection=None) -> list[dict]:
    """Per restart (and candidate) the mean log-likelihood after each iteration, from the
    checkpoint's ``metrics.jsonl`` records when there are any (batch EM and grids), else
    the chosen fit's history alone; the chosen fit is marked ``best``."""
    chosen = [float(v) for v in model.lower_bounds_]
    grouped: dict[tuple, dict[int, float]] = {}
    for record in metrics or ():
        if record.get("iteration") is None or record.get("lower_bound") is None:
            continue
        key = (record.get("n_components"), record.get("covariance_type"),
               int(record.get("init") or 0))
        grouped.setdefault(key, {})[int(record["iteration"])] = float(record["lower_bound"])
    curves = []
    for (k, c, init), values in sorted(grouped.items(), key=lambda item: (
            str(item[0][1]), item[0][0] or 0, item[0][2])):
        label = (f"K={k} {c} restart {init + 1}" if k is not None
                 else f"restart {init + 1}")
        curves.append({"label": label, "values": [values[i] for i in sorted(values)],
                       "best": False, "n_components": k, "covariance_type": c,
                       "group": f"K={k} {c}" if k is not None else label})
    best_params = getattr(selection, "best_params_", None) if selection is not None else None
    matches = [i for i, curve in enumerate(curves)
               if len(curve["values"]) == len(chosen) and np.allclose(
                   curve["values"], chosen, rtol=1e-12, atol=0)
               and (best_params is None or (
                   curve["n_components"] == best_params["n_components"]
                   and curve["covariance_type"] == best_params["covariance_type"]))]
    if not matches:
        return [{"label": "chosen fit", "values": chosen, "best": True}] if chosen else []
    curves[matches[0]]["best"] = True
    return curves


def selection_record(selection) -> dict | None:
    """A fitted ``GaussianMixtureSelection``'s table and choice as JSON."""
    if selection is None:
        return None
    return {
        "criterion": selection.criterion,
        "best_params": dict(selection.best_params_),
        "n_passes": int(selection.n_passes_),
        "refused": [{"n_components": k, "covariance_type": c, "reason": why}
                    for (k, c), why in getattr(selection, "refused_", {}).items()],
        "results": [{key: getattr(value, "item", lambda value=value: value)()
                     for key, value in row.items()}
                    for row in selection.results_.to_dict(orient="records")],
    }


def _variational_summary(model) -> dict:
    """A variational Bayesian fit's prior and how many components it kept."""
    from .plots import KEPT_WEIGHT, kept_components

    return {
        "fitted_by": ("stochastic variational inference" if hasattr(model, "state_")
                      else "batch variational inference"),
        "weight_concentration_prior_type": model.weight_concentration_prior_type,
        "prior": model.prior_.to_meta(),
        "kept_components": kept_components(model.weights_),
        "kept_weight_threshold": KEPT_WEIGHT,
        "mean_precision": model.mean_precision_.tolist(),
        "degrees_of_freedom": np.ravel(model.degrees_of_freedom_).tolist(),
    }


def write_report(directory: str, model, X, info, *, workflow=None, score=None, client=None,
                 storage_options: dict | None = None, selection=None, run: dict | None = None,
                 metrics: list | None = None, training: dict | None = None, monitor=None):
    """Write ``report.json``, ``report.html`` (and plots) to ``directory`` (a local path or
    an fsspec URL), each file atomically; returns the paths.

    selection: a fitted ``GaussianMixtureSelection`` whose best model is ``model``: its
    table goes into report.json and its criterion against K into ``selection.png``.
    run: what the runner knows of the run (``cluster``, ``model_path``, ``steps``: one
    dict per step with ``step``, ``status``, ``seconds``, ``reads``). metrics: the
    checkpoint's metric records (the convergence of every restart).

    training: the model's training record (``training`` in ``model.json``, see
    ``dgmm.workflow.drift.training_record``). The predictions section comes from it when
    ``X`` is its training data, else from one pass over ``X``, compared with the training
    record in a drift section. monitor: the workflow's
    ``DriftThresholds``; drift past them raises ``DriftError`` once everything is written.
    """
    from . import drift as drift_mod
    from .html_report import build_page

    params: GMMParams = model.params_
    written = []
    plots: dict[str, str] = {}
    if model.lower_bounds_:
        plot_loglik(model.lower_bounds_, join(directory, "loglik.png"), storage_options)
        plots["loglik"] = "loglik.png"
    sample = sample_rows(X, client)
    scoring = model.inference_params()  # a variational fit: its posterior's E-step terms
    labels = kernels.predict(sample, scoring) if len(sample) else None
    names = getattr(info, "columns", None) if info is not None else None
    target = join(directory, "components.png")
    pairs_png = None
    if params.n_features > 2:
        # a scatter-plot matrix: each pair of features in its own units (the page shows
        # the same picture)
        from .plots import pairs_figure
        from .report_plots import png_bytes

        pairs_png = png_bytes(pairs_figure(params, sample, labels, names=names), dpi=110)
        write_bytes(target, pairs_png, storage_options)
    else:
        plot_components(params, sample, target, storage_options)
    plots["components"] = "components.png"
    posterior = getattr(model, "posterior_", None)
    if posterior is not None and model.lower_bounds_:
        from .plots import variational_figure

        _save_figure(variational_figure(model.lower_bounds_, params.weights,
                                        online=hasattr(model, "state_")),
                     join(directory, "variational.png"), storage_options)
        plots["variational"] = "variational.png"
    if selection is not None:
        from .plots import criterion_figure

        _save_figure(criterion_figure(selection.results_, selection.criterion),
                     join(directory, "selection.png"), storage_options)
        plots["selection"] = "selection.png"
    fingerprint = getattr(info, "fingerprint", None)
    drift = None
    if training is not None and (training.get("data") or {}).get("fingerprint") == fingerprint:
        predictions = {k: v for k, v in training.items() if k != "data"}
    else:
        below = training.get("anomaly_threshold") if training is not None else None
        from ..core.nonfinite import nonfinite_rule

        marginalize = nonfinite_rule(getattr(model, "nonfinite", "drop")).missing_values
        predictions = drift_mod.summarize(X, scoring, client=client,
                                          marginalize=marginalize, below=below).to_json()
        if below is not None:
            drift = drift_mod.compare(training, predictions)
    breaches = drift_mod.breaches(drift, monitor)
    payload = {
        "dgmm_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "workflow": None if workflow is None else {
            "name": workflow.name, "file": workflow.source_file,
            "settings_hash": workflow.settings_hash(),
        },
        "run": run,
        "data": info.to_dict() if info is not None else None,
        "model": {
            "covariance_type": params.covariance_type,
            "n_components": params.n_components,
            "n_features": params.n_features,
            "n_iter": int(model.n_iter_),
            "converged": bool(model.converged_),
            "lower_bound": float(model.lower_bound_),
            "lower_bounds": [float(v) for v in model.lower_bounds_],
            "n_nonfinite_rows_skipped": int(getattr(model, "n_nonfinite_", 0)),
            "weights": params.weights.tolist(),
            "means": params.means.tolist(),
            "covariances": params.covariances.tolist(),
        },
        "variational": None if posterior is None else _variational_summary(model),
        "score": score,
        "selection": selection_record(selection),
        "convergence": convergence_curves(model, metrics, selection),
        "predictions": predictions,
        "training": training,
        "drift": drift,
        "drift_breaches": breaches,
        "monitor": None if monitor is None else monitor.model_dump(),
        "plots": plots,
    }
    if len(sample):
        kept = sample[: max(1, MAX_SAVED_SAMPLE_BYTES // (8 * sample.shape[1]))]
        buffer = io.BytesIO()
        np.save(buffer, kept, allow_pickle=False)
        write_bytes(join(directory, "sample.npy"), buffer.getvalue(), storage_options)
        payload["sample"] = "sample.npy"
        written.append(join(directory, "sample.npy"))
    path = join(directory, "report.json")
    write_json(path, payload, storage_options)
    written.append(path)
    written.extend(join(directory, p) for p in plots.values())
    page = join(directory, "report.html")
    write_bytes(page, build_page(payload, params, sample, labels, names, pairs_png).encode(),
                storage_options)
    written.append(page)
    if breaches:
        drift_mod.check(drift, monitor, page)
    return written


def _page_from_model(meta: dict) -> dict:
    """``report.json``-like content from a saved model's manifest."""
    training = meta.get("training")
    history = [float(v) for v in meta.get("lower_bounds") or ()]
    return {
        "dgmm_version": meta.get("dgmm_version"),
        "created": meta.get("created"),
        "workflow": {"name": None, "file": None, "settings_hash": meta.get("settings_hash")},
        "run": None,
        "data": (training or {}).get("data"),
        "model": {key: meta.get(key) for key in ("n_iter", "converged", "lower_bound")},
        "score": None,
        "selection": meta.get("selection"),
        "convergence": [{"label": "chosen fit", "values": history, "best": True}]
        if history else [],
        "predictions": ({k: v for k, v in training.items() if k != "data"}
                        if training else None),
        "drift": None,
    }


def rebuild_page(path: str, storage_options: dict | None = None) -> str:
    """Write ``report.html`` again from a report directory (``report.json``, and
    ``sample.npy`` when kept) or from a model directory (``model.json``); returns its
    path (in that directory)."""
    from ..core.params import GMMParams
    from ..data.model_io import load_params
    from ..data.publish import read_bytes, read_json, resolve
    from ..errors import ConfigError
    from .html_report import build_page

    page = read_json(join(path, "report.json"), storage_options)
    if page is not None:
        model = page.get("model") or {}
        try:
            params = GMMParams.from_covariances(model["weights"], model["means"],
                                                model["covariances"], model["covariance_type"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{join(path, 'report.json')} lacks the model's parameters "
                              f"({exc}); run the workflow's report step again.") from None
        blob = read_bytes(join(path, "sample.npy"), storage_options)
        sample = np.load(io.BytesIO(blob), allow_pickle=False) if blob else None
        labels = kernels.predict(sample, params) if sample is not None and len(sample) else None
        names = (page.get("data") or {}).get("columns")
        target = join(path, "report.html")
    elif read_bytes(join(resolve(path, storage_options), "model.json"),
                    storage_options) is not None:
        params, meta = load_params(path, storage_options)
        page, sample, labels, names = _page_from_model(meta), None, None, None
        target = join(resolve(path, storage_options), "report.html")
    else:
        raise ConfigError(
            f"Nothing to build a report from at {path!r}: give a report directory (the "
            "workflow's outputs.report, holding report.json) or a model directory "
            "(outputs.model, holding model.json).")
    write_bytes(target, build_page(page, params, sample, labels, names).encode(),
                storage_options)
    return target
