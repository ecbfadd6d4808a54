"""Per-row outputs of a fitted model on complete rows: log-probabilities, scores,
responsibilities and labels.

``model`` is the fitted parameters, or anything else that gives the E-step's terms
(``model.gaussian_terms()``, see ``dgmm.core.terms``); K = ``model.n_components``."""
from __future__ import annotations

import numpy as np

from ..threads import single_blas_thread
from .blas import Workspace, as_float, block_rows, chunk_ref
from .kinds import kernel_of
from .responsibilities import log_resp_inplace


def _per_block(X: np.ndarray, model, fill) -> None:
    """Run the E-step block by block; ``fill(start, stop, L, ws)`` consumes each (K, m)."""
    terms = model.gaussian_terms()
    X = as_float(X)
    ref = chunk_ref(X)
    step = min(block_rows(terms.n_components, terms.n_features), max(1, X.shape[0]))
    ws = Workspace()
    kernel = kernel_of(terms.covariance_type)
    design = kernel.design(ref, step, ws)
    log_prob = kernel.log_prob(terms, ref, step, ws)
    for start in range(0, X.shape[0], step):
        block = X[start : start + step]
        fill(start, start + block.shape[0], log_prob(design.build(block)), ws)


@single_blas_thread()
def estimate_weighted_log_prob(X: np.ndarray, model) -> np.ndarray:
    """log pi_k + log N(x_i | mu_k, Sigma_k), shape (n_samples, K). Rows must be finite."""
    out = np.empty((np.shape(X)[0], model.n_components))

    def fill(start, stop, L, ws):
        out[start:stop] = L.T

    _per_block(X, model, fill)
    return out


@single_blas_thread()
def log_prob_resp(X: np.ndarray, model):
    """(log p(x_i) of shape (n_samples,), responsibilities of shape (n_samples, K))."""
    n = np.shape(X)[0]
    log_norm = np.empty(n)
    resp = np.empty((n, model.n_components))

    def fill(start, stop, L, ws):
        log_norm[start:stop] = log_resp_inplace(L, ws)
        resp[start:stop] = L.T

    _per_block(X, model, fill)
    return log_norm, resp


@single_blas_thread()
def score_samples(X: np.ndarray, model) -> np.ndarray:
    """Per-row log-likelihood log p(x_i), shape (n_samples,)."""
    n = np.shape(X)[0]
    log_norm = np.empty(n)

    def fill(start, stop, L, ws):
        log_norm[start:stop] = log_resp_inplace(L, ws)

    _per_block(X, model, fill)
    return log_norm


def predict_proba(X: np.ndarray, model) -> np.ndarray:
    """Responsibilities, shape (n_samples, K); rows sum to 1 (``log_prob_resp`` holds
    the one-thread BLAS region)."""
    return log_prob_resp(X, model)[1]


@single_blas_thread()
def predict(X: np.ndarray, model) -> np.ndarray:
    """Most probable component per row, shape (n_samples,), int64."""
    out = np.empty(np.shape(X)[0], dtype=np.int64)

    def fill(start, stop, L, ws):
        np.argmax(L, axis=0, out=out[start:stop])

    _per_block(X, model, fill)
    return out
