"""dgmm.BayesianGaussianMixture: out-of-core variational inference against scikit-learn's
BayesianGaussianMixture (same initial responsibilities, kmeans starts), chunk
independence, the scikit-learn API, saved models, missing values and float32."""
import dask.array as da
import numpy as np
import pytest
from helpers import make_blobs
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import BayesianGaussianMixture as SkBayesian
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import dgmm
from dgmm.core import kernels
from dgmm.core.families import SKLEARN_TYPES
from dgmm.core.mstep import m_step
from dgmm.engine import em
from dgmm.engine import passes as engine
from dgmm.errors import ConfigError

PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
RTOL = 1e-10


class FromResponsibilities(SkBayesian):
    """scikit-learn's estimator started from given responsibilities ``resp0``."""

    def _initialize_parameters(self, X, random_state, xp=None):
        self._initialize(X, self.resp0)


def _close(ours, theirs, rtol=RTOL):
    theirs = np.asarray(theirs, dtype=np.float64)
    np.testing.assert_allclose(ours, np.reshape(theirs, np.shape(ours)), rtol=rtol,
                               atol=rtol * np.abs(theirs).max())


def _assert_same_fit(ours, theirs, rtol=RTOL):
    assert ours.n_iter_ == theirs.n_iter_ and ours.converged_ == theirs.converged_
    _close(ours.lower_bounds_, np.ravel(theirs.lower_bounds_), rtol)
    _close(ours.lower_bound_, np.ravel(theirs.lower_bound_)[0], rtol)
    _close(np.array(ours.weight_concentration_), np.array(theirs.weight_concentration_), rtol)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
                 "mean_precision_", "degrees_of_freedom_", "mean_prior_", "covariance_prior_"):
        _close(getattr(ours, name), getattr(theirs, name), rtol)
    for name in ("weight_concentration_prior_", "mean_precision_prior_",
                 "degrees_of_freedom_prior_"):
        assert getattr(ours, name) == pytest.approx(getattr(theirs, name), rel=1e-15)


def _fit_from_resp(model, X, resp, client=None):
    """Fit ``model`` by the engine from the mixture of the responsibilities ``resp``:
    scikit-learn's ``_initialize(X, resp)``."""
    data = engine.prepare(X, None)
    stats = kernels.chunk_stats_from_resp(np.asarray(X), resp,
                                          np.zeros((resp.shape[1], X.shape[1])),
                                          model.covariance_type)
    start = m_step(stats, model.reg_covar).params
    model.n_features_in_ = X.shape[1]
    kind = model.model_kind(data)
    result = em.fit_em(data, model._settings(), seed=0, kind=kind,
                       fixed_init=lambda data, index: start, client=client)
    model._set_posterior(result.params, kind.prior)
    model.n_iter_, model.converged_ = result.n_iter, result.converged
    model.lower_bound_, model.lower_bounds_ = result.lower_bound, list(result.history)
    return model


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", SKLEARN_TYPES)
def test_same_fit_as_scikit_learn_from_the_same_responsibilities(covariance_type,
                                                                 prior_type):
    """Out of core (four chunks), more components than the data need: every fitted
    attribute and the lower bound per iteration equal scikit-learn's to 1e-10."""
    X = make_blobs(240, 3, 3, seed=5)
    resp = np.random.default_rng(5).dirichlet(np.ones(5), size=240)
    settings = dict(n_components=5, covariance_type=covariance_type, tol=1e-6,
                    max_iter=300, weight_concentration_prior_type=prior_type,
                    weight_concentration_prior=0.05)
    theirs = FromResponsibilities(**settings)
    theirs.resp0 = resp
    theirs.fit(X)
    ours = _fit_from_resp(dgmm.BayesianGaussianMixture(**settings),
                          da.from_array(X, chunks=(60, 3)), resp)
    _assert_same_fit(ours, theirs)
    _close(ours.predict_proba(X), theirs.predict_proba(X), 1e-9)
    _close(ours.score_samples(X), theirs.score_samples(X))
    assert ours.score(X) == pytest.approx(theirs.score(X), rel=RTOL)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_the_fit_does_not_depend_on_the_chunking(covariance_type):
    """From the same start (the initialisation's sample is drawn per chunk): every number
    equal to 1e-10 whether the rows come in chunks of 37 or in one."""
    X = make_blobs(300, 3, 3, seed=3)
    resp = np.random.default_rng(3).dirichlet(np.ones(5), size=300)
    fits = [_fit_from_resp(dgmm.BayesianGaussianMixture(
        n_components=5, covariance_type=covariance_type, max_iter=50, tol=1e-8),
        da.from_array(X, chunks=(rows, 3)), resp) for rows in (37, 300)]
    _close(fits[0].lower_bounds_, fits[1].lower_bounds_)
    for name in ("weights_", "means_", "covariances_", "mean_precision_",
                 "degrees_of_freedom_"):
        _close(getattr(fits[0], name), getattr(fits[1], name))


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
def test_kmeans_starts_agree_and_switch_off_the_same_components(prior_type):
    """Well separated blobs, three of them, eight components allowed: the same
    partition starts both, the same three components stay. The components may come in
    another order (k-means|| against scikit-learn's KMeans), which the stick-breaking
    prior's weights depend on: for it the weights agree to 1e-2 only."""
    X = make_blobs(600, 2, 3, seed=11, spread=12.0)
    settings = dict(n_components=8, weight_concentration_prior_type=prior_type,
                    weight_concentration_prior=1e-3, random_state=0, max_iter=500, tol=1e-6)
    theirs = SkBayesian(**settings).fit(X)
    ours = dgmm.BayesianGaussianMixture(**settings).fit(da.from_array(X, chunks=(150, 2)))
    kept_theirs, kept_ours = theirs.weights_ > 0.01, ours.weights_ > 0.01
    assert kept_ours.sum() == kept_theirs.sum() == 3
    assert adjusted_rand_score(theirs.predict(X), ours.predict(X)) == 1.0
    order_t = np.lexsort(theirs.means_[kept_theirs].T)
    order_o = np.lexsort(ours.means_[kept_ours].T)
    _close(ours.means_[kept_ours][order_o], theirs.means_[kept_theirs][order_t], 1e-3)
    rtol = 1e-2 if prior_type == "dirichlet_process" else 1e-6
    _close(ours.weights_[kept_ours][order_o], theirs.weights_[kept_theirs][order_t], rtol)
    if prior_type == "dirichlet_distribution":  # the same partition: the same fit
        _close(ours.means_[kept_ours][order_o], theirs.means_[kept_theirs][order_t], 1e-6)
        assert ours.lower_bound_ == pytest.approx(float(np.ravel(theirs.lower_bound_)[0]),
                                                  rel=1e-6)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_on_a_cluster_a_restart_in_lockstep_equals_its_run_alone(cluster_client):
    X = da.from_array(make_blobs(300, 2, 3, seed=2), chunks=(100, 2))
    histories = {0: [], 1: []}

    def record(info):
        if info.phase == "iteration":
            histories[info.state.init_index].append(info.state.lower_bound)

    settings = dict(n_components=4, random_state=3, max_iter=15, client=cluster_client)
    both = dgmm.BayesianGaussianMixture(n_init=2, **settings).fit(X, callback=record)
    alone = dgmm.BayesianGaussianMixture(**settings).fit(X)
    assert histories[0] == alone.lower_bounds_
    assert both.lower_bound_ == max(histories[0][-1], histories[1][-1])


def test_scikit_learn_api_pipeline_grid_search_and_clone():
    X = make_blobs(300, 2, 3, seed=4)
    model = dgmm.BayesianGaussianMixture(n_components=4, random_state=0)
    assert clone(model).get_params() == model.get_params()
    pipe = make_pipeline(StandardScaler(), model).fit(X)
    assert pipe.predict(X).shape == (300,)
    grid = GridSearchCV(model, {"weight_concentration_prior": [0.01, 1.0]}, cv=2).fit(X)
    assert grid.best_params_["weight_concentration_prior"] in (0.01, 1.0)
    assert not hasattr(model.fit(X), "bic")
    with pytest.raises(ConfigError, match="takes covariance_type full, tied, diag, spherical"):
        from dgmm.core import variational

        variational.resolve_prior("VVV", 2, np.zeros(2), np.eye(2))


def test_saved_model_loads_as_a_bayesian_mixture(tmp_path):
    X = make_blobs(300, 3, 3, seed=6)
    model = dgmm.BayesianGaussianMixture(n_components=5, covariance_type="tied",
                                         weight_concentration_prior_type="dirichlet_distribution",
                                         mean_prior=np.ones(3), random_state=0,
                                         max_iter=300).fit(X)
    dgmm.data.save_model(tmp_path / "m", model)
    loaded = dgmm.load_model(tmp_path / "m")
    assert type(loaded) is dgmm.BayesianGaussianMixture
    np.testing.assert_array_equal(loaded.score_samples(X), model.score_samples(X))
    np.testing.assert_array_equal(loaded.weight_concentration_, model.weight_concentration_)
    np.testing.assert_array_equal(loaded.mean_prior_, np.ones(3))
    assert loaded.lower_bounds_ == model.lower_bounds_


def test_missing_values_and_float32():
    X = make_blobs(400, 3, 3, seed=8)
    reference = dgmm.BayesianGaussianMixture(n_components=4, random_state=1, tol=1e-6).fit(X)
    single = dgmm.BayesianGaussianMixture(n_components=4, random_state=1, tol=1e-6).fit(
        X.astype(np.float32))
    assert single.lower_bound_ == pytest.approx(reference.lower_bound_, rel=1e-5)
    holes = X.copy()
    holes[np.random.default_rng(0).random(X.shape) < 0.05] = np.nan
    model = dgmm.BayesianGaussianMixture(n_components=4, random_state=1,
                                         nonfinite="marginalize").fit(holes)
    bounds = np.array(model.lower_bounds_)
    assert np.all(np.diff(bounds) > -1e-6 * np.abs(bounds[1:]))  # the bound never falls
    assert np.isfinite(model.score_samples(holes)).all()


def test_a_workflow_fits_saves_reports_and_resumes(tmp_path, cluster_client):
    """model.kind: variational_bayes: the fit equals the estimator's on the same data, the
    saved model loads as a BayesianGaussianMixture, the report shows the bound and the
    weights, and a rerun after losing the last checkpoints resumes to the same model."""
    import json

    import yaml

    from dgmm.data import readers
    from dgmm.data.synthetic import make_gmm_data
    from dgmm.workflow.loading import load_workflow
    from dgmm.workflow.runner import run_workflow

    make_gmm_data(tmp_path / "d.zarr", 3000, 2, 3, chunk_rows=500, seed=1)
    doc = {
        "data": {"source": "zarr", "path": str(tmp_path / "d.zarr")},
        "model": {"kind": "variational_bayes", "n_components": 6, "random_state": 0,
                  "max_iter": 300,
                  "weight_concentration_prior": 0.001, "covariance_prior": [[1.0, 0.0],
                                                                            [0.0, 1.0]]},
        "cluster": {"kind": "address", "address": cluster_client.scheduler.address},
        "checkpoint": {"dir": str(tmp_path / "ckpt"), "every": 1, "keep": 100},
        "outputs": {"model": str(tmp_path / "model"), "report": str(tmp_path / "report"),
                    "predictions": str(tmp_path / "p.zarr")},
        "steps": ["fit", "predict", "score", "report"],
    }
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(doc))
    workflow = load_workflow(path)
    run_workflow(workflow)
    saved = dgmm.load_model(tmp_path / "model")
    assert type(saved) is dgmm.BayesianGaussianMixture
    X, _ = readers.open_source("zarr", str(tmp_path / "d.zarr"))
    kwargs = {**workflow.estimator_kwargs(), "random_state": 0}
    direct = dgmm.BayesianGaussianMixture(**kwargs).fit(X)
    np.testing.assert_array_equal(saved.means_, direct.means_)
    assert saved.lower_bounds_ == direct.lower_bounds_
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved.converged_ and saved.weights_.min() < 1e-3  # a component switched off
    assert report["variational"]["kept_components"] == (saved.weights_ > 0.01).sum()
    assert (tmp_path / "report" / "variational.png").stat().st_size > 0
    # lose the model and the newest checkpoints: the rerun resumes from an older one
    import shutil

    shutil.rmtree(tmp_path / "model")
    checkpoints = sorted((tmp_path / "ckpt").glob("ckpt-*.npz"))
    assert len(checkpoints) > 3
    for stale in checkpoints[-2:]:
        stale.unlink()
        stale.with_suffix(".sha256").unlink()
    lines = []
    run_workflow(workflow, emit=lines.append)
    assert any("resuming from checkpoint" in line for line in lines)
    resumed = dgmm.load_model(tmp_path / "model")
    np.testing.assert_array_equal(resumed.means_, direct.means_)
    assert resumed.lower_bounds_ == direct.lower_bounds_


@pytest.mark.parametrize("covariance_type", SKLEARN_TYPES)
def test_a_stochastic_step_on_all_rows_with_step_one_is_a_batch_iteration(covariance_type):
    from dgmm.core import variational as vb
    from dgmm.core.stepwise import stepwise_update

    X = make_blobs(300, 3, 3, seed=7)
    model = dgmm.BayesianGaussianMixture(n_components=4, covariance_type=covariance_type)
    model.n_features_in_ = 3
    kind = model.model_kind(engine.prepare(X))
    start = dgmm.GaussianMixture(4, covariance_type=covariance_type, max_iter=0,
                                 random_state=0).fit(X).params_
    posterior = kind.initial_params(start)
    stats = kernels.chunk_stats(X, posterior)
    step = stepwise_update(posterior, kind.initial_running(start), stats, 1.0, 1e-6, kind)
    batch = vb.variational_update(stats, kind.prior, 1e-6)
    for name, value in batch.to_arrays().items():
        _close(getattr(step.params, name), value, 1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_partial_fit_one_pass_comes_within_half_a_percent_of_batch(tmp_path):
    """Stochastic variational inference, one pass of 300 steps: its posterior's bound (one
    batch iteration from it) within 0.5% per row of batch inference's converged bound."""
    from dgmm.data import synthetic

    truth = synthetic.true_params(4, 4, seed=1)
    X = synthetic.sample_chunk(60_000, 0, 1, truth)
    settings = dict(n_components=4, init_params="random_from_data", random_state=2)
    batch = dgmm.BayesianGaussianMixture(max_iter=500, tol=1e-6 * len(X), **settings).fit(X)
    online = dgmm.BayesianGaussianMixture(batch_size=200, wave_width=1, **settings)
    online.partial_fit(da.from_array(X, chunks=(10_000, 4)))
    assert online.n_steps_ == 300 and online.n_passes_ == 1
    scored = dgmm.BayesianGaussianMixture(max_iter=1, warm_start=True, **settings)
    scored.posterior_, scored.lower_bound_, scored.converged_ = online.posterior_, -np.inf, False
    scored.fit(X)
    assert (batch.lower_bound_ - scored.lower_bound_) / abs(batch.lower_bound_) < 0.005
    dgmm.data.save_model(tmp_path / "online", online)
    loaded = dgmm.load_model(tmp_path / "online")
    online.partial_fit(X[:20_000])  # continues: the same prior and scale, more steps
    assert online.n_steps_ == 400 and online.n_passes_ == 2
    loaded.partial_fit(X[:20_000])  # a saved online model continues the same way
    np.testing.assert_array_equal(loaded.means_, online.means_)
    assert loaded.n_steps_ == 400
