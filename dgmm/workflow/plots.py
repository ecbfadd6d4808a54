"""Pictures of fitted mixtures, drawn on a matplotlib Agg canvas (the process-wide backend
is never switched): the information criterion against K for a grid, a scatter-plot
matrix of the features with every component's projected ellipses, and a variational
Bayesian fit's lower bound per iteration beside its weights."""
from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from ..core.params import GMMParams

#: features drawn in the scatter-plot matrix at most
MAX_PAIR_FEATURES = 6
#: ellipses at 1 and 2 standard deviations
ELLIPSE_SIGMAS = (1.0, 2.0)
#: a variational Bayesian component counts as kept when its weight is above this
KEPT_WEIGHT = 0.01


def save_figure(fig: Figure, path: str, dpi: int = 100) -> None:
    """Write ``fig`` as PNG through its own Agg canvas."""
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)


def criterion_figure(results, criterion: str = "bic") -> Figure:
    """``criterion`` of each candidate's best restart against K, one line per covariance
    type (lower is better; the best candidate is circled).

    results: a ``GaussianMixtureSelection.results_`` table.
    """
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    best = results.groupby(["covariance_type", "n_components"], sort=False)[criterion].min()
    for covariance_type in dict.fromkeys(results.covariance_type):
        line = best.loc[covariance_type].sort_index()
        ax.plot(line.index, line.values, marker="o", label=covariance_type)
    (c, k), value = best.idxmin(), best.min()
    ax.plot([k], [value], marker="o", markersize=14, markerfacecolor="none",
            markeredgecolor="black", linestyle="none", label=f"best: K={k}, {c}")
    ax.set_xlabel("number of components K")
    ax.set_ylabel(f"{criterion.upper()} (lower is better)")
    ax.set_xticks(sorted(set(results.n_components)))
    ax.set_title(f"{criterion.upper()} against K")
    ax.legend()
    fig.tight_layout()
    return fig


def separation(params: GMMParams) -> np.ndarray:
    """Per feature, the variance of the component means (weighted) over the mean
    within-component variance, (d,): how well the feature separates the components."""
    w, means = params.weights, params.means
    centre = w @ means
    between = w @ (means - centre) ** 2
    full = params.family.full_covariances(params.covariances, params.n_components,
                                          params.n_features)
    within = w @ np.diagonal(full, axis1=1, axis2=2)
    return between / np.maximum(within, np.finfo(float).tiny)


def pairs_features(params: GMMParams, max_features: int = MAX_PAIR_FEATURES):
    """(feature indices to draw, in order; True when only the most separating ones)."""
    d = params.n_features
    if d <= max_features:
        return list(range(d)), False
    chosen = np.argsort(-separation(params), kind="stable")[:max_features]
    return sorted(int(j) for j in chosen), True


def _ellipse(ax, mean2, cov2, sigma, color):
    values, vectors = np.linalg.eigh(cov2)
    values = np.maximum(values, 0.0)
    angle = np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1]))
    ax.add_patch(Ellipse(mean2, 2 * sigma * np.sqrt(values[1]), 2 * sigma * np.sqrt(values[0]),
                         angle=angle, fill=False, edgecolor=color, linewidth=1.2))


def pairs_figure(params: GMMParams, sample: np.ndarray, labels: np.ndarray | None = None,
                 names=None, max_features: int = MAX_PAIR_FEATURES) -> Figure:
    """A scatter-plot matrix of ``sample`` (n, d) with every component's ellipses projected
    on each pair of features; each panel in its own units. More than ``max_features``
    features: the ones that separate the components most (``separation``), said in the
    title. labels: (n,) component per row to colour the points, or None."""
    d = params.n_features
    names = list(names) if names is not None else [f"x{j}" for j in range(d)]
    features, selected = pairs_features(params, max_features)
    m = len(features)
    full = params.family.full_covariances(params.covariances, params.n_components, d)
    colors = [f"C{k % 10}" for k in range(params.n_components)]
    size = min(2.2 * m + 1.0, 14.0)
    fig = Figure(figsize=(size, size))
    axes = fig.subplots(m, m, squeeze=False)
    point_colors = None if labels is None else [colors[k] if k >= 0 else "0.6" for k in labels]
    for r, i in enumerate(features):
        for c, j in enumerate(features):
            ax = axes[r][c]
            if i == j:
                ax.hist(sample[:, j], bins=40, color="0.6")
                ax.set_yticks([])
            else:
                ax.scatter(sample[:, j], sample[:, i], s=2, alpha=0.35, linewidths=0,
                           c=point_colors if point_colors is not None else "0.4")
                for k in range(params.n_components):
                    mean2 = params.means[k, [j, i]]
                    cov2 = full[k][np.ix_([j, i], [j, i])]
                    for sigma in ELLIPSE_SIGMAS:
                        _ellipse(ax, mean2, cov2, sigma, colors[k])
            if r == m - 1:
                ax.set_xlabel(names[j])
            if c == 0:
                ax.set_ylabel(names[i])
            ax.tick_params(labelsize=7)
    title = f"{params.n_components} components ({params.covariance_type}), ellipses at 1 and 2 sd"
    if selected:
        title += (f"\nthe {m} of {d} features that separate the components most: "
                  + ", ".join(names[j] for j in features))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def kept_components(weights, threshold: float = KEPT_WEIGHT) -> int:
    """How many components a variational Bayesian fit kept: weights above ``threshold``."""
    return int(np.sum(np.asarray(weights) > threshold))


def variational_figure(lower_bounds, weights, threshold: float = KEPT_WEIGHT, *,
                       online: bool = False) -> Figure:
    """A variational Bayesian fit: its lower bound per iteration (left; ``online``: the
    mean log normaliser per row of each pass of stochastic variational inference) and its
    components' weights (right, largest first, the kept ones above ``threshold`` filled),
    so that one sees how many components the prior kept."""
    weights = np.asarray(weights, dtype=float)
    fig = Figure(figsize=(10.0, 4.0))
    left, right = fig.subplots(1, 2)
    left.plot(np.arange(1, len(lower_bounds) + 1), lower_bounds, marker="o", ms=3)
    if online:
        left.set_xlabel("pass")
        left.set_ylabel("mean log normaliser per row")
        left.set_title("Stochastic variational inference")
    else:
        left.set_xlabel("iteration")
        left.set_ylabel("lower bound (summed over the rows)")
        left.set_title("Variational lower bound")
    left.grid(alpha=0.3)
    order = np.argsort(-weights, kind="stable")
    kept = weights[order] > threshold
    right.bar(np.arange(len(order)), weights[order],
              color=["C0" if k else "0.75" for k in kept])
    right.axhline(threshold, color="0.4", linestyle=":", linewidth=1)
    right.set_xticks(np.arange(len(order)), [str(k) for k in order], fontsize=7)
    right.set_xlabel("component (largest weight first)")
    right.set_ylabel("weight")
    right.set_title(f"{kept_components(weights, threshold)} of {len(weights)} components "
                    f"kept (weight > {threshold:g})")
    fig.tight_layout()
    return fig


def mclust_bic_figure(results) -> Figure:
    """mclust's BIC plot: BIC in mclust's sign (2 log L - p log n, higher is better) of each
    candidate's best restart against K, one line per covariance type with the type's name
    (EII ... VVV) as the marker, the best circled.

    results: a ``GaussianMixtureSelection.results_`` table.
    """
    fig = Figure(figsize=(7.2, 5.0))
    ax = fig.add_subplot()
    best = -results.groupby(["covariance_type", "n_components"], sort=False)["bic"].min()
    for number, covariance_type in enumerate(dict.fromkeys(results.covariance_type)):
        line = best.loc[covariance_type].sort_index()
        ax.plot(line.index, line.values, color=f"C{number % 10}", linewidth=1.0,
                marker=f"$\\mathrm{{{covariance_type}}}$", markersize=13,
                markeredgewidth=0.3, label=covariance_type)
    (c, k), value = best.idxmax(), best.max()
    ax.plot([k], [value], marker="o", markersize=24, markerfacecolor="none",
            markeredgecolor="black", linestyle="none", label=f"best: K={k}, {c}")
    ax.set_xlabel("number of components K")
    ax.set_ylabel("BIC (mclust's sign: higher is better)")
    ax.set_xticks(sorted(set(results.n_components)))
    ax.set_title("BIC against K per covariance model")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    return fig


def classification_figure(params: GMMParams, sample: np.ndarray, names=None,
                          features: tuple[int, int] | None = None) -> Figure:
    """mclust's classification and uncertainty plots side by side, on two features:
    the rows coloured by their most probable component with every component's ellipses,
    and the same rows drawn with a size growing with their uncertainty 1 - max_k r_ik
    (the darkest and largest are the least certain).

    sample: (n, d) rows (finite); features: the two drawn, by default the two that
    separate the components most (``separation``); names: the features' names.
    """
    from ..core import kernels

    d = params.n_features
    names = list(names) if names is not None else [f"x{j}" for j in range(d)]
    if features is None:
        features = tuple(sorted(np.argsort(-separation(params), kind="stable")[:2].tolist())) \
            if d > 1 else (0, 0)
    j, i = features
    proba = kernels.predict_proba(np.asarray(sample, dtype=np.float64), params)
    labels = proba.argmax(axis=1)
    uncertainty = 1.0 - proba.max(axis=1)
    full = params.family.full_covariances(params.covariances, params.n_components, d)
    colors = [f"C{k % 10}" for k in range(params.n_components)]
    fig = Figure(figsize=(11.0, 5.0))
    left, right = fig.subplots(1, 2)
    left.scatter(sample[:, j], sample[:, i], s=6, linewidths=0,
                 c=[colors[k] for k in labels])
    for k in range(params.n_components):
        cov2 = full[k][np.ix_([j, i], [j, i])]
        for sigma in ELLIPSE_SIGMAS:
            _ellipse(left, params.means[k, [j, i]], cov2, sigma, colors[k])
    left.set_title(f"classification: K={params.n_components}, {params.covariance_type}")
    order = np.argsort(uncertainty, kind="stable")
    scale = max(float(uncertainty.max()), 1e-12)
    right.scatter(sample[order, j], sample[order, i], linewidths=0,
                  s=2.0 + 60.0 * uncertainty[order] / scale,
                  c=uncertainty[order], cmap="Greys", vmin=-0.5 * scale, vmax=scale)
    right.set_title(f"uncertainty 1 - max r (largest {uncertainty.max():.3f})")
    for ax in (left, right):
        ax.set_xlabel(names[j])
        ax.set_ylabel(names[i])
    fig.tight_layout()
    return fig
