"""Per-chunk kernels: the E-step and the scatter of one chunk of rows, NumPy/SciPy only.

Every function takes one chunk ``X`` of shape (n_samples, n_features) and returns arrays
or a ``SuffStats``. Rows are processed in cache-sized blocks; the flops go to BLAS-3 calls
covering all components at once. Each covariance family names its kernel kind
(``CovarianceFamily.kernel``): ``KERNELS`` maps it to the classes that build the block's
design matrix, its log-probabilities and its moments. Work arrays are allocated once per
chunk (``_Workspace``); statistics skip (row, component) pairs that provably cannot count
(``FLUSH_LOG_RATIO``, ``_PrunedLogProb``). The layouts, the pruning bound and why the
blocks are allocation-free are explained in docs/design.md.
"""
from __future__ import annotations

import math
import weakref

import numpy as np
from scipy.linalg import blas as _blas

from . import missing
from .families import family
from .params import GMMParams
from .stats import SuffStats
from .threads import single_blas_thread

#: target size in bytes of the largest per-block work array (rows x K x d doubles)
BLOCK_BYTES = 1 << 22
#: from this many features on, the full-covariance kernels use the triangular structure:
#: the E-step GEMM is split in two (the zero lower-left block of every U_k is skipped,
#: 3/4 of the flops) and the scatter is one SYRK per component (half the flops of the
#: stacked GEMM); below it the extra calls per block cost more than they save
TRIANGULAR_MIN_FEATURES = 32
LOG_2PI = math.log(2.0 * math.pi)
#: in the statistics (not in predict_proba), a responsibility below exp(-50) ~ 2e-22
#: times the row's largest (which is at least 1/K) is set to exactly 0. A row's share of
#: N_k then moves by under 2e-22, so N_k moves by under 2e-22 N: below float64 rounding
#: (1.1e-16 N_k) for every component holding more than 2e-6 of the data, and under 1e-12
#: of N_k for any weight above 2e-10. Two things are gained: no subnormal numbers (from
#: exp, then from their products with the data) reach the GEMMs, where each costs 10-100x
#: a normal one; and the full-covariance scatter skips the rows that do not belong to a
#: component (see ``_Moments.add``): with separated components, most of them
FLUSH_LOG_RATIO = -50.0
#: the scatter of one component gathers its rows with a nonzero responsibility when they
#: are at most this share of the block, and weights the whole block otherwise
GATHER_MAX_SHARE = 0.5
#: from this many features on, the full-covariance E-step of the statistics skips the
#: (row, component) pairs that provably fall under FLUSH_LOG_RATIO (see ``_LogProb``)
PRUNE_MIN_FEATURES = 32
#: a block is pruned only when at most this share of its (row, component) pairs remain
#: (otherwise the dense GEMM over all components is cheaper)
PRUNE_MAX_SHARE = 0.5
#: nats of slack on the pruning bounds (their rounding is many orders below it)
PRUNE_SLACK_NATS = 1.0
#: eigen-directions per component kept exactly in the pruning bound: covers components
#: stretched along a few axes (e.g. one spanning two clusters early in a fit)
PRUNE_DIRECTIONS = 4
#: when pruning is possible, rows per block are this multiple of ``block_rows``: the
#: per-component products on gathered rows need a few hundred rows each to run well
PRUNE_BLOCK_FACTOR = 4


def block_rows(n_components: int, n_features: int) -> int:
    """Rows per cache block for a model of this size (between 256 and 16384)."""
    rows = BLOCK_BYTES // (8 * max(1, n_components * max(n_features, 4)))
    return int(min(16384, max(256, rows)))


def _all_finite(a: np.ndarray) -> bool:
    """True when no entry is NaN or inf (one fast pass; exact, never a false 'True')."""
    if a.size == 0 or a.dtype.kind not in "fc":
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(a, axis=None)
    # NaN and inf propagate through the sum; a finite sum proves every entry finite.
    # An overflowing sum of finite entries only sends the caller to the exact check.
    return bool(np.isfinite(total))


def split_finite(X: np.ndarray, sample_weight: np.ndarray | None, row_offset: int = 0):
    """Drop rows holding NaN or inf.

    Returns ``(X, sample_weight, n_nonfinite, first_nonfinite)`` where the last is the
    global index (``row_offset`` + local index) of the first dropped row, or -1.
    """
    if _all_finite(X) and (sample_weight is None or _all_finite(sample_weight)):
        return X, sample_weight, 0, -1
    finite = np.isfinite(X).all(axis=1)
    if sample_weight is not None:
        finite &= np.isfinite(sample_weight)
    if finite.all():
        return X, sample_weight, 0, -1
    bad = np.flatnonzero(~finite)
    X = X[finite]
    if sample_weight is not None:
        sample_weight = sample_weight[finite]
    return X, sample_weight, int(bad.size), int(row_offset + bad[0])


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


def _acc_product(acc: np.ndarray, a: np.ndarray, b: np.ndarray, ws: _Workspace) -> None:
    """acc += a @ b with acc float64: one dgemm for float64 operands; for float32 operands
    one sgemm over the block into a float32 buffer, then added to the float64 sums (the
    rounding of a block's partial sum stays within the block)."""
    if a.dtype == np.float64 and b.dtype == np.float64:
        _acc_gemm(acc, a, b)
        return
    partial = ws.get(f"partial{acc.shape}", acc.shape, dtype=np.result_type(a, b))
    np.matmul(a, b, out=partial)
    acc += partial


def _row_sums(R: np.ndarray) -> np.ndarray:
    """R.sum(axis=1) (K,) in float64 whatever R's type."""
    return R.sum(axis=1) if R.dtype == np.float64 else R.sum(axis=1, dtype=np.float64)


class _Workspace:
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


def _gather_rows(Z: np.ndarray, rows: np.ndarray, ws: _Workspace) -> np.ndarray:
    """Z[rows] (n, Z's width) in a workspace buffer; whole rows, since ``np.take`` into
    ``out=`` is several times slower on a column slice of Z."""
    Zg = ws.get("Z_gathered", (rows.size, Z.shape[1]))
    np.take(Z, rows, axis=0, out=Zg)
    return Zg


class _Design:
    """Builds, per block, the centred rows in the layout a kernel needs (see subclasses).

    A column of ones folds the means into the GEMMs.
    """

    #: where the centred rows sit in the design's columns, and whether squares follow
    squares = False

    def __init__(self, ref: np.ndarray, rows: int, ws: _Workspace):
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


class _FullDesign(_Design):
    """Z = [1 | Xc] (m, d+1)."""

    @staticmethod
    def width_for(d):
        return d + 1

    @staticmethod
    def x_columns(d):
        return slice(1, d + 1)

    def _init_constant_columns(self):
        self._full[:, 0] = 1.0


class _TiedDesign(_Design):
    """Xc (m, d)."""

    @staticmethod
    def width_for(d):
        return d

    @staticmethod
    def x_columns(d):
        return slice(0, d)

    def _init_constant_columns(self):
        pass


class _DiagDesign(_Design):
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


#: the pruning bounds' eigen-data per parameter object: every chunk task of a pass on a
#: worker receives the same deserialized parameters, so the K eigen-decompositions
#: (about the cost of 1000 rows' E-step) run once per worker and pass, not per chunk
_SOFTEST_DIRECTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _softest_directions(params: GMMParams, r: int):
    """(lam_r (K,), gaps (K, r), V (K, d, r)) for the pruning bound of 'full' parameters.

    V holds the eigenvectors of each precision U_k U_k^T for its r smallest eigenvalues
    lam_1..lam_r, gaps = lam_{r+1} - lam_j, and lam_r is lam_{r+1} less tau = 8 d eps
    lam_max: the computed eigenpairs are exact for a matrix within tau of the precision
    (forming U U^T and eigh each lose a few ulps of lam_max), so with lam_r - tau the bound
    holds for the precision itself, which matters when it is ill-conditioned (a tiny
    reg_covar with collinear or badly scaled features).
    """
    cached = _SOFTEST_DIRECTIONS.get(params)
    if cached is not None and cached[0] == r:
        return cached[1]
    prec_chol = params.precisions_cholesky
    d = prec_chol.shape[1]
    lam, vec = np.linalg.eigh(prec_chol @ prec_chol.transpose(0, 2, 1))
    lam = np.maximum(lam, 0.0)
    tau = 8 * d * np.finfo(np.float64).eps * lam[:, -1]
    value = (np.maximum(lam[:, r] - tau, 0.0), lam[:, r, None] - lam[:, :r],
             np.ascontiguousarray(vec[:, :, :r]))
    _SOFTEST_DIRECTIONS[params] = (r, value)
    return value


class _PrunedLogProb:
    """The 'full' E-step of the statistics, skipping pairs the flush would zero.

    Per component: W_k = [-b_k; U_k] (d+1, d) for the exact values on gathered rows, and
    the bound data: the precision's PRUNE_DIRECTIONS smallest eigenvalues and their
    eigenvectors V_k (see ``_softest_directions``), which bound the Mahalanobis distance
    from below (see ``fill``).
    """

    def __init__(self, params: GMMParams, means_c: np.ndarray, b: np.ndarray,
                 const: np.ndarray, ws: _Workspace):
        prec_chol = params.precisions_cholesky
        k, d = means_c.shape
        self.n_components, self.n_features = k, d
        self.const = const  # (K, 1), in the compute type
        #: relative rounding slack on |x|^2 + |mu|^2 in the bound: the expansion in the
        #: compute type loses a few d eps of it; 1e-10 for float64, 1e-4 for float32
        self.slack = 1e-10 if ws.dtype == np.float64 else 1e-4
        self.ws = ws
        self.W_k = np.empty((k, d + 1, d))
        self.W_k[:, 0] = -b
        self.W_k[:, 1:] = prec_chol
        r = min(PRUNE_DIRECTIONS, d - 1)
        lam_r, gaps, V = _softest_directions(params, r)
        self.lam_r = lam_r[None, :]  # (1, K)
        # [1 | Xc] @ bounds_w = [projections of x - mu_k on V_k (K r columns) |
        # |mu_k|^2 - 2 x.mu_k (K columns)]; the rounding slack (1e-10 of
        # |x|^2 + |mu|^2 in float64, see fill) is folded in as the factor 1 - slack
        self.bounds_w = np.empty((d + 1, k * r + k))
        self.bounds_w[0, : k * r] = -np.einsum("kd,kdr->kr", means_c, V).reshape(-1)
        self.bounds_w[1:, : k * r] = V.transpose(1, 0, 2).reshape(d, k * r)
        self.bounds_w[0, k * r :] = (means_c**2).sum(axis=1) * (1.0 - self.slack)
        self.bounds_w[1:, k * r :] = -2.0 * means_c.T
        # sum_j (lam_r - lam_j) p_j^2 for all k as one product with the squares
        self.gap_w = np.zeros((k * r, k))
        for j in range(k):
            self.gap_w[j * r : (j + 1) * r, j] = gaps[j]
        self.n_directions = r
        self.W_k = self.W_k.astype(ws.dtype, copy=False)
        self.bounds_w = self.bounds_w.astype(ws.dtype, copy=False)
        self.gap_w = self.gap_w.astype(ws.dtype, copy=False)
        self.lam_r = self.lam_r.astype(ws.dtype, copy=False)

    def fill(self, Z: np.ndarray, L: np.ndarray) -> bool:
        """Fill L (K, m) for a 'full' block computing only the pairs that may matter.

        With delta = x_i - mu_k, p_j its projections on the r eigenvectors of the
        precision with the smallest eigenvalues lam_1 <= ... <= lam_r (all others are
        >= lam_r):  maha_ik >= lam_r |delta|^2 - sum_j (lam_r - lam_j) p_j^2, so
        log p_ik <= c_k - that / 2. Each row's most promising component (largest upper
        bound) is computed exactly first; every other pair whose upper bound lies more
        than -FLUSH_LOG_RATIO (+ slack) below that exact value is set to -inf (the flush
        would have zeroed it anyway) and the rest are computed exactly, per component on
        its gathered rows. Returns False when more than PRUNE_MAX_SHARE of the pairs
        remain (L then holds nothing usable; the caller computes the block densely).
        """
        k, m = self.n_components, Z.shape[0]
        r = self.n_directions
        ws = self.ws
        both = ws.get("bounds", (m, k * r + k))
        np.matmul(Z, self.bounds_w, out=both)
        proj, dist = both[:, : k * r], both[:, k * r :]
        np.square(proj, out=proj)
        upper = ws.get("upper", (m, k))
        np.matmul(proj, self.gap_w, out=upper)  # sum_j (lam_r - lam_j) p_j^2
        x_sq = ws.get("x_sq", (m, 1))
        np.einsum("rd,rd->r", Z[:, 1:], Z[:, 1:], out=x_sq[:, 0])
        x_sq *= 1.0 - self.slack
        dist += x_sq  # |x - mu_k|^2 less the slack, (m, K)
        # maha >= lam_r (|delta|^2 - slack) - sum_j gap_j p_j^2; the slack (1e-10 of
        # |x|^2 + |mu|^2) is orders above what the expansion and projections lose
        dist *= self.lam_r
        np.subtract(dist, upper, out=upper)
        np.maximum(upper, 0.0, out=upper)
        upper *= -0.5
        upper += self.const[:, 0]  # upper bounds of log p, (m, K)
        best = np.argmax(upper, axis=1)
        # a first count against the largest upper bound (above the exact best, so fewer
        # pairs pass than will): when even these are too many, go dense at once
        keep = ws.get("keep", (m, k), dtype=np.bool_)
        optimistic = np.take_along_axis(upper, best[:, None], axis=1)
        optimistic += FLUSH_LOG_RATIO - PRUNE_SLACK_NATS
        np.greater_equal(upper, optimistic, out=keep)
        if np.count_nonzero(keep) > PRUNE_MAX_SHARE * k * m:
            return False
        L.fill(-np.inf)
        for j in range(k):
            self.exact(Z, L, j, np.flatnonzero(best == j))
        floor = L[best, np.arange(m)]
        floor += FLUSH_LOG_RATIO - PRUNE_SLACK_NATS
        np.greater_equal(upper, floor[:, None], out=keep)
        keep[np.arange(m), best] = False
        kept = np.count_nonzero(keep, axis=0)
        if kept.sum() + m > PRUNE_MAX_SHARE * k * m:
            return False
        for j in range(k):
            if kept[j]:
                self.exact(Z, L, j, np.flatnonzero(keep[:, j]))
        return True

    def exact(self, Z: np.ndarray, L: np.ndarray, j: int, rows: np.ndarray) -> None:
        """L[j, rows] = log pi_j + log N(x_rows | mu_j, Sigma_j), on the gathered rows."""
        if not rows.size:
            return
        ws = self.ws
        Zg = _gather_rows(Z, rows, ws)
        Y = ws.get("Y_gathered", (rows.size, self.n_features))
        np.matmul(Zg, self.W_k[j], out=Y)
        maha = ws.get("maha_gathered", (rows.size,))
        np.einsum("rd,rd->r", Y, Y, out=maha)
        maha *= -0.5
        maha += self.const[j, 0]
        L[j, rows] = maha


class _LogProb:
    """Per-chunk constants of the E-step: the parameters re-expressed around ``ref``.

    ``__call__(Z)`` returns log pi_k + log N(x_i | mu_k, Sigma_k) as a (K, m) array;
    the subclasses hold each kernel's layout.
    """

    pruner: _PrunedLogProb | None = None

    def __init__(self, params: GMMParams, ref: np.ndarray, rows: int, ws: _Workspace,
                 prune: bool = False):
        """``prune``: prepare a ``_PrunedLogProb`` (for the statistics only)."""
        k, d = params.means.shape
        self.n_components, self.n_features = k, d
        with np.errstate(divide="ignore"):
            log_weights = np.log(params.weights)
        const = -0.5 * d * LOG_2PI + params.log_det_cholesky() + log_weights
        self.const = np.ascontiguousarray(np.broadcast_to(const, (k,)))[:, None]
        self.ws = ws
        self.dense_rows = rows
        # means relative to the chunk's centre, (K, d)
        if ws.dtype != np.float64:
            self.const = self.const.astype(ws.dtype)
        self._setup(params, params.means - ref, params.precisions_cholesky, const, prune)

    def __call__(self, Z: np.ndarray, prune: bool = False) -> np.ndarray:
        """Weighted log-probabilities of the block's rows, a (K, m) view of the workspace.

        ``prune`` (statistics only): pairs that the pruner proves to lie below
        FLUSH_LOG_RATIO of their row's largest are -inf instead of their value;
        ``self.pruned`` says whether this block was pruned.
        """
        self.pruned = False
        return self._dense(Z)


class _FullLogProb(_LogProb):
    """y_k = (x - mu_k) @ U_k for all k in one GEMM: [1 | Xc] @ [[-b], [U_1 ... U_K]]."""

    def _setup(self, params, means_c, prec_chol, const, prune):
        k, d = self.n_components, self.n_features
        b = np.einsum("ki,kij->kj", means_c, prec_chol)  # (K, d)
        h = d // 2
        triangular = not np.any(prec_chol[:, h:, :h])
        self.split = d >= max(2, TRIANGULAR_MIN_FEATURES) and triangular
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
        if prune and d >= PRUNE_MIN_FEATURES and k > 1:
            self.pruner = _PrunedLogProb(params, means_c, b, self.const, self.ws)

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


class _TiedLogProb(_LogProb):
    """log p_k = c_k - |b_k|^2 / 2 + b_k . y - |y|^2 / 2 with y = Xc @ U."""

    def _setup(self, params, means_c, prec_chol, const, prune):
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


class _DiagLogProb(_LogProb):
    """log p_k = c_k - 1/2 sum_j P_kj (x_j - m_kj)^2, expanded in x_j and x_j^2."""

    def _setup(self, params, means_c, prec_chol, const, prune):
        k, d = self.n_components, self.n_features
        prec = params.family.diagonal_precisions(prec_chol, d)  # (K, d)
        W = np.empty((k, 2 * d + 1))
        W[:, :d] = means_c * prec
        W[:, d : 2 * d] = -0.5 * prec
        W[:, 2 * d] = const - 0.5 * (means_c**2 * prec).sum(axis=1)
        self.W = W.astype(self.ws.dtype, copy=False)

    def _dense(self, Z: np.ndarray) -> np.ndarray:
        L = self.ws.get("L_dense", (self.n_components, Z.shape[0]))
        np.matmul(self.W, Z.T, out=L)
        return L


def _log_resp_inplace(L: np.ndarray, ws: _Workspace, flush: bool = False) -> np.ndarray:
    """Turn (K, m) weighted log-probabilities into responsibilities in place.

    Returns log p(x_i) (m,), a workspace view. Rows where every component has probability
    zero give log p = -inf (and NaN responsibilities), as before any max is subtracted.
    ``flush``: responsibilities below exp(FLUSH_LOG_RATIO) times the row's largest become
    exactly 0 (for the statistics only, see ``FLUSH_LOG_RATIO``).
    """
    m = L.shape[1]
    top = np.max(L, axis=0, out=ws.get("top", (m,)))
    if not _all_finite(top):
        top[~np.isfinite(top)] = 0.0
    L -= top
    if flush:
        tiny = ws.get("tiny", L.shape, dtype=np.bool_)
        np.less(L, FLUSH_LOG_RATIO, out=tiny)
        np.copyto(L, -np.inf, where=tiny)
    np.exp(L, out=L)
    total = np.sum(L, axis=0, out=ws.get("total", (m,)))
    with np.errstate(divide="ignore", invalid="ignore"):
        L /= total
        np.log(total, out=total)
    total += top
    return total


class _Moments:
    """Accumulates a chunk's weighted moments about ``ref``; ``finish`` moves them to c_k.

    ``add(Z, R, w)`` takes a block from the kernel's ``_Design`` and R (K, m), the
    responsibilities times the row weights; ``finish(shift_c)`` returns (N_k, S1, S2)
    about the shift, S2 in the kernel's unpacked form (the family packs it).
    """

    def __init__(self, n_components: int, n_features: int, ws: _Workspace,
                 dense_rows: int | None = None):
        #: rows per sub-block of the dense per-component scatter
        self.dense_rows = dense_rows or block_rows(n_components, n_features)
        self.n_components, self.n_features = n_components, n_features
        self.ws = ws
        self._allocate(n_components, n_features)


class _FullMoments(_Moments):
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
        _acc_product(self.G, B.reshape(k * d, m), Z, self.ws)
        self.N += _row_sums(R)

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


class _FullSyrkMoments(_FullMoments):
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
                Zg = _gather_rows(Z, rows, self.ws)
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
        _acc_product(self.SN, R, Z, self.ws)

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


class _TiedMoments(_Moments):
    """G (d, d) = sum_i w_i x_i x_i^T (responsibilities do not enter), S (K, d), N (K)."""

    def _allocate(self, k, d):
        self.G = np.zeros((d, d))
        self.S = np.zeros((k, d))
        self.N = np.zeros(k)

    def add(self, Z, R, w):
        if w is None:
            _acc_product(self.G, Z.T, Z, self.ws)
        else:
            WZ = self.ws.get("WZ", (Z.shape[0], self.n_features))
            np.multiply(Z, w[:, None], out=WZ)
            _acc_product(self.G, Z.T, WZ, self.ws)
        _acc_product(self.S, R, Z, self.ws)
        self.N += _row_sums(R)

    def finish(self, shift_c):
        nk, s = self.N, self.S
        s1 = s - nk[:, None] * shift_c
        cs = shift_c.T @ s
        s2 = self.G - cs - cs.T + (shift_c.T * nk) @ shift_c
        return nk, s1, s2


class _DiagMoments(_Moments):
    """M (K, 2d+1) = [sum r x | sum r x^2 | sum r]."""

    def _allocate(self, k, d):
        self.M = np.zeros((k, 2 * d + 1))

    def add(self, Z, R, w):
        _acc_product(self.M, R, Z, self.ws)

    def finish(self, shift_c):
        d = self.n_features
        s, sq, nk = self.M[:, :d], self.M[:, d : 2 * d], self.M[:, 2 * d].copy()
        s1 = s - nk[:, None] * shift_c
        s2 = sq - 2.0 * shift_c * s + nk[:, None] * shift_c**2
        return nk, s1, s2


class _Kernel:
    """The per-chunk parts of one kernel kind (``CovarianceFamily.kernel``)."""

    def __init__(self, design, log_prob, moments, syrk_moments=None):
        self.design, self.log_prob = design, log_prob
        self._moments, self._syrk_moments = moments, syrk_moments

    def moments(self, n_components, n_features, ws, dense_rows=None) -> _Moments:
        syrk = self._syrk_moments is not None and n_features >= TRIANGULAR_MIN_FEATURES
        cls = self._syrk_moments if syrk else self._moments
        return cls(n_components, n_features, ws, dense_rows)


KERNELS = {
    "triangular": _Kernel(_FullDesign, _FullLogProb, _FullMoments, _FullSyrkMoments),
    "shared": _Kernel(_TiedDesign, _TiedLogProb, _TiedMoments),
    "diagonal": _Kernel(_DiagDesign, _DiagLogProb, _DiagMoments),
}


def _kernel(covariance_type: str) -> _Kernel:
    return KERNELS[family(covariance_type).kernel]


def _as_float(X) -> np.ndarray:
    """The chunk as a float array (float32 stays float32; blocks are promoted one by one)."""
    X = np.asarray(X)
    return X if X.dtype.kind == "f" else X.astype(np.float64)


def compute_dtype(X: np.ndarray) -> np.dtype:
    """The E-step's compute type for a chunk: float32 for float32 data, else float64.

    The statistics are summed in float64 either way (about the chunk's centre); float32
    only shortens the E-step's products and elementwise passes.
    """
    return np.dtype(np.float32) if X.dtype == np.float32 else np.dtype(np.float64)


def _chunk_ref(X: np.ndarray) -> np.ndarray:
    """The chunk's column means in float64: the centre every block is expanded about."""
    if not X.shape[0]:
        return np.zeros(X.shape[1])
    if X.dtype == np.float64:
        return (np.ones(X.shape[0]) @ X) / X.shape[0]
    return X.mean(axis=0, dtype=np.float64)


@single_blas_thread()
def chunk_stats(
    X: np.ndarray,
    params: GMMParams,
    sample_weight: np.ndarray | None = None,
    row_offset: int = 0,
    nonfinite: str = "drop",
) -> SuffStats:
    """E-step on one chunk: its sufficient statistics under ``params`` (shift = means).

    X: (n_samples, n_features) float; sample_weight: (n_samples,) or None for ones;
    row_offset: global index of the chunk's first row (to report non-finite rows).
    Rows with NaN or inf are skipped and counted; with ``nonfinite='marginalize'`` NaN
    entries are missing values (``dgmm.core.missing``) and inf is a ``DataError``. float32
    chunks run the E-step in float32 (``compute_dtype``); the statistics are summed in
    float64.
    """
    X = _as_float(X)
    gaps = None
    if nonfinite == "marginalize":
        X, sample_weight, gaps = missing.split_gaps(X, sample_weight, row_offset)
    X, sample_weight, n_bad, first_bad = split_finite(X, sample_weight, row_offset)
    k, d = params.means.shape
    kernel = _kernel(params.covariance_type)
    ref = _chunk_ref(X)
    dense_step = min(block_rows(k, d), max(1, X.shape[0]))
    ws = _Workspace(compute_dtype(X))
    log_prob = kernel.log_prob(params, ref, dense_step, ws, prune=True)
    prune = log_prob.pruner is not None
    step = min(dense_step * PRUNE_BLOCK_FACTOR, max(1, X.shape[0])) if prune else dense_step
    design = kernel.design(ref, step, ws)
    moments = kernel.moments(k, d, ws, dense_step)
    loglik = 0.0
    # a block that could not be pruned makes the next ones dense without trying (their
    # bounds would be wasted): 1, 2, 4, ... up to 32 pruning blocks' worth, reset on success
    start, backoff, dense_left = 0, 1, 0
    while start < X.shape[0]:
        attempt = prune and dense_left == 0
        stop = start + (step if attempt else dense_step)
        Z = design.build(X[start:stop])
        w = None if sample_weight is None else sample_weight[start:stop]
        start = stop
        R = log_prob(Z, prune=attempt)
        if attempt and log_prob.pruned:
            backoff = 1
        elif attempt:
            dense_left = backoff * PRUNE_BLOCK_FACTOR
            backoff = min(2 * backoff, 32)
        elif prune:
            dense_left -= 1
        log_norm = _log_resp_inplace(R, ws, flush=True)
        if w is None:
            loglik += float(log_norm.sum(dtype=np.float64))
        else:
            loglik += float(w @ log_norm)
            R *= w
        moments.add(Z, R, w)
    nk, s1, s2 = moments.finish(params.means - ref)
    n = float(X.shape[0]) if sample_weight is None else float(sample_weight.sum())
    stats = SuffStats(
        covariance_type=params.covariance_type,
        shift=params.means,
        n=n,
        loglik=loglik,
        nk=nk,
        s1=s1,
        s2=params.family.pack_s2(s2),
        n_rows=int(X.shape[0]),
        n_nonfinite=n_bad,
        first_nonfinite=first_bad,
    )
    return stats if gaps is None else stats.merge(missing.gap_stats(gaps, params))


def _stats_from_blocks(X, resp_block, shift, covariance_type, sample_weight):
    """Statistics about ``shift`` for responsibilities given per block by
    ``resp_block(start, stop, out)``, which fills ``out`` (K, m) and returns it."""
    X = _as_float(X)
    k, d = shift.shape
    ref = _chunk_ref(X)
    step = min(block_rows(k, d), max(1, X.shape[0]))
    ws = _Workspace()
    kernel = _kernel(covariance_type)
    design = kernel.design(ref, step, ws)
    moments = kernel.moments(k, d, ws)
    for start in range(0, X.shape[0], step):
        stop = min(start + step, X.shape[0])
        Z = design.build(X[start:stop])
        R = resp_block(start, stop, ws.get("L", (k, stop - start)))
        w = None if sample_weight is None else sample_weight[start:stop]
        if w is not None:
            R *= w
        moments.add(Z, R, w)
    nk, s1, s2 = moments.finish(np.asarray(shift, dtype=np.float64) - ref)
    n = float(X.shape[0]) if sample_weight is None else float(sample_weight.sum())
    return SuffStats(covariance_type, shift, n, 0.0, nk, s1, family(covariance_type).pack_s2(s2),
                     n_rows=int(X.shape[0]))


@single_blas_thread()
def chunk_stats_from_labels(
    X: np.ndarray,
    labels: np.ndarray,
    shift: np.ndarray,
    covariance_type: str,
    sample_weight: np.ndarray | None = None,
) -> SuffStats:
    """Statistics for hard assignments (one-hot responsibilities), about ``shift`` (K, d).

    ``X`` must hold finite rows only; ``labels`` (n_samples,) int in [0, K).
    ``loglik`` is 0: no likelihood is defined before the first parameters exist.
    """
    labels = np.asarray(labels)

    def one_hot(start, stop, out):
        out.fill(0.0)
        out[labels[start:stop], np.arange(stop - start)] = 1.0
        return out

    return _stats_from_blocks(X, one_hot, shift, covariance_type, sample_weight)


@single_blas_thread()
def chunk_stats_from_resp(
    X: np.ndarray,
    resp: np.ndarray,
    shift: np.ndarray,
    covariance_type: str,
    sample_weight: np.ndarray | None = None,
) -> SuffStats:
    """Statistics for given soft responsibilities ``resp`` (n_samples, K), about ``shift``."""

    def given(start, stop, out):
        np.copyto(out, resp[start:stop].T)
        return out

    return _stats_from_blocks(X, given, shift, covariance_type, sample_weight)


def _per_block(X: np.ndarray, params: GMMParams, fill) -> None:
    """Run the E-step block by block; ``fill(start, stop, L, ws)`` consumes each (K, m)."""
    X = _as_float(X)
    ref = _chunk_ref(X)
    step = min(block_rows(params.n_components, params.n_features), max(1, X.shape[0]))
    ws = _Workspace()
    kernel = _kernel(params.covariance_type)
    design = kernel.design(ref, step, ws)
    log_prob = kernel.log_prob(params, ref, step, ws)
    for start in range(0, X.shape[0], step):
        block = X[start : start + step]
        fill(start, start + block.shape[0], log_prob(design.build(block)), ws)


@single_blas_thread()
def estimate_weighted_log_prob(X: np.ndarray, params: GMMParams) -> np.ndarray:
    """log pi_k + log N(x_i | mu_k, Sigma_k), shape (n_samples, K). Rows must be finite."""
    out = np.empty((np.shape(X)[0], params.n_components))

    def fill(start, stop, L, ws):
        out[start:stop] = L.T

    _per_block(X, params, fill)
    return out


@single_blas_thread()
def log_prob_resp(X: np.ndarray, params: GMMParams):
    """(log p(x_i) of shape (n_samples,), responsibilities of shape (n_samples, K))."""
    n = np.shape(X)[0]
    log_norm = np.empty(n)
    resp = np.empty((n, params.n_components))

    def fill(start, stop, L, ws):
        log_norm[start:stop] = _log_resp_inplace(L, ws)
        resp[start:stop] = L.T

    _per_block(X, params, fill)
    return log_norm, resp


@single_blas_thread()
def score_samples(X: np.ndarray, params: GMMParams) -> np.ndarray:
    """Per-row log-likelihood log p(x_i), shape (n_samples,)."""
    n = np.shape(X)[0]
    log_norm = np.empty(n)

    def fill(start, stop, L, ws):
        log_norm[start:stop] = _log_resp_inplace(L, ws)

    _per_block(X, params, fill)
    return log_norm


def predict_proba(X: np.ndarray, params: GMMParams) -> np.ndarray:
    """Responsibilities, shape (n_samples, K); rows sum to 1 (``log_prob_resp`` holds
    the one-thread BLAS region)."""
    return log_prob_resp(X, params)[1]


@single_blas_thread()
def predict(X: np.ndarray, params: GMMParams) -> np.ndarray:
    """Most probable component per row, shape (n_samples,), int64."""
    out = np.empty(np.shape(X)[0], dtype=np.int64)

    def fill(start, stop, L, ws):
        np.argmax(L, axis=0, out=out[start:stop])

    _per_block(X, params, fill)
    return out
