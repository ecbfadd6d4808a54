"""Per kernel kind: the block's design matrix (centred rows in the kind's layout) and its
weighted log-probabilities log pi_k + log N(x_i | mu_k, Sigma_k), one GEMM for all
components."""
from __future__ import annotations

import math

import numpy as np

from ..terms import GaussianTerms
from . import blas, pruning
from .blas import Workspace

LOG_2PI = math.log(2.0 * math.pi)


class Design:
    """Builds, per block, the centred rows in the layout a kernel needs (see subclasses).

    A column of ones folds the means into the GEMMs.
    """

    #: where the centred rows sit in the design's columns, and whether squares follow
    squares = False

    def __init__(self, ref: np.ndarray, rows: int, ws: Workspace):
        self.ref = ref
        d = ref.shape[0]
        self.n_features = d
        self.width = self.width_for(d)
        self._full = ws.get("design", (rows, self.width))
        self._x = self.x_columns(d)
        self._init_constant_columns()

    def build(self, block: np.ndarray) -> np.ndarray:
        m, d = block.shape[0], self.n_features
        Z = self._full[:m]
        np.subtract(block, self.ref, out=Z[:, self._x])
        if self.squares:
            np.square(Z[:, :d], out=Z[:, d : 2 * d])
        return Z


class FullDesign(Design):
    """Z = [1 | Xc] (m, d+1)."""

    @staticmethod
    def width_for(d):
        return d + 1

    @staticmethod
    def x_columns(d):
        return slice(1, d + 1)

    def _init_constant_columns(self):
        self._full[:, 0] = 1.0


class TiedDesign(Design):
    """Xc (m, d)."""

    @staticmethod
    def width_for(d):
        return d

    @staticmethod
    def x_columns(d):
        return slice(0, d)

    def _init_constant_columns(self):
        pass


class DiagDesign(Design):
    """Z = [Xc | Xc^2 | 1] (m, 2d+1)."""

    squares = True

    @staticmethod
    def width_for(d):
        return 2 * d + 1

    @staticmethod
    def x_columns(d):
        return slice(0, d)

    def _init_constant_columns(self):
        self._full[:, -1] = 1.0



class LogProb:
    """Per-chunk constants of the E-step: the parameters re-expressed around ``ref``.

    ``__call__(Z)`` returns log pi_k + log N(x_i | mu_k, Sigma_k) as a (K, m) array;
    the subclasses hold each kernel's layout.
    """

    pruner: pruning.PrunedLogProb | None = None

    def __init__(self, terms: GaussianTerms, ref: np.ndarray, rows: int, ws: Workspace,
                 prune: bool = False):
        """``terms``: the E-step's ``GaussianTerms``; ``prune``: prepare a
        ``PrunedLogProb`` (for the statistics only)."""
        k, d = terms.means.shape
        self.n_components, self.n_features = k, d
        const = -0.5 * d * LOG_2PI + terms.log_det + terms.log_weights
        self.const = np.ascontiguousarray(np.broadcast_to(const, (k,)))[:, None]
        self.ws = ws
        self.dense_rows = rows
        # means relative to the chunk's centre, (K, d)
        if ws.dtype != np.float64:
            self.const = self.const.astype(ws.dtype)
        self._setup(terms, terms.means - ref, terms.precisions_cholesky, const, prune)

    def __call__(self, Z: np.ndarray, prune: bool = False) -> np.ndarray:
        """Weighted log-probabilities of the block's rows, a (K, m) view of the workspace.

        ``prune`` (statistics only): pairs that the pruner proves to lie below
        FLUSH_LOG_RATIO of their row's largest are -inf instead of their value;
        ``self.pruned`` says whether this block was pruned.
        """
        self.pruned = False
        return self._dense(Z)


class FullLogProb(LogProb):
    """y_k = (x - mu_k) @ U_k for all k in one GEMM: [1 | Xc] @ [[-b], [U_1 ... U_K]]."""

    def _setup(self, terms, means_c, prec_chol, const, prune):
        k, d = self.n_components, self.n_features
        b = np.einsum("ki,kij->kj", means_c, prec_chol)  # (K, d)
        h = d // 2
        triangular = not np.any(prec_chol[:, h:, :h])
        self.split = d >= max(2, blas.TRIANGULAR_MIN_FEATURES) and triangular
        if self.split:
            # U_k = [[A, B], [0, C]]: the first h outputs need only [1 | x_1..x_h]
            self.h = h
            self.W1 = np.empty((h + 1, k * h))
            self.W1[0] = -b[:, :h].reshape(-1)
            self.W1[1:] = prec_chol[:, :h, :h].transpose(1, 0, 2).reshape(h, k * h)
            self.W2 = np.empty((d + 1, k * (d - h)))
            self.W2[0] = -b[:, h:].reshape(-1)
            self.W2[1:] = prec_chol[:, :, h:].transpose(1, 0, 2).reshape(d, k * (d - h))
            self.W1 = self.W1.astype(self.ws.dtype, copy=False)
            self.W2 = self.W2.astype(self.ws.dtype, copy=False)
        else:
            self.W = np.empty((d + 1, k * d))
            self.W[0] = -b.reshape(-1)
            self.W[1:] = prec_chol.transpose(1, 0, 2).reshape(d, k * d)
            self.W = self.W.astype(self.ws.dtype, copy=False)
        if prune and d >= pruning.PRUNE_MIN_FEATURES and k > 1:
            self.pruner = pruning.PrunedLogProb(terms, means_c, b, self.const, self.ws)

    def __call__(self, Z: np.ndarray, prune: bool = False) -> np.ndarray:
        k, m = self.n_components, Z.shape[0]
        self.pruned = False
        if prune and self.pruner is not None:
            L = self.ws.get("L", (k, m))
            if self.pruner.fill(Z, L):
                self.pruned = True
                return L
        if m > self.dense_rows:
            out = self.ws.get("L_out", (k, m))
            for start in range(0, m, self.dense_rows):
                part = self._dense(Z[start : start + self.dense_rows])
                out[:, start : start + part.shape[1]] = part
            return out
        return self._dense(Z)

    def _dense(self, Z: np.ndarray) -> np.ndarray:
        """Every (component, row) pair of a block of at most ``dense_rows`` rows."""
        k, d = self.n_components, self.n_features
        m = Z.shape[0]
        L = self.ws.get("L_dense", (k, m))
        maha = self.ws.get("maha", (m, k))
        Y = self.ws.get("Y", (m * k * d,))
        if self.split:
            h = self.h
            Y1 = Y[: m * k * h].reshape(m, k * h)
            Y2 = Y[m * k * h :].reshape(m, k * (d - h))
            np.matmul(Z[:, : h + 1], self.W1, out=Y1)
            np.matmul(Z, self.W2, out=Y2)
            maha2 = self.ws.get("maha2", (m, k))
            Y1, Y2 = Y1.reshape(m, k, h), Y2.reshape(m, k, d - h)
            np.einsum("rkd,rkd->rk", Y1, Y1, out=maha)
            np.einsum("rkd,rkd->rk", Y2, Y2, out=maha2)
            maha += maha2
        else:
            Y = Y.reshape(m, k * d)
            np.matmul(Z, self.W, out=Y)
            Y3 = Y.reshape(m, k, d)
            np.einsum("rkd,rkd->rk", Y3, Y3, out=maha)
        np.copyto(L, maha.T)
        L *= -0.5
        L += self.const
        return L


class TiedLogProb(LogProb):
    """log p_k = c_k - |b_k|^2 / 2 + b_k . y - |y|^2 / 2 with y = Xc @ U."""

    def _setup(self, terms, means_c, prec_chol, const, prune):
        b = means_c @ prec_chol  # (K, d)
        self.const = (const - 0.5 * (b**2).sum(axis=1))[:, None].astype(self.ws.dtype)
        self.U = prec_chol.astype(self.ws.dtype, copy=False)
        self.B = b.astype(self.ws.dtype, copy=False)
        self.Y = self.ws.get("Y", (self.dense_rows, self.n_features))

    def _dense(self, Z: np.ndarray) -> np.ndarray:
        m = Z.shape[0]
        L = self.ws.get("L_dense", (self.n_components, m))
        Y = self.Y[:m]
        np.matmul(Z, self.U, out=Y)
        y_sq = self.ws.get("y_sq", (m,))
        np.einsum("rd,rd->r", Y, Y, out=y_sq)
        y_sq *= -0.5
        np.matmul(self.B, Y.T, out=L)
        L += self.const
        L += y_sq
        return L


class DiagLogProb(LogProb):
    """log p_k = c_k - 1/2 sum_j P_kj (x_j - m_kj)^2, expanded in x_j and x_j^2."""

    def _setup(self, terms, means_c, prec_chol, const, prune):
        k, d = self.n_components, self.n_features
        prec = terms.family.diagonal_precisions(prec_chol, d)  # (K, d)
        W = np.empty((k, 2 * d + 1))
        W[:, :d] = means_c * prec
        W[:, d : 2 * d] = -0.5 * prec
        W[:, 2 * d] = const - 0.5 * (means_c**2 * prec).sum(axis=1)
        self.W = W.astype(self.ws.dtype, copy=False)

    def _dense(self, Z: np.ndarray) -> np.ndarray:
        L = self.ws.get("L_dense", (self.n_components, Z.shape[0]))
        np.matmul(self.W, Z.T, out=L)
        return L
