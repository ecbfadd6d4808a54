"""Starts for a grid's candidates from the other candidates' fitted solutions
(``GaussianMixtureSelection(seed_from_other_types=n)``).

R's mclust starts every covariance model of a K from one partition, so a good partition
found by one model serves all. Here each candidate (K, c) starts once more from the
solutions of the n best other types at the same K (by BIC), from the best solution at
K + 1 with its two closest components merged, and from the best at K - 1 with its widest
component split along its main axis; each start keeps the weights and means and takes the
nearest covariances of type c.
"""
from __future__ import annotations

import numpy as np

from ..core.criteria import information_criteria
from ..core.families import family
from ..core.params import GMMParams


def start_from(weights, means, full_covariances, covariance_type: str) -> GMMParams:
    """Parameters of ``covariance_type`` from weights (K,), means (K, d) and (K, d, d)
    covariance matrices (their nearest covariances of the type)."""
    covariances = family(covariance_type).from_full(full_covariances)
    return GMMParams.from_covariances(weights, means, covariances, covariance_type)


def _full(params: GMMParams) -> np.ndarray:
    return np.asarray(params.family.full_covariances(
        params.covariances, params.n_components, params.n_features), dtype=np.float64)


def merged_closest(params: GMMParams):
    """(weights, means, covariances) with the two components closest in Mahalanobis
    distance under their average covariance merged (moments matched): K - 1 of them."""
    w, mu, sigma = params.weights, params.means, _full(params)
    k = len(w)
    best, pair = np.inf, (0, 1)
    for a in range(k):
        for b in range(a + 1, k):
            gap = mu[a] - mu[b]
            distance = gap @ np.linalg.solve(0.5 * (sigma[a] + sigma[b]), gap)
            if distance < best:
                best, pair = distance, (a, b)
    a, b = pair
    total = w[a] + w[b]
    mean = (w[a] * mu[a] + w[b] * mu[b]) / total
    cov = sum(w[j] * (sigma[j] + np.outer(mu[j] - mean, mu[j] - mean)) for j in pair) / total
    keep = [j for j in range(k) if j not in pair]
    return (np.append(w[keep], total), np.vstack([mu[keep], mean]),
            np.concatenate([sigma[keep], cov[None]]))


def split_widest(params: GMMParams):
    """(weights, means, covariances) with the component of the largest weight times main
    variance split in two along its main axis, one standard deviation either side:
    K + 1 of them."""
    w, mu, sigma = params.weights, params.means, _full(params)
    values, vectors = np.linalg.eigh(sigma)
    j = int(np.argmax(w * values[:, -1]))
    step = np.sqrt(values[j, -1]) * vectors[j, :, -1]
    return (np.append(np.where(np.arange(len(w)) == j, w / 2, w), w[j] / 2),
            np.vstack([np.where(np.arange(len(w))[:, None] == j, mu - step, mu), mu[j] + step]),
            np.concatenate([sigma, sigma[j][None]]))


def seeded_starts(grid, fits, n_features: int, n_types: int) -> list[tuple[int, str, GMMParams]]:
    """(candidate index, where the start came from, initial parameters) for every
    candidate with a fit. grid: (K, type) per candidate; fits: its ``em.FitResult`` or
    None (refused)."""
    def bic(i):
        k, c = grid[i]
        return information_criteria(fits[i].lower_bound, fits[i].n_rows,
                                     family(c).n_parameters(k, n_features))[0]

    by_k: dict[int, list[int]] = {}
    for i, fit in enumerate(fits):
        if fit is not None:
            by_k.setdefault(grid[i][0], []).append(i)
    ranked = {k: sorted(indices, key=bic) for k, indices in by_k.items()}
    starts = []
    for k, indices in ranked.items():
        neighbours = []
        if k + 1 in ranked:
            source = fits[ranked[k + 1][0]].params
            neighbours.append((f"K={k + 1} merged", merged_closest(source)))
        if k - 1 in ranked and k > 1:
            source = fits[ranked[k - 1][0]].params
            neighbours.append((f"K={k - 1} split", split_widest(source)))
        for i in indices:
            c = grid[i][1]
            for j in [j for j in indices if grid[j][1] != c][:n_types]:
                params = fits[j].params
                starts.append((i, grid[j][1], start_from(params.weights, params.means,
                                                         _full(params), c)))
            for label, (weights, means, covariances) in neighbours:
                starts.append((i, label, start_from(weights, means, covariances, c)))
    return starts
