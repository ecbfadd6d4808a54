"""The ``report`` step: ``report.json`` and PNG plots of a fitted mixture.

Plots:

- ``loglik.png``: the mean log-likelihood per EM iteration;
- ``components.png``: a sample of rows coloured by their label, with each component's
  standard-deviation ellipses. Data with two features are drawn as they are; with
  more, as a scatter-plot matrix of the features (``dgmm.workflow.plots.pairs_figure``:
  all up to six, beyond that the ones that separate the components most);
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


def _variational_summary(model) -> dict:
    """A variational Bayesian fit's prior and how many components it kept."""
    from .plots import KEPT_WEIGHT, kept_components

    return {
        "weight_concentration_prior_type": model.weight_concentration_prior_type,
        "prior": model.prior_.to_meta(),
        "kept_components": kept_components(model.weights_),
        "kept_weight_threshold": KEPT_WEIGHT,
        "mean_precision": model.mean_precision_.tolist(),
        "degrees_of_freedom": np.ravel(model.degrees_of_freedom_).tolist(),
    }


def write_report(directory: str, model, X, info, *, workflow=None, score=None, client=None,
                 storage_options: dict | None = None, selection=None):
    """Write ``report.json`` (and plots) to ``directory`` (a local path or an fsspec URL),
    each file atomically; returns the paths.

    selection: a fitted ``GaussianMixtureSelection`` whose best model is ``model``: its
    table goes into report.json and its criterion against K into ``selection.png``.
    """
    params: GMMParams = model.params_
    written = []
    plots: dict[str, str] = {}
    if model.lower_bounds_:
        plot_loglik(model.lower_bounds_, join(directory, "loglik.png"), storage_options)
        plots["loglik"] = "loglik.png"
    sample = sample_rows(X, client)
    target = join(directory, "components.png")
    if params.n_features > 2:
        # a scatter-plot matrix: each pair of features in its own units
        from .plots import pairs_figure

        labels = kernels.predict(sample, params) if len(sample) else None
        names = getattr(info, "columns", None) if info is not None else None
        _save_figure(pairs_figure(params, sample, labels, names=names), target,
                     storage_options)
    else:
        plot_components(params, sample, target, storage_options)
    plots["components"] = "components.png"
    posterior = getattr(model, "posterior_", None)
    if posterior is not None and model.lower_bounds_:
        from .plots import variational_figure

        _save_figure(variational_figure(model.lower_bounds_, params.weights),
                     join(directory, "variational.png"), storage_options)
        plots["variational"] = "variational.png"
    if selection is not None:
        from .plots import criterion_figure

        _save_figure(criterion_figure(selection.results_, selection.criterion),
                     join(directory, "selection.png"), storage_options)
        plots["selection"] = "selection.png"
    payload = {
        "dgmm_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "workflow": None if workflow is None else {
            "name": workflow.name, "file": workflow.source_file,
            "settings_hash": workflow.settings_hash(),
        },
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
        "selection": None if selection is None else {
            "criterion": selection.criterion,
            "best_params": selection.best_params_,
            "n_passes": int(selection.n_passes_),
            "results": [{key: getattr(value, "item", lambda value=value: value)()
                         for key, value in row.items()}
                        for row in selection.results_.to_dict(orient="records")],
        },
        "plots": plots,
    }
    path = join(directory, "report.json")
    write_json(path, payload, storage_options)
    written.append(path)
    written.extend(join(directory, p) for p in plots.values())
    return written
