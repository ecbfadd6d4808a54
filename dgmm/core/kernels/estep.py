"""The E-step of one chunk: its sufficient statistics under given E-step terms, or for
given labels or responsibilities."""
from __future__ import annotations

import numpy as np

from ..families import family
from ..stats import SuffStats
from ..threads import single_blas_thread
from . import missing
from .blas import Workspace, as_float, block_rows, chunk_ref, compute_dtype
from .kinds import kernel_of
from .pruning import PRUNE_BLOCK_FACTOR
from .responsibilities import log_resp_inplace, split_finite


@single_blas_thread()
def chunk_stats(
    X: np.ndarray,
    model,
    sample_weight: np.ndarray | None = None,
    row_offset: int = 0,
    nonfinite=None,
    workspace: Workspace | None = None,
) -> SuffStats:
    """E-step on one chunk: its sufficient statistics under ``model`` (shift = means).

    X: (n_samples, n_features) float; model: ``GaussianTerms``, or parameters that give
    them (``model.gaussian_terms()``, e.g. ``GMMParams``); sample_weight: (n_samples,) or
    None for ones; row_offset: global index of the chunk's first row (to report
    non-finite rows); nonfinite: the non-finite policy's rule (``dgmm.core.nonfinite``),
    or None for 'drop'. Rows with NaN or inf are skipped and counted; with the
    'marginalize' rule NaN entries are missing values (``dgmm.core.kernels.missing``) and
    inf is a ``DataError``. float32 chunks run the E-step in float32 (``compute_dtype``);
    the statistics are summed in float64. workspace: work arrays to reuse (a caller
    running many small E-steps, such as the steps of stepwise EM, passes one
    ``Workspace`` of ``compute_dtype(X)`` to all of them so that no step allocates), or
    None for new ones.
    """
    terms = model.gaussian_terms()
    X = as_float(X)
    gaps = None
    if nonfinite is not None:
        X, sample_weight, gaps = nonfinite.split_missing(X, sample_weight, row_offset)
    X, sample_weight, n_bad, first_bad = split_finite(X, sample_weight, row_offset)
    k, d = terms.means.shape
    kernel = kernel_of(terms.covariance_type)
    ref = chunk_ref(X)
    dense_step = min(block_rows(k, d), max(1, X.shape[0]))
    ws = Workspace(compute_dtype(X)) if workspace is None else workspace
    log_prob = kernel.log_prob(terms, ref, dense_step, ws, prune=True)
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
        log_norm = log_resp_inplace(R, ws, flush=True)
        if w is None:
            loglik += float(log_norm.sum(dtype=np.float64))
        else:
            loglik += float(w @ log_norm)
            R *= w
        moments.add(Z, R, w)
    nk, s1, s2 = moments.finish(terms.means - ref)
    n = float(X.shape[0]) if sample_weight is None else float(sample_weight.sum())
    stats = SuffStats(
        covariance_type=terms.covariance_type,
        shift=terms.means,
        n=n,
        loglik=loglik,
        nk=nk,
        s1=s1,
        s2=terms.family.pack_s2(s2),
        n_rows=int(X.shape[0]),
        n_nonfinite=n_bad,
        first_nonfinite=first_bad,
    )
    return stats if gaps is None else stats.merge(missing.gap_stats(gaps, terms))


def _stats_from_blocks(X, resp_block, shift, covariance_type, sample_weight):
    """Statistics about ``shift`` for responsibilities given per block by
    ``resp_block(start, stop, out)``, which fills ``out`` (K, m) and returns it."""
    X = as_float(X)
    k, d = shift.shape
    ref = chunk_ref(X)
    step = min(block_rows(k, d), max(1, X.shape[0]))
    ws = Workspace()
    kernel = kernel_of(covariance_type)
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
