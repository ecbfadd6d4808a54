"""mclust's fourteen covariance models: M-steps, log-likelihoods and parameter counts against
R's mclust 6.0 (fixtures made by tests/fixtures/mclust/make_fixtures.R), and the properties
every M-step must have (it never lowers Q; the iterative ones stop and say so)."""
import json

import numpy as np
import pandas as pd
import pytest
from helpers import REPO

from dgmm.core import kernels, structured
from dgmm.core.families import MCLUST_MODELS, family
from dgmm.core.mstep import m_step
from dgmm.core.params import GMMParams

FIXTURES = REPO / "tests" / "fixtures" / "mclust"
CLOSED_FORM = ("EII", "VII", "EEI", "EVI", "VVI", "EEE", "EEV", "EVV", "VVV")
ITERATIVE = ("VEI", "VEE", "EVE", "VVE", "VEV")
MSTEP_CASES = json.loads((FIXTURES / "mstep.json").read_text())


def load(name):
    return pd.read_csv(FIXTURES / f"{name}.csv").to_numpy(np.float64)


def full(kind, covariances, k, d):
    return np.asarray(kind.full_covariances(covariances, k, d), dtype=np.float64)


def scatter(X, z):
    """n_k (K,), means (K, d), W_k (K, d, d) computed directly from the rows."""
    nk = z.sum(axis=0)
    means = z.T @ X / nk[:, None]
    W = np.stack([(z[:, j, None] * (X - means[j])).T @ (X - means[j]) for j in range(len(nk))])
    return nk, means, W


def mclust_vve(nk, W, iterations=100000, tol=1e-15):
    """mclust's VVE orientation update (msvve in its mclust2.f), written from its
    description: the MM steps weight component k by its shape A_k^-1 alone, leaving out
    the volume lambda_k that the M-step of Sigma_k = lambda_k D A_k D^T carries."""
    K, d, _ = W.shape
    omega = np.linalg.eigvalsh(W)[:, -1]
    D, shapes, previous = np.eye(d), np.ones((K, d)), np.inf
    for _ in range(iterations):
        D = structured._orientation_mm_step(W, omega, D, 1.0 / shapes)
        diagonals = structured._diagonals_in(D, W) / nk[:, None]
        volumes = np.exp(np.log(diagonals).mean(axis=1))
        shapes = diagonals / volumes[:, None]
        target = float(np.sum(structured._diagonals_in(D, W) / shapes))
        if abs(target - previous) / (1 + abs(target)) <= tol:
            break
        previous = target
    return np.einsum("ij,kj,lj->kil", D, volumes[:, None] * shapes, D)


@pytest.mark.parametrize("case", MSTEP_CASES, ids=lambda c: c["data"])
@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_m_step_equals_mclusts(case, model, monkeypatch):
    monkeypatch.setattr(structured, "INNER_TOL", 1e-15)
    monkeypatch.setattr(structured, "INNER_MAX_ITER", 100000)
    X, z = load(case["data"]), np.array(case["z"])
    ref = case["models"][model]
    kind = family(model)
    k, d = z.shape[1], X.shape[1]
    stats = kernels.chunk_stats_from_resp(X, z, X[:k], model)
    step = m_step(stats, reg_covar=0.0)
    assert not step.inner_capped
    assert np.allclose(step.params.weights, ref["pro"], rtol=1e-12, atol=0)
    assert np.allclose(step.params.means, ref["mean"], rtol=1e-12, atol=0)
    ours = full(kind, step.params.covariances, k, d)
    theirs = np.array(ref["sigma"])
    if model != "VVE":
        tolerance = 1e-8 if model in CLOSED_FORM else 1e-6
        np.testing.assert_allclose(ours, theirs, rtol=tolerance, atol=tolerance * 1e-3)
        return
    # mclust's VVE leaves the volumes out of its orientation step: our reference of that
    # step reproduces mclust's numbers, and the true M-step attains a higher Q
    nk, _, W = scatter(X, z)
    np.testing.assert_allclose(mclust_vve(nk, W), theirs, rtol=1e-6, atol=1e-9)
    assert (structured.expected_log_likelihood(nk, W, ours)
            > structured.expected_log_likelihood(nk, W, theirs) + 1e-3)


@pytest.mark.parametrize("case", MSTEP_CASES, ids=lambda c: c["data"])
@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_log_likelihood_of_mclusts_parameters_equals_its_estep(case, model):
    X = load(case["data"])
    ref = case["models"][model]
    kind = family(model)
    sigma = np.array(ref["sigma"])
    params = GMMParams.from_covariances(ref["pro"], ref["mean"], kind.from_full(sigma), model)
    np.testing.assert_allclose(full(kind, params.covariances, *sigma.shape[:2]), sigma,
                               rtol=1e-12, atol=1e-14)
    assert kernels.score_samples(X, params).sum() == pytest.approx(ref["loglik"], rel=1e-12)


def test_parameter_counts_equal_nmclustparams():
    counts = json.loads((FIXTURES / "nparams.json").read_text())
    assert len(counts) == 14 * 6 * 9
    for row in counts:
        assert family(row["model"]).n_parameters(row["G"], row["d"]) == row["n"], row


def random_admissible(model, rng, k, d):
    kind = family(model)
    return full(kind, kind.random_covariances(rng, k, d, 0.3, 3.0), k, d)


def structure_holds(model, covariances):
    """Sigma_k = lambda_k D_k A_k D_k^T with the model's equal parts equal."""
    volumes, shapes, orientations = structured.decompose(
        covariances, model, diagonal=model[2] == "I")
    k, d = covariances.shape[:2]
    D = np.broadcast_to(orientations, (k, d, d))
    diagonals = np.broadcast_to(volumes, (k,))[:, None] * np.broadcast_to(shapes, (k, d))
    rebuilt = np.einsum("kij,kj,klj->kil", D, diagonals, D)
    return np.allclose(rebuilt, covariances, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("model", MCLUST_MODELS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_m_step_never_lowers_q(model, seed):
    rng = np.random.default_rng(seed)
    k, d = 3, 4
    X = rng.normal(size=(300, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)
    z = rng.dirichlet(np.full(k, 0.5), size=300)
    nk, _, W = scatter(X, z)
    kind = family(model)
    for _ in range(3):
        previous = kind.from_full(random_admissible(model, rng, k, d))
        previous_full = full(kind, previous, k, d)
        assert structure_holds(model, previous_full)
        estimate = kind.fit_covariances(nk, np.zeros((k, d)), kind.s2_from_components(
            W if kind.kernel != "diagonal" else np.diagonal(W, axis1=1, axis2=2)), 0.0,
            previous)
        new = full(kind, estimate.covariances, k, d)
        assert structure_holds(model, new)
        q_new = structured.expected_log_likelihood(nk, W, new)
        assert q_new >= structured.expected_log_likelihood(nk, W, previous_full) - 1e-9
        if model in CLOSED_FORM:  # the maximum: above any admissible covariances
            other = random_admissible(model, rng, k, d)
            assert q_new >= structured.expected_log_likelihood(nk, W, other)


@pytest.mark.parametrize("model", ITERATIVE)
def test_iterative_m_steps_stop_on_tolerance_and_report_their_cap(model, monkeypatch):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 3)) * [1.0, 2.0, 0.5]
    z = rng.dirichlet(np.ones(3), size=200)
    nk, _, W = scatter(X, z)
    pure = getattr(structured, model.lower())
    diagonal = model[2] == "I"
    data = np.diagonal(W, axis1=1, axis2=2) if diagonal else W
    done = pure(nk, data, tol=1e-8)
    assert done.converged and 1 <= done.n_iter < structured.INNER_MAX_ITER
    capped = pure(nk, data, tol=0.0, max_iter=1)
    assert not capped.converged and capped.n_iter == 1
    monkeypatch.setattr(structured, "INNER_MAX_ITER", 1)
    monkeypatch.setattr(structured, "INNER_TOL", 0.0)
    stats = kernels.chunk_stats_from_resp(X, z, X[:3], model)
    step = m_step(stats, reg_covar=0.0)
    assert step.inner_capped and step.inner_iterations == 1


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_decomposition_rebuilds_the_covariances_and_shares_what_the_model_shares(model):
    kind = family(model)
    k, d = 3, 4
    covariances = kind.random_covariances(np.random.default_rng(3), k, d, 0.5, 2.0)
    volumes, shapes, orientations = kind.decomposition(covariances, k, d)
    assert np.shape(volumes) == (() if model[0] == "E" else (k,))
    assert np.shape(shapes) == ((k, d) if model[1] == "V" else (d,))
    assert np.shape(orientations) == ((k, d, d) if model[2] == "V" else (d, d))
    assert np.allclose(np.prod(np.atleast_2d(shapes), axis=1), 1.0)
    assert structure_holds(model, full(kind, covariances, k, d))


def test_empty_component_keeps_its_previous_covariance_in_every_model():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 2))
    z = np.zeros((100, 3))
    z[:50, 0], z[50:, 1] = 1.0, 1.0
    for model in MCLUST_MODELS:
        kind = family(model)
        previous = GMMParams.from_covariances(
            np.full(3, 1 / 3), rng.normal(size=(3, 2)),
            kind.random_covariances(rng, 3, 2, 0.5, 2.0), model)
        stats = kernels.chunk_stats_from_resp(X, z, previous.means, model)
        step = m_step(stats, reg_covar=1e-6, previous=previous)
        assert step.empty == (2,), model
        assert np.all(np.isfinite(step.params.covariances)), model
