"""Block sizing, the per-chunk work arrays and the BLAS calls the kernels share.

Rows are processed in cache-sized blocks (``block_rows``); every per-block array is a view
of a buffer allocated once per chunk (``Workspace``); the products accumulate in place into
float64 sums (``acc_product``).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.linalg import blas as _blas

#: target size in bytes of the largest per-block work array (rows x K x d doubles)
BLOCK_BYTES = 1 << 22
#: from this many features on, the full-covariance kernels use the triangular structure:
#: the E-step GEMM is split in two (the zero lower-left block of every U_k is skipped,
#: 3/4 of the flops) and the scatter is one SYRK per component (half the flops of the
#: stacked GEMM); below it the extra calls per block cost more than they save
TRIANGULAR_MIN_FEATURES = 32


def block_rows(n_components: int, n_features: int) -> int:
    """Rows per cache block for a model of this size (between 256 and 16384)."""
    rows = BLOCK_BYTES // (8 * max(1, n_components * max(n_features, 4)))
    return int(min(16384, max(256, rows)))



def _acc_gemm(acc: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """acc += a @ b in place with one BLAS dgemm (beta=1); acc C-contiguous float64.

    Computed as acc.T += b.T @ a.T on the Fortran-ordered view acc.T, so that no operand
    that is C- or F-contiguous is copied.
    """

    def fortran(m):  # (array handed to BLAS, transpose flag) for the operand m.T
        return (m.T, 0) if m.T.flags.f_contiguous else (m, 1)

    bt, trans_b = fortran(b)
    at, trans_a = fortran(a)
    out = _blas.dgemm(1.0, bt, at, beta=1.0, c=acc.T, trans_a=trans_b, trans_b=trans_a,
                      overwrite_c=1)
    if not np.may_share_memory(out, acc):  # pragma: no cover - f2py copied acc
        acc[...] = out.T


def acc_product(acc: np.ndarray, a: np.ndarray, b: np.ndarray, ws: Workspace) -> None:
    """acc += a @ b with acc float64: one dgemm for float64 operands; for float32 operands
    one sgemm over the block into a float32 buffer, then added to the float64 sums (the
    rounding of a block's partial sum stays within the block)."""
    if a.dtype == np.float64 and b.dtype == np.float64:
        _acc_gemm(acc, a, b)
        return
    partial = ws.get(f"partial{acc.shape}", acc.shape, dtype=np.result_type(a, b))
    np.matmul(a, b, out=partial)
    acc += partial


def row_sums(R: np.ndarray) -> np.ndarray:
    """R.sum(axis=1) (K,) in float64 whatever R's type."""
    return R.sum(axis=1) if R.dtype == np.float64 else R.sum(axis=1, dtype=np.float64)


class Workspace:
    """Work arrays of one chunk, sized for ``rows`` rows per block; views per block.

    Every per-block array is a view of a flat buffer reshaped to exactly (K, m) or (m, ...)
    so that it is C-contiguous whatever the block's row count m. ``dtype`` is the E-step's
    compute type (float64, or float32 for float32 chunks), the default of every buffer.
    """

    def __init__(self, dtype=np.float64):
        self.dtype = np.dtype(dtype)
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple, fill: float | None = None,
            dtype=None) -> np.ndarray:
        dtype = self.dtype if dtype is None else dtype
        size = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.size < size:
            buf = np.empty(size, dtype=dtype)
            self._buffers[name] = buf
        view = buf[:size].reshape(shape)
        if fill is not None:
            view.fill(fill)
        return view


def gather_rows(Z: np.ndarray, rows: np.ndarray, ws: Workspace) -> np.ndarray:
    """Z[rows] (n, Z's width) in a workspace buffer; whole rows, since ``np.take`` into
    ``out=`` is several times slower on a column slice of Z."""
    Zg = ws.get("Z_gathered", (rows.size, Z.shape[1]))
    np.take(Z, rows, axis=0, out=Zg)
    return Zg



def as_float(X) -> np.ndarray:
    """The chunk as a float array (float32 stays float32; blocks are promoted one by one)."""
    X = np.asarray(X)
    return X if X.dtype.kind == "f" else X.astype(np.float64)


def compute_dtype(X: np.ndarray) -> np.dtype:
    """The E-step's compute type for a chunk: float32 for float32 data, else float64.

    The statistics are summed in float64 either way (about the chunk's centre); float32
    only shortens the E-step's products and elementwise passes.
    """
    return np.dtype(np.float32) if X.dtype == np.float32 else np.dtype(np.float64)


def chunk_ref(X: np.ndarray) -> np.ndarray:
    """The chunk's column means in float64: the centre every block is expanded about."""
    if not X.shape[0]:
        return np.zeros(X.shape[1])
    if X.dtype == np.float64:
        return (np.ones(X.shape[0]) @ X) / X.shape[0]
    return X.mean(axis=0, dtype=np.float64)
