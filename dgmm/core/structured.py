"""mclust's structured covariances Sigma_k = lambda_k D_k A_k D_k^T: the M-steps as pure functions.

Every function takes the per-component weights ``nk`` (K,) and the weighted scatter about
the new means: ``w`` (K, d) diagonals for the diagonal models, ``W`` (K, d, d) matrices for
the oriented ones (the caller adds ``reg_covar * nk_k * I`` beforehand, which keeps each
model's structure and gives scikit-learn's ``+ reg_covar * I`` for the four it shares). It
returns a ``CovarianceEstimate``: the covariances in the shape of the nearest
scikit-learn type, and for the iterative models the inner iterations spent and whether
they met ``tol`` before ``max_iter``.

Each function maximises Q = sum_k [-n_k/2 log|Sigma_k| - 1/2 tr(W_k Sigma_k^-1)] under the
model's constraints (Celeux and Govaert 1995; Browne and McNicholas 2014 for the
majorise-minimise steps on a common orientation, EVE and VVE). The closed forms reach the
maximum; the iterative ones are coordinate ascents or MM steps started from ``previous``
(the covariances the E-step used), so no step lowers Q below its value there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: relative change of the iterated objective (or of the parameters) that ends an inner loop
#: (mclust's default, sqrt(eps)); inside EM each M-step starts where the last one ended
INNER_TOL = 1.5e-8
#: inner iterations after which an iterative M-step stops and reports it
INNER_MAX_ITER = 200

#: a component whose weight is below this share of the total holds no data: it takes no
#: part in the shared parts of a structured M-step (``dgmm.core.mstep`` restores its
#: previous covariance)
EMPTY_FRACTION = 1e-12


@dataclass(frozen=True)
class CovarianceEstimate:
    """The covariances of one M-step and how its inner iterations ended."""

    covariances: np.ndarray
    n_iter: int = 0
    converged: bool = True


def _geometric_mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(np.mean(np.log(values), axis=axis))


def _limits(tol, max_iter) -> tuple[float, int]:
    """The inner loop's tolerance and cap (the module's defaults when None)."""
    return (INNER_TOL if tol is None else tol,
            INNER_MAX_ITER if max_iter is None else max_iter)


def _relative_change(new: np.ndarray, old: np.ndarray) -> float:
    change = np.abs(new - old)
    change /= 1.0 + np.abs(new)
    return float(change.max())


def _compose(orientations: np.ndarray, diagonals: np.ndarray) -> np.ndarray:
    """D diag(c_k) D^T per component; orientations (K, d, d) or (d, d), diagonals (K, d)."""
    if orientations.ndim == 2:
        orientations = orientations[None]
    out = np.einsum("kij,kj,klj->kil", orientations, diagonals, orientations)
    return 0.5 * (out + np.swapaxes(out, 1, 2))


# -- diagonal models: w (K, d) ----------------------------------------------------------

def eii(nk, w, previous=None, **_) -> CovarianceEstimate:
    """Sigma_k = lambda I: lambda = tr(sum_k W_k) / (n d); covariances (K,)."""
    return CovarianceEstimate(np.full(nk.shape[0], w.sum() / (nk.sum() * w.shape[1])))


def vii(nk, w, previous=None, **_) -> CovarianceEstimate:
    """Sigma_k = lambda_k I: lambda_k = tr W_k / (n_k d); covariances (K,)."""
    return CovarianceEstimate(w.sum(axis=1) / (nk * w.shape[1]))


def eei(nk, w, previous=None, **_) -> CovarianceEstimate:
    """Sigma_k = lambda A: diag(sum_k W_k) / n; covariances (K, d)."""
    return CovarianceEstimate(np.repeat((w.sum(axis=0) / nk.sum())[None], nk.shape[0], 0))


def vvi(nk, w, previous=None, **_) -> CovarianceEstimate:
    """Sigma_k = lambda_k A_k: diag(W_k) / n_k; covariances (K, d)."""
    return CovarianceEstimate(w / nk[:, None])


def evi(nk, w, previous=None, **_) -> CovarianceEstimate:
    """Sigma_k = lambda A_k: A_k = diag W_k / |diag W_k|^(1/d), lambda = sum_k
    |diag W_k|^(1/d) / n; covariances (K, d)."""
    g = _geometric_mean(w, axis=1)
    return CovarianceEstimate((g.sum() / nk.sum()) * w / g[:, None])


def vei(nk, w, previous=None, tol=None, max_iter=None) -> CovarianceEstimate:
    """Sigma_k = lambda_k A (A diagonal, |A| = 1), alternating lambda_k = tr(W_k A^-1) /
    (n_k d) and A = sum_k W_k / lambda_k scaled to |A| = 1; covariances (K, d)."""
    tol, max_iter = _limits(tol, max_iter)
    d = w.shape[1]
    if previous is None:
        shape = np.ones(d)
    else:
        shape = (previous / _geometric_mean(previous, axis=1)[:, None]).mean(axis=0)
        shape /= _geometric_mean(shape)
    volumes = (w / shape).sum(axis=1) / (nk * d)
    for n_iter in range(1, max_iter + 1):
        new_shape = (w / volumes[:, None]).sum(axis=0)
        new_shape /= _geometric_mean(new_shape)
        new_volumes = (w / new_shape).sum(axis=1) / (nk * d)
        change = max(_relative_change(new_shape, shape), _relative_change(new_volumes, volumes))
        shape, volumes = new_shape, new_volumes
        if change <= tol:
            return CovarianceEstimate(volumes[:, None] * shape, n_iter, True)
    return CovarianceEstimate(volumes[:, None] * shape, max_iter, False)


# -- oriented models: W (K, d, d) -------------------------------------------------------

def eee(nk, W, previous=None, **_) -> CovarianceEstimate:
    """Sigma = sum_k W_k / n; covariance (d, d)."""
    return CovarianceEstimate(W.sum(axis=0) / nk.sum())


def vvv(nk, W, previous=None, **_) -> CovarianceEstimate:
    """Sigma_k = W_k / n_k; covariances (K, d, d)."""
    return CovarianceEstimate(W / nk[:, None, None])


def eev(nk, W, previous=None, **_) -> CovarianceEstimate:
    """Sigma_k = lambda D_k A D_k^T: D_k the eigenvectors of W_k, lambda A the sum over k
    of their eigenvalues (in the same order) over n; covariances (K, d, d)."""
    eigenvalues, vectors = np.linalg.eigh(W)
    common = eigenvalues.sum(axis=0) / nk.sum()
    return CovarianceEstimate(_compose(vectors, np.repeat(common[None], nk.shape[0], 0)))


def evv(nk, W, previous=None, **_) -> CovarianceEstimate:
    """Sigma_k = lambda C_k (|C_k| = 1): C_k = W_k / |W_k|^(1/d), lambda = sum_k
    |W_k|^(1/d) / n; covariances (K, d, d)."""
    d = W.shape[1]
    root_det = np.exp(np.linalg.slogdet(W)[1] / d)
    return CovarianceEstimate((root_det.sum() / nk.sum()) * W / root_det[:, None, None])


def vev(nk, W, previous=None, tol=None, max_iter=None) -> CovarianceEstimate:
    """Sigma_k = lambda_k D_k A D_k^T: D_k the eigenvectors of W_k (eigenvalues omega_k,
    ascending, paired with A ascending), then alternating lambda_k = tr(Omega_k A^-1) /
    (n_k d) and A = sum_k Omega_k / lambda_k scaled to |A| = 1; covariances (K, d, d)."""
    tol, max_iter = _limits(tol, max_iter)
    d = W.shape[1]
    omega, vectors = np.linalg.eigh(W)
    if previous is None:
        shape = np.ones(d)
    else:
        spectra = np.linalg.eigvalsh(previous)
        shape = (spectra / _geometric_mean(spectra, axis=1)[:, None]).mean(axis=0)
        shape /= _geometric_mean(shape)
    volumes = (omega / shape).sum(axis=1) / (nk * d)
    n_iter, converged = max_iter, False
    for step in range(1, max_iter + 1):
        new_shape = (omega / volumes[:, None]).sum(axis=0)
        new_shape /= _geometric_mean(new_shape)
        new_volumes = (omega / new_shape).sum(axis=1) / (nk * d)
        change = max(_relative_change(new_shape, shape), _relative_change(new_volumes, volumes))
        shape, volumes = new_shape, new_volumes
        if change <= tol:
            n_iter, converged = step, True
            break
    return CovarianceEstimate(_compose(vectors, volumes[:, None] * shape), n_iter, converged)


def vee(nk, W, previous=None, tol=None, max_iter=None) -> CovarianceEstimate:
    """Sigma_k = lambda_k C (|C| = 1): alternating lambda_k = tr(W_k C^-1) / (n_k d) and
    C = sum_k W_k / lambda_k scaled to |C| = 1; covariances (K, d, d)."""
    tol, max_iter = _limits(tol, max_iter)
    d = W.shape[1]
    if previous is None:
        common = W.sum(axis=0)
    else:
        root_det = np.exp(np.linalg.slogdet(previous)[1] / d)
        common = (previous / root_det[:, None, None]).mean(axis=0)
    common = common / np.exp(np.linalg.slogdet(common)[1] / d)
    volumes = np.einsum("kij,ji->k", W, np.linalg.inv(common)) / (nk * d)
    n_iter, converged = max_iter, False
    for step in range(1, max_iter + 1):
        new_common = np.einsum("kij,k->ij", W, 1.0 / volumes)
        new_common /= np.exp(np.linalg.slogdet(new_common)[1] / d)
        new_volumes = np.einsum("kij,ji->k", W, np.linalg.inv(new_common)) / (nk * d)
        change = max(_relative_change(new_common, common),
                     _relative_change(new_volumes, volumes))
        common, volumes = new_common, new_volumes
        if change <= tol:
            n_iter, converged = step, True
            break
    covariances = volumes[:, None, None] * common
    return CovarianceEstimate(0.5 * (covariances + np.swapaxes(covariances, 1, 2)), n_iter,
                              converged)


def _polar(matrix: np.ndarray) -> np.ndarray:
    """The orthogonal factor of ``matrix`` (the orthogonal Q maximising tr(Q^T matrix))."""
    u, _, vt = np.linalg.svd(matrix)
    return u @ vt


def _common_orientation(previous: np.ndarray | None, d: int) -> np.ndarray:
    """A starting D for the common-orientation models: the eigenvectors of the sum of
    the previous covariances (which share them), or I."""
    if previous is None:
        return np.eye(d)
    return np.linalg.eigh(previous.sum(axis=0))[1]


def _orientation_mm_step(W: np.ndarray, omega: np.ndarray, D: np.ndarray,
                         inverse_diagonals: np.ndarray) -> np.ndarray:
    """Two majorise-minimise steps on f(D) = sum_k tr(D^T W_k D B_k) over orthogonal D,
    B_k = diag(inverse_diagonals[k]) (Browne and McNicholas 2014): first with W_k
    majorised by omega_k I (omega_k its largest eigenvalue), then with B_k by its
    largest entry. Each step does not increase f."""
    d = W.shape[1]
    eye = np.eye(d)
    target = np.einsum("kij,jl,kl->il", omega[:, None, None] * eye - W, D, inverse_diagonals)
    D = _polar(target)
    beta = inverse_diagonals.max(axis=1, keepdims=True)
    target = np.einsum("kij,jl,kl->il", W, D, beta - inverse_diagonals)
    return _polar(target)


def _diagonals_in(D: np.ndarray, W: np.ndarray) -> np.ndarray:
    """diag(D^T W_k D) for every k, (K, d)."""
    return np.einsum("ji,kjl,li->ki", D, W, D)


def eve(nk, W, previous=None, tol=None, max_iter=None) -> CovarianceEstimate:
    """Sigma_k = lambda D A_k D^T: MM steps on the common D, A_k = diag(D^T W_k D) scaled
    to |A_k| = 1, lambda = sum_k tr(D^T W_k D A_k^-1) / (n d); covariances (K, d, d)."""
    tol, max_iter = _limits(tol, max_iter)
    d = W.shape[1]
    omega = np.linalg.eigvalsh(W)[:, -1]
    D = _common_orientation(previous, d)
    if previous is None:
        shapes = np.ones((W.shape[0], d))
    else:
        shapes = _diagonals_in(D, previous)
        shapes /= _geometric_mean(shapes, axis=1)[:, None]
    objective = np.inf
    n_iter, converged = max_iter, False
    for step in range(1, max_iter + 1):
        D = _orientation_mm_step(W, omega, D, 1.0 / shapes)
        diagonals = _diagonals_in(D, W)
        root_det = _geometric_mean(diagonals, axis=1)
        shapes = diagonals / root_det[:, None]
        new_objective = d * root_det.sum()
        change = abs(new_objective - objective) / (1.0 + abs(new_objective))
        objective = new_objective
        if change <= tol:
            n_iter, converged = step, True
            break
    volume = objective / (nk.sum() * d)
    return CovarianceEstimate(_compose(D, volume * shapes), n_iter, converged)


def vve(nk, W, previous=None, tol=None, max_iter=None) -> CovarianceEstimate:
    """Sigma_k = lambda_k D A_k D^T = D diag(c_k) D^T: MM steps on the common D with the
    weights B_k = diag(c_k)^-1 (volume included), c_k = diag(D^T W_k D) / n_k; the
    objective is sum_k n_k log|diag(D^T W_k D)|; covariances (K, d, d)."""
    tol, max_iter = _limits(tol, max_iter)
    d = W.shape[1]
    omega = np.linalg.eigvalsh(W)[:, -1]
    D = _common_orientation(previous, d)
    diagonals = (np.ones((W.shape[0], d)) if previous is None
                 else _diagonals_in(D, previous))
    objective = np.inf
    n_iter, converged = max_iter, False
    for step in range(1, max_iter + 1):
        D = _orientation_mm_step(W, omega, D, 1.0 / diagonals)
        diagonals = _diagonals_in(D, W) / nk[:, None]
        new_objective = float(nk @ np.log(diagonals).sum(axis=1))
        change = abs(new_objective - objective) / (1.0 + abs(new_objective))
        objective = new_objective
        if change <= tol:
            n_iter, converged = step, True
            break
    return CovarianceEstimate(_compose(D, diagonals), n_iter, converged)


def expected_log_likelihood(nk: np.ndarray, W: np.ndarray, covariances: np.ndarray) -> float:
    """Q = sum_k [-n_k/2 log|Sigma_k| - 1/2 tr(W_k Sigma_k^-1)] for full (K, d, d)
    matrices W and covariances (the terms of the complete-data log-likelihood that
    depend on the covariances)."""
    logdet = np.linalg.slogdet(covariances)[1]
    trace = np.einsum("kij,kji->k", W, np.linalg.inv(covariances))
    return float(-0.5 * (nk @ logdet + trace.sum()))


# -- the decomposition ------------------------------------------------------------------

def decompose(covariances: np.ndarray, letters: str, diagonal: bool):
    """(volumes, shapes, orientations) of full (K, d, d) covariances under a model named by
    ``letters`` (volume, shape, orientation, each 'E', 'V' or 'I'): shared parts are
    returned once (a scalar, (d,), (d, d)), varying ones per component ((K,), (K, d),
    (K, d, d)). Shapes have determinant 1 and are in decreasing order for the models with
    variable orientation; orientations hold the axes as columns."""
    K, d = covariances.shape[:2]
    if diagonal:
        diagonals = np.diagonal(covariances, axis1=1, axis2=2)
        orientations = np.repeat(np.eye(d)[None], K, axis=0)
    elif letters[2] == "V":
        diagonals, orientations = np.linalg.eigh(covariances)
        diagonals, orientations = diagonals[:, ::-1], orientations[:, :, ::-1]
    else:
        common = np.linalg.eigh(covariances.sum(axis=0))[1][:, ::-1]
        diagonals = _diagonals_in(common, covariances)
        orientations = np.repeat(common[None], K, axis=0)
    volumes = _geometric_mean(diagonals, axis=1)
    shapes = diagonals / volumes[:, None]

    def shared(values, letter):
        return values[0] if letter in "EI" else values

    return (shared(volumes, letters[0]), shared(shapes, letters[1]),
            shared(orientations, letters[2]))
