"""Per kernel kind: the weighted moments of a chunk's blocks (sums, scatter), accumulated
about the chunk's centre and moved to the shift at the end."""
from __future__ import annotations

import numpy as np
from scipy.linalg import blas as _blas

from .blas import Workspace, acc_product, block_rows, gather_rows, row_sums

#: the scatter of one component gathers its rows with a nonzero responsibility when they
#: are at most this share of the block, and weights the whole block otherwise
GATHER_MAX_SHARE = 0.5


class Moments:
    """Accumulates a chunk's weighted moments about ``ref``; ``finish`` moves them to c_k.

    ``add(Z, R, w)`` takes a block from the kernel's ``Design`` and R (K, m), the
    responsibilities times the row weights; ``finish(shift_c)`` returns (N_k, S1, S2)
    about the shift, S2 in the kernel's unpacked form (the family packs it).
    """

    def __init__(self, n_components: int, n_features: int, ws: Workspace,
                 dense_rows: int | None = None):
        #: rows per sub-block of the dense per-component scatter
        self.dense_rows = dense_rows or block_rows(n_components, n_features)
        self.n_components, self.n_features = n_components, n_features
        self.ws = ws
        self._allocate(n_components, n_features)


class FullMoments(Moments):
    """G (K d, d+1) = stacked [sum_i r_ik x_i | sum_i r_ik x_i x_i^T], N (K)."""

    def _allocate(self, k, d):
        self.G = np.zeros((k * d, d + 1))
        self.N = np.zeros(k)

    def add(self, Z, R, w):
        # B[k, :, i] = r_ik x_i: the scatter of every component (and, through the
        # column of ones in Z, its first moment) in one GEMM
        k, d, m = self.n_components, self.n_features, Z.shape[0]
        Xt = self.ws.get("Xt", (d, m))
        np.copyto(Xt, Z[:, 1:].T)
        B = self.ws.get("Y", (k, d, m))
        np.multiply(R[:, None, :], Xt[None, :, :], out=B)
        acc_product(self.G, B.reshape(k * d, m), Z, self.ws)
        self.N += row_sums(R)

    def _raw(self):
        k, d = self.n_components, self.n_features
        return self.N, self.G[:, 0].reshape(k, d), self.G[:, 1:].reshape(k, d, d)

    def finish(self, shift_c):
        nk, s, A = self._raw()
        s1 = s - nk[:, None] * shift_c
        # sum r (x - c)(x - c)^T = A - c s^T - s c^T + N c c^T, with A, s about ref
        cs = shift_c[:, :, None] * s[:, None, :]
        s2 = A - cs - cs.transpose(0, 2, 1) + nk[:, None, None] * (
            shift_c[:, :, None] * shift_c[:, None, :]
        )
        return nk, s1, s2


class FullSyrkMoments(FullMoments):
    """From ``TRIANGULAR_MIN_FEATURES`` features on: C (K, d, d) with the lower triangles
    of sum_i r_ik x_i x_i^T (one SYRK per component on sqrt(r_ik) x_i, over the rows
    where r_ik > 0 when they are few) and SN (K, d+1) = [sum_i r_ik | sum_i r_ik x_i]."""

    def _allocate(self, k, d):
        self.C = np.zeros((k, d, d))
        self.SN = np.zeros((k, d + 1))

    def add(self, Z, R, w):
        k, d, m = self.n_components, self.n_features, Z.shape[0]
        Xt = self.ws.get("Xt", (d, m))
        np.copyto(Xt, Z[:, 1:].T)
        root_r = self.ws.get("root_r", (k, m))
        np.sqrt(R, out=root_r)
        active = np.count_nonzero(R, axis=1)  # (K,) rows each component holds
        # one buffer of weighted rows per component, reused: it stays in the core's
        # cache between the product that writes it and the SYRK that reads it
        for j in range(k):
            n_active = int(active[j])
            if n_active == 0:
                continue
            if n_active <= GATHER_MAX_SHARE * m:
                # only the rows this component holds (responsibilities flushed to 0
                # elsewhere): (n, d) rows, C[j].T += rows.T @ rows
                rows = np.flatnonzero(R[j])
                Zg = gather_rows(Z, rows, self.ws)
                G = self.ws.get("B", (n_active, d))
                np.multiply(Zg[:, 1:], root_r[j, rows][:, None], out=G)
                self._syrk(j, G.T, trans=0)
            else:
                # in sub-blocks of the cache size (the blocks are larger when pruning)
                for start in range(0, m, self.dense_rows):
                    stop = min(start + self.dense_rows, m)
                    B = self.ws.get("B", (d, stop - start))
                    np.multiply(root_r[j, start:stop], Xt[:, start:stop], out=B)
                    # C[j].T (Fortran order) += B @ B.T: upper triangle = lower of C[j]
                    self._syrk(j, B.T, trans=1)
        acc_product(self.SN, R, Z, self.ws)

    def _syrk(self, j, a, trans):
        """Upper triangle of C[j].T (Fortran order) += a a^T (trans=0) or a^T a (trans=1):
        dsyrk in place for float64, ssyrk of the block then added for float32."""
        if a.dtype == np.float64:
            _blas.dsyrk(1.0, a, beta=1.0, c=self.C[j].T, trans=trans, overwrite_c=1)
        else:
            self.C[j].T[...] += _blas.ssyrk(1.0, a, trans=trans)

    def _raw(self):
        lower = np.tril(self.C)
        return self.SN[:, 0].copy(), self.SN[:, 1:], lower + np.tril(self.C, -1).transpose(0, 2, 1)


class TiedMoments(Moments):
    """G (d, d) = sum_i w_i x_i x_i^T (responsibilities do not enter), S (K, d), N (K)."""

    def _allocate(self, k, d):
        self.G = np.zeros((d, d))
        self.S = np.zeros((k, d))
        self.N = np.zeros(k)

    def add(self, Z, R, w):
        if w is None:
            acc_product(self.G, Z.T, Z, self.ws)
        else:
            WZ = self.ws.get("WZ", (Z.shape[0], self.n_features))
            np.multiply(Z, w[:, None], out=WZ)
            acc_product(self.G, Z.T, WZ, self.ws)
        acc_product(self.S, R, Z, self.ws)
        self.N += row_sums(R)

    def finish(self, shift_c):
        nk, s = self.N, self.S
        s1 = s - nk[:, None] * shift_c
        cs = shift_c.T @ s
        s2 = self.G - cs - cs.T + (shift_c.T * nk) @ shift_c
        return nk, s1, s2


class DiagMoments(Moments):
    """M (K, 2d+1) = [sum r x | sum r x^2 | sum r]."""

    def _allocate(self, k, d):
        self.M = np.zeros((k, 2 * d + 1))

    def add(self, Z, R, w):
        acc_product(self.M, R, Z, self.ws)

    def finish(self, shift_c):
        d = self.n_features
        s, sq, nk = self.M[:, :d], self.M[:, d : 2 * d], self.M[:, 2 * d].copy()
        s1 = s - nk[:, None] * shift_c
        s2 = sq - 2.0 * shift_c * s + nk[:, None] * shift_c**2
        return nk, s1, s2
