"""The directions that separate a mixture's components most (the idea of mclust's MclustDR).

Scrucca (2010), "Dimension reduction for model-based clustering", Statistics and
Computing 20: with the mixture's marginal covariance ``S = W + B`` (``W`` the weighted
mean of the component covariances, ``B`` the weighted covariance of the component
means), the kernel

    M = B S^-1 B + sum_k pi_k (Sigma_k - W) S^-1 (Sigma_k - W)

collects the variation of the means and of the covariances across components. The
directions are the generalised eigenvectors ``M v = lambda S v``, largest ``lambda``
first: the first ones carry what tells the components apart, by location and by shape.
With equal covariances the first direction is Fisher's discriminant ``W^-1 (mu_1 - mu_2)``
for two components.
"""
from __future__ import annotations

import numpy as np
from scipy import linalg

from .params import GMMParams


def separating_directions(params: GMMParams) -> tuple[np.ndarray, np.ndarray]:
    """The mixture's separating directions, most separating first.

    Returns
    -------
    values : (d,) the generalised eigenvalues, descending (0 for a direction that
        separates nothing).
    directions : (d, d) unit-length columns; ``X @ directions[:, :2]`` projects rows of
        ``X`` (n, d) on the two most separating directions.
    """
    weights, means = params.weights, params.means
    d = params.n_features
    covariances = params.family.full_covariances(params.covariances, params.n_components, d)
    centre = weights @ means
    centred = means - centre
    within = np.einsum("k,kij->ij", weights, covariances)
    between = (centred.T * weights) @ centred
    total = within + between
    # a ridge in proportion to the scale keeps S positive definite for degenerate fits
    total = total + np.eye(d) * (1e-12 * max(np.trace(total) / d, np.finfo(float).tiny))
    total_inv = linalg.inv(total, assume_a="pos")
    spread = covariances - within
    kernel = between @ total_inv @ between + np.einsum(
        "k,kij,jl,klm->im", weights, spread, total_inv, spread)
    kernel = (kernel + kernel.T) / 2
    values, vectors = linalg.eigh(kernel, total)
    order = np.argsort(-values, kind="stable")
    values = np.maximum(values[order], 0.0)
    vectors = vectors[:, order]
    vectors /= np.linalg.norm(vectors, axis=0)
    # a sign convention, so the same model draws the same picture: largest entry positive
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(d)])
    vectors *= np.where(signs == 0, 1.0, signs)
    return values, vectors
