"""dgmm.MiniBatchBayesianGaussianMixture: stochastic variational inference as a fit
(passes of partial_fit, to the bit), on a LocalCluster's workers, continued by warm
starts and saved models, against batch variational inference, with missing values and
float32."""
import dask.array as da
import numpy as np
import pytest
from helpers import CHROMIUM, make_blobs, rendered_text

import dgmm
from dgmm.core.families import SKLEARN_TYPES
from dgmm.data import synthetic
from dgmm.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

POSTERIOR = ("weight_concentration", "mean_precision", "means", "degrees_of_freedom",
             "covariances", "precisions_cholesky")


def assert_same_posterior(a, b):
    for name in POSTERIOR:
        np.testing.assert_array_equal(np.asarray(getattr(a.posterior_, name)),
                                      np.asarray(getattr(b.posterior_, name)), err_msg=name)
    assert a.n_steps_ == b.n_steps_ and a.lower_bounds_ == b.lower_bounds_


def mixture(n=12_000, d=3, k=3, seed=1):
    return synthetic.sample_chunk(n, 0, seed, synthetic.true_params(k, d, seed=seed))


@pytest.mark.parametrize("covariance_type", SKLEARN_TYPES)
def test_a_fit_is_its_passes_of_partial_fit(covariance_type):
    X = da.from_array(mixture(), chunks=(2000, 3))
    kwargs = dict(n_components=5, covariance_type=covariance_type, batch_size=400,
                  random_state=0, wave_width=3)
    fitted = dgmm.MiniBatchBayesianGaussianMixture(max_iter=3, tol=0.0, **kwargs).fit(X)
    online = dgmm.MiniBatchBayesianGaussianMixture(**kwargs)
    for _ in range(3):
        online.partial_fit(X)
    # with init_size=0 the start is init_params on all rows: BayesianGaussianMixture's
    fitted_on_all = dgmm.MiniBatchBayesianGaussianMixture(max_iter=1, init_size=0, **kwargs)
    assert_same_posterior(fitted_on_all.fit(X),
                          dgmm.BayesianGaussianMixture(**kwargs).partial_fit(X))
    assert fitted.n_passes_ == 3 and fitted.n_steps_ == 3 * 2 * 5  # 2 waves a pass, 5 steps a chain
    assert_same_posterior(fitted, online)
    assert len(fitted.lower_bounds_) == 3 and not fitted.converged_
    np.testing.assert_array_equal(fitted.predict(X), online.predict(X))


class CountedRows:
    """An array whose row reads are counted (``dask.array.from_array`` reads it)."""

    def __init__(self, X):
        import threading

        self.X, self.shape, self.dtype, self.ndim = X, X.shape, X.dtype, X.ndim
        self.rows, self._lock = 0, threading.Lock()

    def __getitem__(self, key):
        out = self.X[key]
        with self._lock:
            self.rows += out.shape[0]
        return out


def test_a_one_pass_fit_reads_the_data_twice():
    """One pass for the moments and the sample together, one pass of steps; with
    init_size=0 the k-means initialisation reads all rows many times."""
    X = mixture(40_000, 4, 4)
    kwargs = dict(n_components=4, max_iter=1, batch_size=1000, random_state=0)
    reads = {}
    for init_size in (None, 0):
        counted = CountedRows(X)
        model = dgmm.MiniBatchBayesianGaussianMixture(init_size=init_size, **kwargs)
        model.fit(da.from_array(counted, chunks=(5000, 4), asarray=True))
        reads[init_size] = counted.rows / len(X)
    assert reads[None] == 2.0 and reads[0] > 4
    # the searched start is a good one: one pass lands near batch inference's optimum
    batch = dgmm.BayesianGaussianMixture(n_components=4, random_state=0, max_iter=500,
                                         tol=1e-6 * len(X)).fit(X)
    np.testing.assert_allclose(np.sort(model.weights_), np.sort(batch.weights_), atol=0.01)


def test_the_default_start_lets_the_prior_switch_components_off():
    """10 components allowed on data drawn from 4, scikit-learn's default 'kmeans' start:
    batch inference from it keeps 9 (every component starts with its share of rows); the
    online estimator's sample restarts also start from single rows and keep the best
    bound, and after 2 passes it keeps 5."""
    truth = synthetic.true_params(2, 4, seed=0, separation=6.0)
    X = synthetic.sample_chunk(40_000, 0, 0, truth)
    kwargs = dict(n_components=10, weight_concentration_prior=0.001, random_state=0)
    online = dgmm.MiniBatchBayesianGaussianMixture(batch_size=2000, max_iter=2, **kwargs)
    online.fit(da.from_array(X, chunks=(10_000, 2)))
    batch = dgmm.BayesianGaussianMixture(max_iter=300, **kwargs).fit(X)
    assert (online.weights_ > 0.01).sum() == 5 < (batch.weights_ > 0.01).sum() == 9


def test_batch_inference_can_start_from_the_sample_too():
    """BayesianGaussianMixture(init_size=None): the online estimator's start, then batch
    inference on all rows; it reads the data less than scikit-learn's start on all rows
    (the default, init_size=0), keeps what the data need and ends at a higher bound."""
    truth = synthetic.true_params(2, 4, seed=0, separation=6.0)
    X = synthetic.sample_chunk(40_000, 0, 0, truth)
    kwargs = dict(n_components=10, weight_concentration_prior=0.001, random_state=0,
                  max_iter=300)
    reads, fits = {}, {}
    for init_size in (0, None):
        counted = CountedRows(X)
        fits[init_size] = dgmm.BayesianGaussianMixture(init_size=init_size, **kwargs).fit(
            da.from_array(counted, chunks=(10_000, 2), asarray=True))
        reads[init_size] = counted.rows / len(X)
    assert reads[None] == 1 + fits[None].n_iter_ < reads[0]
    assert (fits[None].weights_ > 0.01).sum() == 4 < (fits[0].weights_ > 0.01).sum()
    assert fits[None].lower_bound_ > fits[0].lower_bound_


def test_tol_stops_on_the_change_of_the_pass_mean_normaliser():
    X = mixture()
    model = dgmm.MiniBatchBayesianGaussianMixture(n_components=3, batch_size=500,
                                                  max_iter=50, tol=1e-3, random_state=0)
    model.fit(X)
    assert model.converged_ and model.n_passes_ < 50
    changes = np.abs(np.diff(model.lower_bounds_))
    assert changes[-1] < 1e-3 and (changes[:-1] >= 1e-3).all()


@pytest.mark.parametrize(("init_size", "batch_size", "wave_width", "steps"),
                         [(None, 500, 8, 15), (0, 200, 4, 76)])
def test_one_pass_comes_within_half_a_percent_of_batch_variational_inference(
        init_size, batch_size, wave_width, steps):
    """The issue's target: the posterior after one pass, scored by one batch iteration,
    within 0.5% per row of batch inference's converged lower bound. From the sample's
    posterior (the default) one wave of 15 steps is enough; from random rows of all the
    data (init_size=0) the pass needs more steps: two waves of four chains of 38 (one
    wave of eight chains of 38 ends 0.9% below, of 15 8%)."""
    X = mixture(60_000, 4, 4)
    settings = dict(n_components=4, init_params="random_from_data", random_state=2)
    batch = dgmm.BayesianGaussianMixture(max_iter=500, tol=1e-6 * len(X), **settings).fit(X)
    online = dgmm.MiniBatchBayesianGaussianMixture(
        max_iter=1, init_size=init_size, batch_size=batch_size, wave_width=wave_width,
        **settings)
    online.fit(da.from_array(X, chunks=(7500, 4)))
    assert online.n_passes_ == 1 and online.n_steps_ == steps
    scored = dgmm.BayesianGaussianMixture(max_iter=1, warm_start=True, **settings)
    scored.posterior_, scored.lower_bound_, scored.converged_ = online.posterior_, -np.inf, False
    scored.fit(X)
    gap = (batch.lower_bound_ - scored.lower_bound_) / abs(batch.lower_bound_)
    assert gap < 0.005, gap


def test_on_a_cluster_the_steps_are_those_run_in_this_process(cluster_client, tmp_path):
    """A Zarr store read chunk by chunk, weighted rows, Dirichlet prior: the waves of chunk
    tasks on a LocalCluster's worker processes give exactly the local numbers."""
    from dgmm.data import readers

    path = str(tmp_path / "x.zarr")
    synthetic.make_gmm_data(path, 6000, 3, 3, chunk_rows=1000, seed=4)
    X, info = readers.open_zarr(path, target_chunk_bytes=1000 * 3 * 8)
    assert info.n_chunks == 6
    w = np.random.default_rng(0).uniform(0.0, 2.0, size=6000)
    kwargs = dict(n_components=4, batch_size=300, max_iter=2, tol=0.0, random_state=3,
                  wave_width=4, weight_concentration_prior_type="dirichlet_distribution")
    local = dgmm.MiniBatchBayesianGaussianMixture(**kwargs).fit(X, sample_weight=w)
    remote = dgmm.MiniBatchBayesianGaussianMixture(client=cluster_client, **kwargs).fit(
        X, sample_weight=w)
    assert_same_posterior(local, remote)
    assert remote.n_steps_ == 2 * 2 * 4  # two waves (4 and 2 chunks) of 4 steps a pass


def test_warm_start_continues_with_the_first_fits_prior(tmp_path):
    """Day 1 fits; day 2 continues on new rows: the same as partial_fit on both, the prior
    and scale n of day 1 kept; a saved model continues the same way."""
    day1, day2 = mixture(8000, seed=1), mixture(4000, seed=2) + 0.5
    kwargs = dict(n_components=4, batch_size=500, random_state=0, tol=0.0)
    model = dgmm.MiniBatchBayesianGaussianMixture(max_iter=2, **kwargs).fit(day1)
    dgmm.data.save_model(tmp_path / "day1", model)
    loaded = dgmm.load_model(tmp_path / "day1")
    assert type(loaded) is dgmm.MiniBatchBayesianGaussianMixture
    assert loaded.kind_.n == model.kind_.n == 8000
    assert_same_posterior(loaded, model)

    reference = dgmm.MiniBatchBayesianGaussianMixture(**kwargs)
    reference.partial_fit(day1).partial_fit(day1).partial_fit(day2)
    for continued in (model, loaded):
        continued.set_params(warm_start=True, max_iter=1).fit(day2)
        assert continued.n_passes_ == 3 and continued.kind_.n == 8000
        assert_same_posterior(continued, reference)
        np.testing.assert_array_equal(continued.mean_prior_, reference.mean_prior_)
    with pytest.raises(DataError, match="expecting 3 features"):
        model.fit(day2[:, :2])
    # warm_start off starts over on the rows given
    fresh = dgmm.MiniBatchBayesianGaussianMixture(max_iter=1, **kwargs).fit(day2)
    assert model.set_params(warm_start=False, max_iter=1).fit(day2).kind_.n == 4000
    assert_same_posterior(model, fresh)


def test_one_initialisation_only():
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="n_init"):
        dgmm.MiniBatchBayesianGaussianMixture(n_init=2).fit(make_blobs(100))


def test_missing_entries_are_marginalised_and_float32_follows_float64():
    from scipy.optimize import linear_sum_assignment

    X = make_blobs(6000, 3, 3, seed=3, spread=8.0)
    holes = X.copy()
    holes[np.random.default_rng(0).random(X.shape) < 0.05] = np.nan
    kwargs = dict(n_components=3, batch_size=500, max_iter=3, tol=0.0, random_state=0)
    marginalised = dgmm.MiniBatchBayesianGaussianMixture(nonfinite="marginalize", **kwargs)
    marginalised.fit(holes)
    complete = dgmm.MiniBatchBayesianGaussianMixture(**kwargs).fit(X)
    # on separated blobs 5% of the entries missing moves each mean by little
    distance = np.linalg.norm(marginalised.means_[:, None] - complete.means_[None], axis=2)
    rows, cols = linear_sum_assignment(distance)
    assert distance[rows, cols].max() < 0.1, distance
    with pytest.raises(DataError, match="NaN or inf values"):
        dgmm.MiniBatchBayesianGaussianMixture(**kwargs).fit(holes)
    single = dgmm.MiniBatchBayesianGaussianMixture(**kwargs).fit(X.astype(np.float32))
    # the same components (the search may rank two equal starts the other way round)
    distance = np.linalg.norm(single.means_[:, None] - complete.means_[None], axis=2)
    rows, cols = linear_sum_assignment(distance)
    assert distance[rows, cols].max() < 1e-4, distance


# ------------------------------------------------------------------------- workflows


def _online_workflow(tmp_path, name, data, client, **model):
    import yaml

    from dgmm.workflow.loading import load_workflow

    doc = {
        "data": {"source": "zarr", "path": str(tmp_path / data), "chunk_bytes": 1500 * 3 * 8},
        "model": {"kind": "variational_bayes", "algorithm": "minibatch", "n_components": 5,
                  "random_state": 0, "batch_size": 300, "tol": 0.0, "max_iter": 2,
                  "wave_width": 2, "weight_concentration_prior": 0.01, **model},
        "cluster": {"kind": "address", "address": client.scheduler.address},
        "checkpoint": {"dir": str(tmp_path / f"ckpt-{name}"), "every": 2, "keep": 100},
        "outputs": {"model": str(tmp_path / name / "model"),
                    "report": str(tmp_path / name / "report")},
        "steps": ["fit", "report"],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_workflow(path)


def test_an_online_workflow_fits_resumes_mid_pass_and_updates_from_its_model(
        tmp_path, cluster_client, capsys):
    """model.kind: variational_bayes with algorithm: minibatch: the saved model is the
    estimator's fit; a run that lost its newest checkpoints resumes in mid-pass to the same
    numbers; a day-2 workflow with warm_start_from continues the day-1 model (its prior and
    scale), as partial_fit would; the report shows the kept components."""
    import json
    import os
    import shutil

    from dgmm.data import readers
    from dgmm.workflow.checkpoint import CheckpointStore
    from dgmm.workflow.runner import run_workflow

    for day, seed in (("day1", 0), ("day2", 1)):
        synthetic.make_gmm_data(str(tmp_path / f"{day}.zarr"), 6000, 3, 3, chunk_rows=1500,
                                seed=seed, fmt="zarr")
    day1 = _online_workflow(tmp_path, "day1", "day1.zarr", cluster_client)
    lines = []
    run_workflow(day1, emit=lines.append)
    assert any(line.startswith("pass 2 chunk 2/4 step") for line in lines), lines
    saved = dgmm.load_model(tmp_path / "day1" / "model")
    assert type(saved) is dgmm.MiniBatchBayesianGaussianMixture

    def read(day):
        return readers.open_source("zarr", str(tmp_path / f"{day}.zarr"),
                                   **day1.data.open_kwargs())[0]

    kwargs = {**day1.estimator_kwargs(), "random_state": 0}
    direct = dgmm.MiniBatchBayesianGaussianMixture(**kwargs).fit(read("day1"))
    assert_same_posterior(saved, direct)
    report = json.loads((tmp_path / "day1" / "report" / "report.json").read_text())
    assert report["variational"]["kept_components"] == (saved.weights_ > 0.01).sum()
    assert report["variational"]["fitted_by"] == "stochastic variational inference"
    page = (tmp_path / "day1" / "report" / "report.html").read_text()
    assert "each pass&#x27;s mean log normaliser per row" in page or \
        "each pass's mean log normaliser per row" in page

    # dgmm inspect shows where the newest checkpoint is: the end of pass 2
    from dgmm.cli import main

    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "ckpt-day1"), "--json"]) == 0
    latest = json.loads(capsys.readouterr().out)["latest"]
    assert (latest["passes_done"], latest["chunks_done_in_pass"], latest["step"]) == (
        2, 0, saved.n_steps_)

    # lose the model and the newest checkpoint (the end of pass 2): resume in mid-pass 2
    store = CheckpointStore(tmp_path / "ckpt-day1")
    newest = store.list()[-1]
    for suffix in (".npz", ".sha256"):
        os.remove(newest.path.removesuffix(".npz") + suffix)
    shutil.rmtree(tmp_path / "day1" / "model")
    lines.clear()
    run_workflow(day1, emit=lines.append)
    assert any(line.startswith("resuming from checkpoint: pass 2, chunk 2,")
               for line in lines), lines
    assert_same_posterior(dgmm.load_model(tmp_path / "day1" / "model"), direct)

    day2 = _online_workflow(tmp_path, "day2", "day2.zarr", cluster_client, max_iter=1,
                            warm_start_from=str(tmp_path / "day1" / "model"))
    run_workflow(day2)
    updated = dgmm.load_model(tmp_path / "day2" / "model")
    direct.partial_fit(read("day2"))
    assert_same_posterior(updated, direct)
    assert updated.n_passes_ == 3 and updated.kind_.n == 6000
    np.testing.assert_array_equal(updated.mean_prior_, saved.mean_prior_)


def test_an_update_continues_a_model_of_its_own_kind(tmp_path, cluster_client):
    from dgmm.errors import ConfigError
    from dgmm.workflow.runner import run_workflow

    synthetic.make_gmm_data(str(tmp_path / "d.zarr"), 3000, 3, 3, chunk_rows=1500, seed=0,
                            fmt="zarr")
    X = make_blobs(300, 3, 3)
    dgmm.data.save_model(tmp_path / "ml", dgmm.MiniBatchGaussianMixture(
        5, max_iter=1, batch_size=50, random_state=0).fit(X))
    dgmm.data.save_model(tmp_path / "vb", dgmm.MiniBatchBayesianGaussianMixture(
        n_components=5, max_iter=1, batch_size=50, random_state=0).fit(X))
    online = _online_workflow(tmp_path, "a", "d.zarr", cluster_client,
                              warm_start_from=str(tmp_path / "ml"))
    with pytest.raises(ConfigError, match="is a maximum_likelihood mixture"):
        run_workflow(online)
    stepwise = _online_workflow(tmp_path, "b", "d.zarr", cluster_client,
                                warm_start_from=str(tmp_path / "vb"),
                                kind="maximum_likelihood", weight_concentration_prior=None)
    with pytest.raises(ConfigError, match="set model.kind: variational_bayes"):
        run_workflow(stepwise)


def test_the_shipped_online_workflow_keeps_the_components_it_says(tmp_path):
    """workflows/bayesian_online.yaml as the docs run it: a LocalCluster, 3 passes, the
    report; its comment says the prior keeps 4 of the 6 components."""
    import json
    import os
    import subprocess
    import sys

    from helpers import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("DGMM_")}
    proc = subprocess.run([sys.executable, "-m", "dgmm.cli", "run",
                           str(REPO / "workflows" / "bayesian_online.yaml")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pass 3 done" in proc.stdout
    # a variational posterior has no BIC (as in scikit-learn)
    score = next(line for line in proc.stdout.splitlines() if line.startswith("score:"))
    assert "mean log-likelihood" in score and "BIC" not in score
    run = tmp_path / "runs" / "bayesian_online"
    model = dgmm.load_model(run / "model")
    assert type(model) is dgmm.MiniBatchBayesianGaussianMixture and model.n_passes_ == 3
    assert (model.weights_ > 0.01).sum() == 4
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["variational"]["kept_components"] == 4
    if CHROMIUM is not None:  # the page as a browser shows it
        text = rendered_text(run / "report" / "report.html")
        assert "4 of 6 components kept" in text
        assert "each pass's mean log normaliser per row" in text
        assert "BIC" not in text


def test_the_shipped_batch_quickstart_keeps_the_components_it_says(tmp_path):
    """workflows/bayesian_quickstart.yaml: its comment says this run keeps 5 of the 10."""
    import os
    import subprocess
    import sys

    from helpers import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("DGMM_")}
    proc = subprocess.run([sys.executable, "-m", "dgmm.cli", "run",
                           str(REPO / "workflows" / "bayesian_quickstart.yaml")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    model = dgmm.load_model(tmp_path / "runs" / "bayesian_quickstart" / "model")
    assert type(model) is dgmm.BayesianGaussianMixture and model.converged_
    assert (model.weights_ > 0.01).sum() == 5


@pytest.mark.parametrize("section", ["stepwise", "variational"])
def test_an_unreadable_manifest_section_is_refused_by_name(tmp_path, section):
    import json

    model = dgmm.MiniBatchBayesianGaussianMixture(n_components=2, max_iter=1, batch_size=100,
                                                  random_state=0).fit(make_blobs(300, 2, 2))
    dgmm.data.save_model(tmp_path / "m", model)
    manifest = tmp_path / "m" / "model.json"
    meta = json.loads(manifest.read_text())
    meta[section]["arrays"] = "lost"
    manifest.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=f"unreadable '{section}' entry"):
        dgmm.load_model(tmp_path / "m")
