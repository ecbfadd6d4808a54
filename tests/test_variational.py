"""The variational Bayesian core against scikit-learn's BayesianGaussianMixture, from the
same responsibilities: priors, the update, the E-step terms, the lower bound (whole fits
through the engine: tests/test_bayesian.py)."""
import numpy as np
import pytest
from helpers import COVARIANCE_TYPES, make_blobs
from sklearn.mixture import BayesianGaussianMixture

from dgmm.core import kernels
from dgmm.core import variational as vb
from dgmm.core.families import family
from dgmm.core.nonfinite import nonfinite_rule
from dgmm.core.params import GMMParams
from dgmm.errors import ConfigError

PRIOR_TYPES = vb.WEIGHT_PRIOR_TYPES
RTOL = 1e-10


def _assert_close(ours, theirs, rtol=RTOL):
    theirs = np.asarray(theirs, dtype=np.float64)
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * np.abs(theirs).max())


def _assert_posterior(vp, sk, rtol=RTOL):
    _assert_close(vp.weight_concentration, np.array(sk.weight_concentration_), rtol)
    for name in ("mean_precision", "means", "degrees_of_freedom", "covariances",
                 "precisions_cholesky"):
        _assert_close(getattr(vp, name), getattr(sk, name + "_"), rtol)


def _prior(X, covariance_type, n_components, **given):
    """The prior resolved from the moments of X, merged from two parts."""
    head = vb.data_moments_chunk(X[:100], None, 0, covariance_type)
    moments = head.merge(vb.data_moments_chunk(X[100:], None, 100, covariance_type))
    return vb.resolve_prior(covariance_type, n_components, moments.mean,
                            moments.covariance(), **given)


def _data(n=300, k=4, seed=2):
    X = make_blobs(n, 3, 3, seed=seed)
    resp = np.random.default_rng(seed).dirichlet(np.ones(k), size=n)
    return X, resp


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_update_estep_and_bound_match_scikit_learn(covariance_type, prior_type):
    X, resp = _data()
    k = resp.shape[1]
    sk = BayesianGaussianMixture(n_components=k, covariance_type=covariance_type,
                                 weight_concentration_prior_type=prior_type)
    sk._check_parameters(X)
    sk._initialize(X, resp)
    prior = _prior(X, covariance_type, k, weight_concentration_prior_type=prior_type)
    _assert_close(prior.mean, sk.mean_prior_)
    _assert_close(prior.covariance, sk.covariance_prior_)
    assert prior.degrees_of_freedom == sk.degrees_of_freedom_prior_
    assert prior.weight_concentration == sk.weight_concentration_prior_ == 1 / k
    # any shift of the statistics gives the same posterior
    stats = kernels.chunk_stats_from_resp(X, resp, X[:k] + 0.1, covariance_type)
    vp = vb.variational_update(stats, prior, 1e-6)
    _assert_posterior(vp, sk)
    sk._set_parameters(sk._get_parameters())  # scikit-learn's weights_ and precisions_
    _assert_close(vb.expected_weights(vp), sk.weights_)
    # E-step: the Gaussian term with precision nu W plus the per-component constant
    estep = vp
    _assert_close(kernels.estimate_weighted_log_prob(X, estep),
                  sk._estimate_weighted_log_prob(X))
    _assert_close(kernels.score_samples(X, estep), sk.score_samples(X))
    # one iteration: the bound from the statistics equals scikit-learn's from log_resp
    log_prob_norm, log_resp = sk._e_step(X)
    sk._m_step(X, log_resp)
    stats = kernels.chunk_stats(X, estep)
    new = vb.variational_update(stats, prior, 1e-6)
    _assert_posterior(new, sk)
    bound = vb.lower_bound(new, vb.responsibility_entropy(stats, vp))
    assert bound == pytest.approx(float(np.squeeze(sk._compute_lower_bound(log_resp,
                                                                           log_prob_norm))),
                                  rel=RTOL)


def _moments(X, resp, covariance_type):
    """(nk, means, covariances + reg_covar) of responsibilities, via EM's statistics."""
    from dgmm.core.mstep import m_step

    stats = kernels.chunk_stats_from_resp(X, resp, np.zeros((resp.shape[1], X.shape[1])),
                                          covariance_type)
    params = m_step(stats, 1e-6).params
    return stats.nk + 10 * np.finfo(float).eps, params.means, params.covariances


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_given_priors_are_used_and_checked(covariance_type):
    X, resp = _data()
    d = X.shape[1]
    covariance_prior = {"full": np.eye(d) * 2, "tied": np.eye(d) * 2,
                        "diag": np.full(d, 2.0), "spherical": 2.0}[covariance_type]
    given = dict(mean_prior=np.ones(d), covariance_prior=covariance_prior,
                 degrees_of_freedom_prior=d + 0.5, mean_precision_prior=3.0,
                 weight_concentration_prior=0.2)
    sk = BayesianGaussianMixture(n_components=4, covariance_type=covariance_type, **given)
    sk._check_parameters(X)
    sk._initialize(X, resp)
    prior = _prior(X, covariance_type, 4, **given)
    stats = kernels.chunk_stats_from_resp(X, resp, np.zeros((4, d)), covariance_type)
    _assert_posterior(vb.variational_update(stats, prior, 1e-6), sk)
    with pytest.raises(ConfigError, match="degrees_of_freedom_prior must be greater than"):
        _prior(X, covariance_type, 4, degrees_of_freedom_prior=d - 1.0)
    with pytest.raises(ConfigError, match=r"mean_prior must have shape \(3,\)"):
        _prior(X, covariance_type, 4, mean_prior=np.ones(2))
    with pytest.raises(ConfigError, match="covariance_prior for covariance_type"):
        _prior(X, covariance_type, 4, covariance_prior=np.ones(7))
    with pytest.raises(ConfigError, match="covariance_prior is unusable"):
        _prior(X, covariance_type, 4, covariance_prior=-np.asarray(covariance_prior))
    with pytest.raises(ConfigError, match="weight_concentration_prior_type must be one of"):
        _prior(X, covariance_type, 4, weight_concentration_prior_type="dirichlet")


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_data_moments_count_row_weights_as_repeated_rows(covariance_type):
    X, resp = _data(n=120, k=3)
    X = X + 1e6  # far from the origin: the pairwise merge keeps the digits
    counts = np.random.default_rng(3).integers(0, 4, size=X.shape[0])
    repeated = np.repeat(X, counts, axis=0)
    weighted = vb.data_moments_chunk(X[:50], counts[:50].astype(float), 0, covariance_type)
    weighted = weighted.merge(vb.data_moments_chunk(X[50:], counts[50:].astype(float), 50,
                                                    covariance_type))
    plain = vb.data_moments_chunk(repeated, None, 0, covariance_type)
    _assert_close(weighted.mean, plain.mean, 1e-14)
    _assert_close(weighted.covariance(), plain.covariance(), 1e-9)
    covariance = np.cov(repeated.T)
    expected = _prior(repeated, covariance_type, 1).covariance
    _assert_close(expected, family(covariance_type).from_full(covariance[None])
                  .reshape(np.shape(expected)), 1e-9)
    bad = X[:10].copy()
    bad[[3, 7], 1] = np.nan
    moments = vb.data_moments_chunk(bad, None, 20, covariance_type)
    assert (moments.n_rows, moments.n_nonfinite, moments.first_nonfinite) == (8, 2, 23)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_entropy_from_statistics_with_missing_entries(covariance_type):
    """With NaN entries marginalised the entropy from the statistics is that of
    q(z, x_missing): sum_i sum_k r_ik (H[q(x_m | k)] - log r_ik), computed here row by
    row from the conditional Gaussians."""
    X, resp = _data(n=80, k=3, seed=4)
    rng = np.random.default_rng(0)
    X = X.copy()
    X[rng.random(X.shape) < 0.2] = np.nan
    X[np.isnan(X).all(axis=1), 0] = 0.0
    prior = _prior(np.nan_to_num(X), covariance_type, 3)
    filled = np.where(np.isnan(X), np.nanmean(X, axis=0), X)
    vp = vb.update_from_moments(*_moments(filled, resp, covariance_type), prior)
    params = GMMParams(np.exp(vb.estep_log_constants(vp)), vp.means, vp.covariances,
                       vp.precisions_cholesky, covariance_type)
    stats = kernels.chunk_stats(X, vp, nonfinite=nonfinite_rule("marginalize"))
    precisions = params.family.full_covariances(params.precisions, 3, X.shape[1])
    log_rho = np.empty((X.shape[0], 3))
    conditional_entropy = np.zeros_like(log_rho)
    for i, row in enumerate(X):
        gaps = np.isnan(row)
        log_rho[i] = kernels.estimate_weighted_log_prob(row[None], params)[0] \
            if not gaps.any() else _marginal_log_rho(row, params, precisions)
        for k in range(3):
            block = precisions[k][np.ix_(gaps, gaps)]
            conditional_entropy[i, k] = 0.5 * (gaps.sum() * (1 + np.log(2 * np.pi))
                                               - np.linalg.slogdet(block)[1]) if gaps.any() else 0
    log_norm = np.logaddexp.reduce(log_rho, axis=1)
    r = np.exp(log_rho - log_norm[:, None])
    expected = np.sum(r * (conditional_entropy - (log_rho - log_norm[:, None])))
    assert vb.responsibility_entropy(stats, vp) == pytest.approx(expected, rel=1e-9)


def _marginal_log_rho(row, params, precisions):
    """log rho_ik of a row with missing entries: the observed marginal of the Gaussian term
    plus the component's constant."""
    seen = ~np.isnan(row)
    out = np.log(params.weights).copy()
    for k in range(params.n_components):
        cov = np.linalg.inv(precisions[k])[np.ix_(seen, seen)]
        diff = row[seen] - params.means[k][seen]
        out[k] += -0.5 * (seen.sum() * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1]
                          + diff @ np.linalg.solve(cov, diff))
    return out
