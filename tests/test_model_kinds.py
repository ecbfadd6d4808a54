"""The seam for model kinds: a kind the package does not have, plugged into the engine.

``EqualWeights`` is a test double: a Gaussian mixture whose E-step gives every component
the weight 1/K whatever the M-step estimated. It answers the four questions of
``dgmm.core.model_kinds`` with its own E-step terms, and the engine (pass, tree, loop,
lockstep restarts, grids, checkpoints) fits it without knowing it, to the numbers of an
equal-weight EM written out here with SciPy.
"""
import math
from dataclasses import dataclass

import numpy as np
from helpers import make_blobs
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from dgmm.core.model_kinds import MaximumLikelihood
from dgmm.core.mstep import m_step
from dgmm.core.params import GMMParams
from dgmm.core.terms import GaussianTerms
from dgmm.engine import em
from dgmm.engine import passes as engine
from dgmm.engine.iteration import fit_one


@dataclass(frozen=True)
class EqualWeights:
    covariance_type: str = "full"
    reg_covar: float = 1e-6
    name: str = "equal_weights"

    def estep_terms(self, params):
        k = params.n_components
        return GaussianTerms(params.means, params.precisions_cholesky,
                             np.full(k, -math.log(k)), params.log_det_cholesky(),
                             params.covariance_type)

    def m_step(self, stats, previous):
        return m_step(stats, self.reg_covar, previous=previous)

    def objective(self, stats, previous, params):
        return stats.loglik / stats.n

    def initial_params(self, start):
        return start

    def params_from_arrays(self, arrays):
        return GMMParams(**arrays, covariance_type=self.covariance_type)


def equal_weight_em(X, means, covariances, n_iter, reg_covar):
    """EM with the weights held at 1/K, from scipy's densities; (means, covariances,
    mean log-likelihood per iteration)."""
    k, d = means.shape
    history = []
    for _ in range(n_iter):
        log_p = np.column_stack([multivariate_normal(means[j], covariances[j]).logpdf(X)
                                 for j in range(k)]) - math.log(k)
        log_norm = logsumexp(log_p, axis=1)
        resp = np.exp(log_p - log_norm[:, None])
        history.append(log_norm.mean())
        nk = resp.sum(axis=0)
        means = resp.T @ X / nk[:, None]
        covariances = np.stack([
            (resp[:, j, None] * (X - means[j])).T @ (X - means[j]) / nk[j]
            + reg_covar * np.eye(d) for j in range(k)])
    return means, covariances, history


def start_params(X, k, seed):
    rng = np.random.default_rng(seed)
    means = X[rng.choice(X.shape[0], k, replace=False)]
    weights = rng.dirichlet(np.ones(k))  # not 1/K: the E-step must ignore them
    return GMMParams.from_covariances(weights, means, np.stack([np.cov(X.T)] * k), "full")


def test_the_engine_fits_a_kind_it_does_not_know():
    X = make_blobs(600, 3, 3, seed=60, offset=50.0)
    data = engine.prepare(X, chunk_rows=64)
    start = start_params(X, 3, 0)
    settings = em.EMSettings(3, "full", tol=0.0, max_iter=12)
    state = fit_one(data, settings, start, kind=EqualWeights())
    means, covariances, history = equal_weight_em(X, start.means, start.covariances, 12, 1e-6)
    np.testing.assert_allclose(state.params.means, means, rtol=1e-9)
    np.testing.assert_allclose(state.params.covariances, covariances, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(state.history, history, rtol=1e-11)
    # the kind made a difference: maximum likelihood goes elsewhere from the same start
    ml = fit_one(data, settings, start)
    assert not np.allclose(ml.params.means, state.params.means, rtol=1e-6)


def test_lockstep_grids_and_resume_carry_the_kind_unchanged():
    X = make_blobs(500, 2, 3, seed=61)
    data = engine.prepare(X, chunk_rows=80)
    settings = em.EMSettings(3, "full", tol=1e-8, max_iter=40, n_init=2)
    fixed = [start_params(X, 3, seed) for seed in (1, 2)]
    infos = []
    result = em.fit_em(data, settings, seed=0, kind=EqualWeights(),
                       fixed_init=lambda data, index: fixed[index], callback=infos.append)
    alone = [fit_one(data, settings, p, kind=EqualWeights()) for p in fixed]
    for restart, single in zip(result.final_state.restarts, alone, strict=True):
        np.testing.assert_array_equal(restart.params.means, single.params.means)
        assert restart.history == single.history
    # in a grid beside a maximum-likelihood model, each is what it is alone
    specs = [em.ModelSpec(settings, 0, lambda data, index: fixed[index], kind=EqualWeights()),
             em.ModelSpec(settings, 0, lambda data, index: fixed[index])]
    (weighted, ml), _ = em.fit_models(data, specs)
    np.testing.assert_array_equal(weighted.fit.params.covariances, result.params.covariances)
    for restart in ml.fit.final_state.restarts:
        single = fit_one(data, settings, fixed[restart.index])
        np.testing.assert_array_equal(restart.params.means, single.params.means)
        assert restart.history == single.history
    # resumed from a checkpoint record in mid-fit: the same numbers
    arrays, meta = infos[len(infos) // 2].state.to_record()
    state = em.EMState.from_record(arrays, meta, kind=EqualWeights())
    resumed = em.fit_em(data, settings, seed=0, kind=EqualWeights(), resume=state,
                        fixed_init=lambda data, index: fixed[index])
    np.testing.assert_array_equal(resumed.params.means, result.params.means)
    assert resumed.history == result.history


def test_maximum_likelihood_terms_are_the_parameters():
    X = make_blobs(200, 3, 2, seed=62)
    params = GMMParams.from_covariances(
        np.array([0.0, 1.0]), X[:2], np.stack([np.cov(X.T)] * 2), "full")
    kind = MaximumLikelihood("full")
    terms = kind.estep_terms(params)
    assert terms.log_weights[0] == -np.inf and terms.log_weights[1] == 0.0
    np.testing.assert_array_equal(terms.log_det, params.log_det_cholesky())
    assert kind.params_from_arrays(params.to_arrays()).allclose(params)
