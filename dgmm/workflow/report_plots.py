"""The pictures of the HTML report beside those of ``plots``: convergence of every restart,
the projection on the separating directions (mclust's MclustDR idea) with 1 and 2 sd
ellipses, the uncertainty histogram and component shares. Each function returns a
matplotlib ``Figure`` on its own Agg canvas (the process-wide backend is never switched);
``png_bytes`` renders one."""
from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from matplotlib.ticker import MaxNLocator

from ..core.params import GMMParams
from .plots import ELLIPSE_SIGMAS

#: curves drawn with a legend entry each; more are drawn without a legend
MAX_LEGEND_CURVES = 12


def png_bytes(fig: Figure, dpi: int = 96) -> bytes:
    """``fig`` as PNG bytes."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


def component_colors(n_components: int) -> list[str]:
    """The colour of each component, the same in every picture."""
    return [f"C{k % 10}" for k in range(n_components)]


def convergence_figure(curves: list[dict]) -> Figure:
    """Mean log-likelihood per EM iteration, one line per restart or candidate.

    curves: dicts with ``label`` (str), ``values`` (the mean log-likelihood after each
    iteration), ``best`` (bool: the chosen fit, drawn thick in black) and optionally
    ``group`` (the restarts of one candidate share a colour and a legend entry).
    """
    fig = Figure(figsize=(7.0, 3.8))
    ax = fig.add_subplot()
    groups = list(dict.fromkeys(c.get("group", c["label"]) for c in curves))
    legend = len(groups) <= MAX_LEGEND_CURVES
    labelled = set()
    for curve in curves:
        values = np.asarray(curve["values"], dtype=float)
        group = curve.get("group", curve["label"])
        best = curve.get("best", False)
        if best:
            style = {"color": "black", "lw": 2.4, "marker": "o", "ms": 3, "zorder": 3,
                     "label": curve["label"] + " (chosen)"}
        else:
            style = {"color": f"C{groups.index(group) % 10}", "lw": 1.0, "alpha": 0.75,
                     "zorder": 2, "label": group if legend and group not in labelled else None}
            labelled.add(group)
        ax.plot(np.arange(1, len(values) + 1), values, **style)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("mean log-likelihood per row")
    finite = np.concatenate([np.asarray(c["values"], float) for c in curves] or [np.zeros(0)])
    finite = finite[np.isfinite(finite)]
    if len(finite) > 4:  # the first iterations of a poor start must not flatten the rest
        low, high = np.quantile(finite, 0.05), finite.max()
        pad = 0.08 * (high - low) or 1.0
        ax.set_ylim(low - pad, high + pad)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, ncol=2 if len(groups) > 6 else 1, loc="lower right")
    fig.tight_layout()
    return fig


def _ellipse(ax, mean2, cov2, sigma, color, lw=1.3):
    values, vectors = np.linalg.eigh(cov2)
    values = np.maximum(values, 0.0)
    angle = np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1]))
    ax.add_patch(Ellipse(mean2, 2 * sigma * np.sqrt(values[1]), 2 * sigma * np.sqrt(values[0]),
                         angle=angle, fill=False, edgecolor=color, linewidth=lw,
                         alpha=1.0 if sigma <= 1 else 0.65))


def projection_figure(params: GMMParams, basis: np.ndarray, sample: np.ndarray | None,
                      labels: np.ndarray | None, axis_names=("direction 1", "direction 2"),
                      title: str = "") -> Figure:
    """Rows and components projected on two directions (``basis`` (d, 2)): the sampled
    rows coloured by component, each component's mean and its 1 and 2 sd ellipses.

    sample: (n, d) rows or None (components only); labels: (n,) component per row.
    """
    colors = component_colors(params.n_components)
    covariances = params.family.full_covariances(params.covariances, params.n_components,
                                                 params.n_features)
    means = params.means @ basis
    projected = np.einsum("ia,kij,jb->kab", basis, covariances, basis)
    fig = Figure(figsize=(6.2, 5.6))
    ax = fig.add_subplot()
    if sample is not None and len(sample):
        points = sample @ basis
        point_colors = ([colors[k] if k >= 0 else "0.6" for k in labels]
                        if labels is not None else "0.4")
        ax.scatter(points[:, 0], points[:, 1], c=point_colors, s=3, alpha=0.35,
                   linewidths=0, rasterized=True)
    for k in range(params.n_components):
        for sigma in ELLIPSE_SIGMAS:
            _ellipse(ax, means[k], projected[k], sigma, colors[k])
        ax.plot(*means[k], marker="x", color="black", ms=7, mew=1.6)
        ax.annotate(str(k), means[k], textcoords="offset points", xytext=(5, 5),
                    fontsize=9, fontweight="bold", color=colors[k])
    ax.autoscale_view()
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig


def uncertainty_figure(edges, counts) -> Figure:
    """Histogram of the uncertainty ``1 - max_k p(k | x)`` per row."""
    edges, counts = np.asarray(edges, float), np.asarray(counts, float)
    fig = Figure(figsize=(5.6, 3.2))
    ax = fig.add_subplot()
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c72b0",
           edgecolor="white")
    ax.set_xlabel("uncertainty: 1 - largest membership probability")
    ax.set_ylabel("rows")
    ax.set_xlim(edges[0], edges[-1])
    if counts.max(initial=0) > 0 and counts.max() > 50 * max(np.median(counts), 1):
        ax.set_yscale("log")
        ax.set_ylim(0.7, counts.max() * 1.5)  # a bin of one row still shows
        ax.set_ylabel("rows (log scale)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def shares_figure(shares: dict[str, list[float]]) -> Figure:
    """Each component's share, one group of bars per component, one bar per series
    (e.g. ``{"training": [...], "now": [...]}``)."""
    names = list(shares)
    n_components = len(shares[names[0]])
    fig = Figure(figsize=(max(4.0, 0.55 * n_components * len(names) + 1.6), 3.2))
    ax = fig.add_subplot()
    width = 0.8 / len(names)
    x = np.arange(n_components)
    for i, name in enumerate(names):
        ax.bar(x + (i - (len(names) - 1) / 2) * width, shares[name], width, label=name,
               color=["#8c8c8c", "#dd8452", "#4c72b0"][i % 3])
    ax.set_xticks(x)
    ax.set_xlabel("component")
    ax.set_ylabel("share of rows")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig
