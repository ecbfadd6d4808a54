"""mclust's fourteen covariance models as covariance families.

Sigma_k = lambda_k D_k A_k D_k^T with volume, shape and orientation each Equal across
components, Variable, or the Identity: EII, VII, EEI, VEI, EVI, VVI, EEE, VEE, EVE, VVE, EEV,
VEV, EVV, VVV. Each family keeps the shapes, kernel and statistics of the nearest
scikit-learn type (spherical (K,) for ?II, diag (K, d) for the other diagonal models, tied
(d, d) for EEE, full (K, d, d) for the oriented ones), so the E-step, the statistics, the
pass and everything built on them are unchanged. VII, VVI, EEE and VVV are spherical, diag,
tied and full under mclust's names (the same code, the same numbers); the others replace
the M-step covariance by the pure functions of ``dgmm.core.structured`` and count their
free parameters as mclust's ``nMclustParams``.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import FitError
from . import structured
from .families import (
    FAMILIES,
    ILL_DEFINED_COVARIANCE,
    _Diag,
    _Full,
    _Spherical,
    _Tied,
    unpack_lower,
)


def _covariance_parameters(name: str, k: int, d: int) -> float:
    """Free covariance parameters of mclust's model ``name`` (its ``nVarParams``)."""
    rotation = d * (d - 1) / 2.0
    return {
        "EII": 1, "VII": k, "EEI": d, "VEI": k + d - 1, "EVI": 1 + k * (d - 1),
        "VVI": k * d, "EEE": d * (d + 1) / 2.0, "VEE": k + d - 1 + rotation,
        "EVE": 1 + k * (d - 1) + rotation, "VVE": k * d + rotation,
        "EEV": d + k * rotation, "VEV": k + d - 1 + k * rotation,
        "EVV": 1 - k + k * d * (d + 1) / 2.0, "VVV": k * d * (d + 1) / 2.0,
    }[name]


class _Structured:
    """The M-step of a structured model on the statistics of its nearest type."""

    #: the pure M-step of ``dgmm.core.structured``
    model = None

    def n_covariance_parameters(self, k, d):
        return _covariance_parameters(self.name, k, d)

    def _scatter(self, nk, delta, s2, reg_covar):
        raise NotImplementedError

    def fit_covariances(self, nk, delta, s2, reg_covar, previous=None):
        active = nk > structured.EMPTY_FRACTION * nk.sum()
        scatter = self._scatter(nk, delta, s2, reg_covar)[active]
        if previous is not None:
            previous = np.asarray(previous, dtype=np.float64)[active]
        estimate = type(self).model(nk[active], scatter, previous)
        if active.all():
            return estimate
        covariances = np.empty((nk.shape[0],) + estimate.covariances.shape[1:])
        covariances[active] = estimate.covariances
        covariances[~active] = estimate.covariances.mean(axis=0)  # mstep keeps previous
        return replace(estimate, covariances=covariances)

    def estimate_covariances(self, nk, delta, s2, reg_covar, previous=None):
        return self.fit_covariances(nk, delta, s2, reg_covar, previous).covariances

    def random_covariances(self, rng, k, d, low, high):
        letters = self.name
        volumes = rng.uniform(low, high, 1 if letters[0] == "E" else k)
        shapes = (np.ones((1, d)) if letters[1] == "I"
                  else rng.uniform(1.0, high / low, (1 if letters[1] == "E" else k, d)))
        shapes = shapes / np.exp(np.log(shapes).mean(axis=1, keepdims=True))
        diagonals = np.broadcast_to(volumes[:, None] * shapes, (k, d))
        if letters[2] == "I":
            return diagonals[:, 0].copy() if self.kernel == "diagonal" and self.depth == 1 \
                else diagonals.copy()
        n_rotations = 1 if letters[2] == "E" else k
        rotations = [np.linalg.qr(rng.standard_normal((d, d)))[0] for _ in range(n_rotations)]
        return np.stack([(rotations[j % n_rotations] * diagonals[j]) @ rotations[j %
                         n_rotations].T for j in range(k)])


class _DiagonalScatter(_Structured):
    def _scatter(self, nk, delta, s2, reg_covar):
        return s2 - nk[:, None] * delta**2 + reg_covar * nk[:, None]


class _FullScatter(_Structured):
    def _scatter(self, nk, delta, s2, reg_covar):
        d = delta.shape[1]
        W = unpack_lower(s2, d) - nk[:, None, None] * (delta[:, :, None] * delta[:, None, :])
        W[:, np.arange(d), np.arange(d)] += reg_covar * nk[:, None]
        return W

    def precision_cholesky(self, covariances):
        """U = inv(cholesky(Sigma_k)).T for all k in two batched LAPACK calls (the M-step
        runs for every candidate of a grid after every pass)."""
        try:
            chol = np.linalg.cholesky(covariances)
        except np.linalg.LinAlgError:
            raise FitError(ILL_DEFINED_COVARIANCE) from None
        return np.ascontiguousarray(np.swapaxes(np.tril(np.linalg.inv(chol)), 1, 2))


def _declare(base, name: str, model=None):
    attributes = {"name": name, "mclust_name": name}
    if model is not None:
        attributes["model"] = staticmethod(model)
        bases = (_DiagonalScatter if base.kernel == "diagonal" else _FullScatter, base)
    else:
        bases = (base,)
    return type(f"_{name}", bases, attributes)()


EII = _declare(_Spherical, "EII", structured.eii)
VII = _declare(_Spherical, "VII")
EEI = _declare(_Diag, "EEI", structured.eei)
VEI = _declare(_Diag, "VEI", structured.vei)
EVI = _declare(_Diag, "EVI", structured.evi)
VVI = _declare(_Diag, "VVI")
EEE = _declare(_Tied, "EEE")
VEE = _declare(_Full, "VEE", structured.vee)
EVE = _declare(_Full, "EVE", structured.eve)
VVE = _declare(_Full, "VVE", structured.vve)
EEV = _declare(_Full, "EEV", structured.eev)
VEV = _declare(_Full, "VEV", structured.vev)
EVV = _declare(_Full, "EVV", structured.evv)
VVV = _declare(_Full, "VVV")

FAMILIES.update((f.name, f) for f in (EII, VII, EEI, VEI, EVI, VVI, EEE, VEE, EVE, VVE, EEV,
                                      VEV, EVV, VVV))
