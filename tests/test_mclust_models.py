"""mclust's fourteen models through everything the four scikit-learn types go through:
estimators, chunked passes, float32, missing values, mini-batch EM, saved models, resume,
model selection (ICL, the 'all' grid), workflows and the plots."""
import dask.array as da
import numpy as np
import pytest
from helpers import make_blobs
from helpers import write_file as write

import dgmm
from dgmm.core import structured
from dgmm.core.families import MCLUST_MODELS, family
from dgmm.data.model_io import save_model
from dgmm.engine import em
from dgmm.engine import passes as engine
from dgmm.workflow import plots

SKLEARN_AS_MCLUST = [("full", "VVV"), ("tied", "EEE"), ("diag", "VVI"), ("spherical", "VII")]


@pytest.fixture(scope="module")
def blobs():
    return make_blobs(600, 3, 3, seed=70)


@pytest.mark.parametrize(("sklearn_name", "mclust_name"), SKLEARN_AS_MCLUST)
def test_the_four_under_mclusts_names_give_bit_identical_fits(blobs, sklearn_name,
                                                              mclust_name):
    X = da.from_array(blobs, chunks=(150, 3))
    common = dict(n_components=3, n_init=2, random_state=1, tol=1e-6)
    a = dgmm.GaussianMixture(covariance_type=sklearn_name, **common).fit(X)
    b = dgmm.GaussianMixture(covariance_type=mclust_name, **common).fit(X)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.lower_bounds_ == b.lower_bounds_ and a.n_iter_ == b.n_iter_
    assert a.params_.n_free_parameters() == b.params_.n_free_parameters()


def structure_holds(model, covariances, k, d):
    full = family(model).full_covariances(covariances, k, d)
    volumes, shapes, orientations = family(model).decomposition(covariances, k, d)
    D = np.broadcast_to(orientations, (k, d, d))
    diagonals = np.broadcast_to(volumes, (k,))[:, None] * np.broadcast_to(shapes, (k, d))
    return np.allclose(np.einsum("kij,kj,klj->kil", D, diagonals, D), full, rtol=1e-7,
                       atol=1e-10)


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_every_model_fits_out_of_core_monotonically_and_keeps_its_structure(blobs, model):
    X = da.from_array(blobs, chunks=(128, 3))
    start = dgmm.GaussianMixture(3, covariance_type=model, random_state=0, max_iter=0).fit(
        blobs)
    common = dict(covariance_type=model, tol=1e-8, max_iter=60, reg_covar=0.0,
                  weights_init=start.weights_, means_init=start.means_,
                  precisions_init=start.precisions_)
    fitted = dgmm.GaussianMixture(3, **common).fit(X)
    bounds = np.array(fitted.lower_bounds_)
    assert np.all(np.diff(bounds) >= -1e-9 * np.abs(bounds[1:]))  # EM never goes down
    assert structure_holds(model, fitted.covariances_, 3, 3)
    shape = family(model).covariance_shape(3, 3)
    assert fitted.covariances_.shape == fitted.precisions_cholesky_.shape == shape
    # chunking does not change the numbers beyond rounding
    alone = dgmm.GaussianMixture(3, **common).fit(blobs)
    np.testing.assert_allclose(alone.covariances_, fitted.covariances_, rtol=1e-7, atol=1e-9)
    assert fitted.predict(blobs).shape == (600,)
    assert np.isfinite(fitted.score(X))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("model", ["EVE", "VEV", "VEI"])
def test_float32_missing_values_and_minibatch(blobs, model):
    start = dgmm.GaussianMixture(3, covariance_type=model, random_state=2, max_iter=0).fit(blobs)
    init = dict(weights_init=start.weights_, means_init=start.means_,
                precisions_init=start.precisions_)
    double = dgmm.GaussianMixture(3, covariance_type=model, tol=1e-9, **init).fit(blobs)
    single = dgmm.GaussianMixture(3, covariance_type=model, tol=1e-9, **init).fit(
        da.from_array(blobs.astype(np.float32), chunks=(200, 3)))
    assert single.lower_bound_ == pytest.approx(double.lower_bound_, rel=1e-6)

    holes = blobs.copy()
    holes[np.random.default_rng(0).random(holes.shape) < 0.05] = np.nan
    marginal = dgmm.GaussianMixture(3, covariance_type=model, random_state=2,
                                    nonfinite="marginalize").fit(holes)
    assert structure_holds(model, marginal.covariances_, 3, 3)
    assert np.all(np.diff(marginal.lower_bounds_) >= -1e-9)
    assert np.isfinite(marginal.score_samples(holes)).all()

    stepwise = dgmm.MiniBatchGaussianMixture(3, covariance_type=model, random_state=2,
                                             batch_size=100, max_iter=3).fit(
        da.from_array(blobs, chunks=(300, 3)))
    assert structure_holds(model, stepwise.covariances_, 3, 3)
    assert stepwise.score(blobs) > double.score(blobs) - 0.05


@pytest.mark.parametrize("model", ["EVE", "VVE", "VEE"])
def test_resume_is_bit_identical_and_saved_models_come_back(blobs, model, tmp_path):
    data = engine.prepare(blobs, chunk_rows=128)
    settings = em.EMSettings(3, model, tol=1e-8, max_iter=15, n_init=2, init_params="kmeans")
    states = []
    full = em.fit_em(data, settings, seed=5, callback=states.append)
    arrays, meta = states[len(states) // 2].state.to_record()
    resumed = em.fit_em(data, settings, seed=5,
                        resume=em.EMState.from_record(arrays, dict(meta)))
    for a, b in zip(resumed.params.to_arrays().values(), full.params.to_arrays().values(),
                    strict=True):
        np.testing.assert_array_equal(a, b)

    fitted = dgmm.GaussianMixture(3, covariance_type=model, random_state=0).fit(blobs)
    save_model(tmp_path / "m", fitted)
    loaded = dgmm.load_model(tmp_path / "m")
    assert loaded.covariance_type == model
    for name in ("covariances_", "volumes_", "shapes_", "orientations_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(fitted, name))
    np.testing.assert_array_equal(loaded.predict_proba(blobs), fitted.predict_proba(blobs))


def test_icl_is_bic_minus_twice_the_classification_log_likelihood(blobs):
    fitted = dgmm.GaussianMixture(3, covariance_type="EEV", random_state=0).fit(blobs)
    expected = fitted.bic(blobs) - 2 * np.log(fitted.predict_proba(blobs).max(axis=1)).sum()
    assert fitted.icl(blobs) == pytest.approx(expected, rel=1e-12)
    assert fitted.icl(da.from_array(blobs, chunks=(100, 3))) == pytest.approx(expected,
                                                                                rel=1e-12)


def test_selection_over_all_fourteen_by_icl(blobs):
    X = da.from_array(blobs[:300, :2], chunks=(100, 2))
    by_bic = dgmm.GaussianMixtureSelection([1, 2, 3], covariance_type="all",
                                           random_state=0).fit(X)
    by_icl = dgmm.GaussianMixtureSelection([1, 2, 3], covariance_type="all", criterion="icl",
                                           random_state=0).fit(X)
    assert set(by_icl.results_.covariance_type) == set(MCLUST_MODELS)
    assert by_icl.n_passes_ == by_bic.n_passes_ + 1  # ICL: one more pass for all
    table = by_icl.results_.dropna(subset=["icl"])
    assert len(table) == 3 * 14
    best = table.loc[table.icl.idxmin()]
    assert by_icl.best_params_ == {"n_components": best.n_components,
                                   "covariance_type": best.covariance_type}
    chosen = by_icl.best_estimator_
    assert chosen.icl(X) == pytest.approx(best.icl, rel=1e-9)
    np.testing.assert_array_equal(by_bic.results_.bic, by_icl.results_.bic)


def test_workflow_schema_takes_the_fourteen_and_all(tmp_path, monkeypatch):
    from dgmm.workflow.loading import load_workflow

    monkeypatch.chdir(tmp_path)
    write(tmp_path, """\
        data: {source: zarr, path: data/x.zarr}
        steps: [fit]
        select: {n_components: [1, 2], covariance_type: all, criterion: icl}
        """)
    workflow = load_workflow("workflows/w.yaml", [])
    assert workflow.select.covariance_types() == list(MCLUST_MODELS)
    assert workflow.select.criterion == "icl"
    write(tmp_path, """\
        data: {source: zarr, path: data/x.zarr}
        steps: [fit]
        model: {n_components: 2, covariance_type: VEV}
        """)
    assert load_workflow("workflows/w.yaml", []).model.covariance_type == "VEV"


def test_mclust_plots(blobs):
    X = blobs[:300, :2]
    selection = dgmm.GaussianMixtureSelection([1, 2], covariance_type=["EII", "VEV"],
                                              random_state=0).fit(X)
    fig = plots.mclust_bic_figure(selection.results_)
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines[:2]] == ["EII", "VEV"]
    assert lines[1].get_marker() == "$\\mathrm{VEV}$"
    best = -selection.results_.groupby(["covariance_type", "n_components"]).bic.min()
    circled = lines[2]
    assert (circled.get_xdata()[0], circled.get_ydata()[0]) == (best.idxmax()[1], best.max())
    picture = plots.classification_figure(selection.best_estimator_.params_, X)
    assert len(picture.axes) == 2
    uncertainty = picture.axes[1].collections[0].get_array()
    proba = selection.best_estimator_.predict_proba(X)
    np.testing.assert_allclose(np.sort(uncertainty), np.sort(1 - proba.max(axis=1)))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_inner_iterations_hitting_their_cap_are_logged(blobs, monkeypatch, caplog):
    monkeypatch.setattr(structured, "INNER_MAX_ITER", 1)
    monkeypatch.setattr(structured, "INNER_TOL", 0.0)
    with caplog.at_level("DEBUG", logger="dgmm.engine"):
        dgmm.GaussianMixture(3, covariance_type="EVE", random_state=0, max_iter=3).fit(blobs)
    assert "stopped after 1 inner iterations" in caplog.text


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_bic_matches_mclust_on_faithful_and_selects_its_model():
    """dgmm's best BIC over its restarts against mclust's mclustBIC (stored by
    tests/fixtures/mclust/make_fixtures.R) on faithful for every model and K <= 3; the
    whole table over four data sets and K <= 9 is benchmarks/bench_mclust.py's."""
    import json

    import pandas as pd
    from helpers import REPO

    fixtures = REPO / "tests" / "fixtures" / "mclust"
    reference = json.loads((fixtures / "bic.json").read_text())["faithful"]
    X = pd.read_csv(fixtures / "faithful.csv").to_numpy(np.float64)
    selection = dgmm.GaussianMixtureSelection([1, 2, 3], covariance_type="all", n_init=2,
                                              tol=1e-5, max_iter=1000, random_state=0,
                                              seed_from_other_types=1).fit(X)
    ours = -selection.results_.groupby(["covariance_type", "n_components"]).bic.min()
    cells = [(model, k, ours[(model, k)], column[k - 1])
             for model, column in zip(reference["models"], reference["bic"], strict=True)
             for k in (1, 2, 3) if column[k - 1] is not None]
    within = [ours_bic >= theirs - 0.5 for _, _, ours_bic, theirs in cells]
    assert len(cells) == 42 and sum(within) >= 0.95 * len(cells), [
        c for c, ok in zip(cells, within, strict=True) if not ok]
    assert selection.best_params_ == {"n_components": 3, "covariance_type": "EEE"}
    assert ours.max() >= reference["best_bic"] - 0.5


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_seeding_from_other_types_adds_runs_and_keeps_the_better_end(blobs):

    X = blobs[:300, :2]
    common = dict(covariance_type=["EII", "VEV", "EVE"], random_state=0, n_init=1)
    plain = dgmm.GaussianMixtureSelection([2, 3], **common).fit(X)
    seeded = dgmm.GaussianMixtureSelection([2, 3], seed_from_other_types=2, **common).fit(X)
    # per candidate: 2 other types at its K, and the neighbouring K merged or split
    assert len(plain.results_) == 6 and len(seeded.results_) == 6 + 6 * 3
    first = seeded.results_[seeded.results_.restart == 0].reset_index(drop=True)
    np.testing.assert_array_equal(first.lower_bound, plain.results_.lower_bound)
    best = seeded.results_.groupby(["n_components", "covariance_type"]).lower_bound.max()
    chosen = seeded.best_params_
    assert seeded.best_estimator_.lower_bound_ == best[(chosen["n_components"],
                                                        chosen["covariance_type"])]
    assert seeded.n_passes_ > plain.n_passes_


def test_merged_and_split_starts_keep_the_mixtures_moments(blobs):
    from dgmm.estimators import seeding

    fitted = dgmm.GaussianMixture(3, covariance_type="VVV", random_state=0).fit(blobs)
    params = fitted.params_
    mean = params.weights @ params.means
    second = np.einsum("k,kij->ij", params.weights, params.covariances + np.einsum(
        "ki,kj->kij", params.means - mean, params.means - mean))
    weights, means, covariances = seeding.merged_closest(params)
    assert weights.shape == (2,) and weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(weights @ means, mean, atol=1e-12)
    merged = np.einsum("k,kij->ij", weights, covariances + np.einsum(
        "ki,kj->kij", means - mean, means - mean))
    np.testing.assert_allclose(merged, second, rtol=1e-10)  # moments matched
    weights, means, covariances = seeding.split_widest(params)
    assert weights.shape == (4,) and weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(weights @ means, mean, atol=1e-12)
