"""GaussianMixture against scikit-learn, closed forms and its own invariances."""
import warnings

import dask.array as da
import numpy as np
import pytest
from helpers import COVARIANCE_TYPES, ComputeCounter, make_blobs
from sklearn import datasets
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.utils._param_validation import InvalidParameterError

from dgmm import GaussianMixture
from dgmm.errors import ConfigError, DataError


def standardised(X):
    return (X - X.mean(0)) / X.std(0)


DATASETS = {
    "iris": lambda: standardised(datasets.load_iris().data),
    "wine": lambda: standardised(datasets.load_wine().data),
    "breast_cancer": lambda: standardised(datasets.load_breast_cancer().data)[:, :10],
    "blobs": lambda: make_blobs(1500, 4, 4, seed=21),
}


def initial_params(X, k, covariance_type, seed=0):
    """Deterministic initial parameters: data rows as means, the pooled precision."""
    rng = np.random.default_rng(seed)
    means = X[rng.choice(X.shape[0], k, replace=False)]
    var = X.var(0)
    prec = {
        "full": np.stack([np.diag(1 / var)] * k),
        "tied": np.diag(1 / var),
        "diag": np.tile(1 / var, (k, 1)),
        "spherical": np.full(k, 1 / var.mean()),
    }[covariance_type]
    return dict(weights_init=np.full(k, 1 / k), means_init=means, precisions_init=prec)


def fit_both(X, k, covariance_type, X_dgmm=None, client=None, **kw):
    init = initial_params(X, k, covariance_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SkGaussianMixture(k, covariance_type=covariance_type, **init, **kw).fit(X)
        dg = GaussianMixture(k, covariance_type=covariance_type, client=client, **init, **kw)
        dg.fit(X if X_dgmm is None else X_dgmm)
    return sk, dg


def assert_same_fit(sk, dg, rtol=1e-6, shift=0.0):
    assert dg.n_iter_ == sk.n_iter_
    assert dg.converged_ == sk.converged_
    assert dg.lower_bound_ == pytest.approx(sk.lower_bound_, rel=1e-8)
    np.testing.assert_allclose(dg.lower_bounds_, sk.lower_bounds_, rtol=1e-8)
    np.testing.assert_allclose(dg.weights_, sk.weights_, rtol=rtol)
    np.testing.assert_allclose(dg.means_ - shift, sk.means_, rtol=rtol, atol=rtol * 1e-3)
    scale = np.abs(sk.covariances_).max()
    np.testing.assert_allclose(dg.covariances_, sk.covariances_, rtol=rtol,
                               atol=rtol * 1e-3 * scale)
    np.testing.assert_allclose(dg.precisions_cholesky_, sk.precisions_cholesky_, rtol=1e-5,
                               atol=1e-9 * np.abs(sk.precisions_cholesky_).max())


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("name", DATASETS)
def test_same_answer_as_sklearn(name, covariance_type):
    X = DATASETS[name]()
    k = 3
    sk, dg = fit_both(X, k, covariance_type, X_dgmm=da.from_array(X, chunks=(97, -1)),
                      tol=1e-5, max_iter=300)
    assert_same_fit(sk, dg)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_answer_as_sklearn_on_a_cluster(cluster_client, covariance_type):
    X = DATASETS["blobs"]()
    sk, dg = fit_both(X, 4, covariance_type, X_dgmm=da.from_array(X, chunks=(256, -1)),
                      client=cluster_client, tol=1e-6, max_iter=200)
    assert_same_fit(sk, dg)
    labels = dg.predict(da.from_array(X, chunks=(256, -1)))
    np.testing.assert_array_equal(labels.compute(), sk.predict(X))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_far_from_the_origin(covariance_type):
    """Means near 1e6, unit spread: exact to 1e-6 (sklearn itself is off by ~4e-3 here)."""
    X = make_blobs(1200, 3, 3, seed=22, spread=3.0)
    assert_same_fit_when_shifted(X, covariance_type, offset=1e6, chunk_rows=200)


def assert_same_fit_when_shifted(X, covariance_type, offset, chunk_rows, max_iter=300):
    """dgmm on X + offset (Dask, row chunks) against scikit-learn on X, shifted back."""
    init = initial_params(X, 3, covariance_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SkGaussianMixture(3, covariance_type=covariance_type, tol=1e-6,
                               max_iter=max_iter, **init).fit(X)
        far_init = dict(init, means_init=init["means_init"] + offset)
        dg = GaussianMixture(3, covariance_type=covariance_type, tol=1e-6, max_iter=max_iter,
                             **far_init).fit(da.from_array(X + offset, chunks=(chunk_rows, -1)))
    assert_same_fit(sk, dg, shift=offset)


def fit_fixed(X, covariance_type, client=None, **kw):
    init = initial_params(np.asarray(X), 3, covariance_type, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GaussianMixture(3, covariance_type=covariance_type, tol=0, max_iter=15,
                               client=client, **init, **kw).fit(X)


def assert_params_close(a, b, rtol=1e-10):
    for x, y in zip(a.params_.to_arrays().values(), b.params_.to_arrays().values(), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * np.abs(y).max())
    assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=rtol)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("chunks", [1, 16, 150])
def test_result_does_not_depend_on_chunking(covariance_type, chunks):
    X = make_blobs(150, 2, 3, seed=23)
    reference = fit_fixed(X, covariance_type)  # NumPy input: one chunk
    got = fit_fixed(da.from_array(X, chunks=(chunks, -1)), covariance_type)
    assert_params_close(got, reference)


def test_result_does_not_depend_on_the_number_of_workers(cluster_client):
    from distributed import Client, LocalCluster

    X = da.from_array(make_blobs(3000, 3, 3, seed=24), chunks=(100, -1))
    two = fit_fixed(X, "full", client=cluster_client)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as one_worker, Client(one_worker) as client:
        one = fit_fixed(X, "full", client=client)
    local = fit_fixed(X, "full")
    assert_params_close(one, two, rtol=1e-10)
    assert_params_close(local, two, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_log_likelihood_never_decreases(covariance_type):
    X = make_blobs(800, 3, 4, seed=25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GaussianMixture(4, covariance_type=covariance_type, tol=0, max_iter=60,
                                init_params="random", random_state=1).fit(X)
    history = np.array(model.lower_bounds_)
    assert len(history) == 60
    drops = np.diff(history)
    assert (drops >= -1e-12 * np.abs(history[1:])).all(), drops.min()


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_collapsed_and_empty_components_never_give_nan(covariance_type):
    X = np.vstack([make_blobs(300, 2, 2, seed=26), np.full((40, 2), 25.0)])
    k = 4
    means = np.array([[0.0, 0.0], [3.0, 3.0], [25.0, 25.0], [1e4, -1e4]])  # last: empty
    model = GaussianMixture(k, covariance_type=covariance_type, means_init=means,
                            max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X)
    for arr in model.params_.to_arrays().values():
        assert np.isfinite(arr).all()
    assert np.isfinite(model.lower_bound_)
    np.testing.assert_allclose(model.means_[2], [25.0, 25.0], atol=1e-9)
    # component 3 never got any responsibility: treated as empty, kept where it was
    assert model.weights_[3] < 1e-12
    np.testing.assert_array_equal(model.means_[3], means[3])
    assert np.isfinite(model.predict_proba(X)).all()


def test_iris_tutorial_converges_to_the_best_sklearn_bound():
    X = datasets.load_iris().data[:, :2]
    model = GaussianMixture(3, random_state=0).fit(X)
    assert model.converged_
    best = max(SkGaussianMixture(3, random_state=s).fit(X).lower_bound_ for s in range(20))
    assert model.lower_bound_ >= best - 0.01
    assert model.predict(X).shape == (150,) and set(model.predict(X)) == {0, 1, 2}


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_init_method_is_as_good_as_sklearns(init_params):
    """Each method, made chunk-parallel, does as well as scikit-learn's own."""
    X = make_blobs(2000, 2, 3, seed=27, spread=8.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk_best = max(
            SkGaussianMixture(3, init_params=init_params, n_init=3, random_state=s,
                              max_iter=300).fit(X).lower_bound_
            for s in range(3)
        )
        model = GaussianMixture(3, init_params=init_params, n_init=3, random_state=0,
                                max_iter=300).fit(da.from_array(X, chunks=(300, -1)))
    assert model.lower_bound_ >= sk_best - 1e-3


def test_n_init_keeps_the_best_and_random_state_reproduces():
    X = make_blobs(600, 2, 5, seed=28)
    finals, starts = {}, {}

    def record(info):
        if info.phase == "init":
            starts[info.state.init_index] = np.array(info.state.params.means)
        finals[info.state.init_index] = info.state.lower_bound

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = GaussianMixture(5, init_params="random", n_init=4, random_state=7,
                            max_iter=20).fit(X, callback=record)
        b = GaussianMixture(5, init_params="random", n_init=4, random_state=7, max_iter=20).fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)
    assert a.lower_bound_ == b.lower_bound_
    assert len(set(finals.values())) > 1  # the restarts really differ
    assert a.lower_bound_ == max(finals.values())


def test_restarts_with_partial_initial_parameters_start_differently():
    X = make_blobs(600, 2, 3, seed=36)
    starts = {}

    def record(info):
        if info.phase == "init":
            starts[info.state.init_index] = np.array(info.state.params.covariances)

    means = X[:3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GaussianMixture(3, means_init=means, n_init=3, init_params="random",
                                random_state=0, max_iter=5).fit(X, callback=record)
    assert len(starts) == 3
    assert not np.array_equal(starts[0], starts[1]) and not np.array_equal(starts[1], starts[2])
    assert model.n_iter_ == 5


def test_sample_weight_equals_repeated_rows():
    X = make_blobs(200, 2, 2, seed=29)
    counts = np.random.default_rng(0).integers(1, 4, size=200)
    init = initial_params(X, 2, "full")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weighted = GaussianMixture(2, tol=0, max_iter=10, **init).fit(
            da.from_array(X, chunks=(64, -1)), sample_weight=counts)
        repeated = GaussianMixture(2, tol=0, max_iter=10, **init).fit(np.repeat(X, counts, 0))
    assert_params_close(weighted, repeated, rtol=1e-9)


@pytest.mark.filterwarnings("ignore:Best performing initialization did not converge")
@pytest.mark.parametrize("on_cluster", [False, True])
def test_lazy_sample_weight_matches_numpy_and_negative_ones_are_named(request, on_cluster):
    client = request.getfixturevalue("cluster_client") if on_cluster else None
    X = make_blobs(300, 2, 2, seed=31)
    w = np.random.default_rng(1).uniform(0.5, 2.0, 300)
    init = initial_params(X, 2, "diag")
    Xd = da.from_array(X, chunks=(70, -1))
    kwargs = dict(covariance_type="diag", tol=0, max_iter=5, client=client, **init)
    lazy = GaussianMixture(2, **kwargs).fit(Xd, sample_weight=da.from_array(w, chunks=50))
    eager = GaussianMixture(2, **kwargs).fit(Xd, sample_weight=w)
    assert_params_close(lazy, eager, rtol=1e-12)
    w[[150, 222]] = -1.0
    # the chunk whose task fails first is reported: either one
    with pytest.raises(DataError, match=r"1 negative value\(s\) in rows (140..209, the first "
                       r"at row 150|210..279, the first at row 222) \(-1.0\)"):
        GaussianMixture(2, **kwargs).fit(Xd, sample_weight=da.from_array(w, chunks=50))
    with pytest.raises(DataError, match="sample_weight sums to 0"):
        GaussianMixture(2, **kwargs).fit(Xd, sample_weight=da.zeros(300, chunks=50))
    for init_params in ("kmeans", "k-means++", "random_from_data", "random"):
        with pytest.raises(DataError, match="sample_weight sums to 0|has sample_weight 0"):
            GaussianMixture(2, init_params=init_params, random_state=0, client=client).fit(
                Xd, sample_weight=da.zeros(300, chunks=50))
    w[:] = 1.0
    w[77] = np.nan
    with pytest.raises(DataError, match=r"The data or their sample_weight hold 1 row\(s\) "
                       r"with NaN or inf values \(the first at row 77\)"):
        GaussianMixture(2, **kwargs).fit(Xd, sample_weight=da.from_array(w, chunks=50))


def test_dask_input_gives_lazy_outputs_with_input_chunks():
    X = make_blobs(500, 3, 3, seed=30)
    Xd = da.from_array(X, chunks=(120, -1))
    model = GaussianMixture(3, random_state=0).fit(Xd)
    for out, ref in [(model.predict(Xd), model.predict(X)),
                     (model.predict_proba(Xd), model.predict_proba(X)),
                     (model.score_samples(Xd), model.score_samples(X))]:
        assert isinstance(out, da.Array) and out.chunks[0] == Xd.chunks[0]
        np.testing.assert_allclose(out.compute(), ref, rtol=1e-12)
    assert model.score(Xd) == pytest.approx(model.score(X), rel=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_methods_match_sklearn_on_the_same_parameters(covariance_type):
    X = DATASETS["wine"]()
    sk, dg = fit_both(X, 3, covariance_type, tol=1e-4, max_iter=100)
    np.testing.assert_allclose(dg.score_samples(X), sk.score_samples(X), rtol=1e-7)
    np.testing.assert_allclose(dg.predict_proba(X), sk.predict_proba(X), atol=1e-7)
    np.testing.assert_array_equal(dg.predict(X), sk.predict(X))
    assert dg.bic(X) == pytest.approx(sk.bic(X), rel=1e-8)
    assert dg.aic(X) == pytest.approx(sk.aic(X), rel=1e-8)
    np.testing.assert_allclose(dg.precisions_, sk.precisions_, rtol=1e-5,
                               atol=1e-9 * np.abs(sk.precisions_).max())
    dg.random_state = sk.random_state = 3
    Xs, ys = dg.sample(50)
    Xr, yr = sk.sample(50)
    np.testing.assert_allclose(Xs, Xr, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(ys, yr)


def test_params_api_matches_sklearn():
    ours = set(GaussianMixture().get_params())
    theirs = set(SkGaussianMixture().get_params())
    assert theirs <= ours
    assert ours - theirs == {"client", "split_every", "nonfinite", "init_size"}
    for name in theirs:
        assert GaussianMixture().get_params()[name] == SkGaussianMixture().get_params()[name]
    model = GaussianMixture().set_params(n_components=4, covariance_type="diag")
    assert (model.n_components, model.covariance_type) == (4, "diag")
    with pytest.raises(ValueError, match="Invalid parameter 'bogus'"):
        model.set_params(bogus=1)


def test_warm_start_continues_from_the_previous_fit():
    X = make_blobs(500, 2, 3, seed=31)
    init = initial_params(X, 3, "full")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        straight = GaussianMixture(3, tol=0, max_iter=10, **init).fit(X)
        warm = GaussianMixture(3, tol=0, max_iter=4, warm_start=True, **init).fit(X)
        warm.set_params(max_iter=6).fit(X)
    assert_params_close(warm, straight, rtol=1e-12)


def test_fit_predict_equals_fit_then_predict():
    X = make_blobs(400, 2, 3, seed=32)
    a = GaussianMixture(3, random_state=0)
    labels = a.fit_predict(X)
    np.testing.assert_array_equal(labels, a.predict(X))


@pytest.mark.parametrize(
    "kwargs, X, error, match",
    [
        ({"n_components": 5}, np.zeros((4, 2)), DataError, "n_samples >= n_components"),
        ({}, np.zeros(10), DataError, "Expected 2D array, got 1D array"),
        ({}, da.zeros(10, chunks=5), DataError, "Expected a 2-D array"),
        ({}, da.zeros((1, 3), chunks=1), DataError, r"1 sample\(s\)"),
        ({"covariance_type": "round"}, np.zeros((10, 2)), InvalidParameterError,
         "'covariance_type' parameter of GaussianMixture must be a str among"),
        ({"n_components": 0}, np.zeros((10, 2)), InvalidParameterError,
         r"'n_components' parameter of GaussianMixture must be an int in the range \[1, inf\)"),
        ({"reg_covar": -1.0}, np.zeros((10, 2)), InvalidParameterError, "reg_covar"),
        ({"init_params": "bad"}, np.zeros((10, 2)), InvalidParameterError, "init_params"),
        ({"split_every": 1}, np.zeros((10, 2)), InvalidParameterError, "split_every"),
        ({"nonfinite": "skip"}, np.zeros((10, 2)), InvalidParameterError, "nonfinite"),
        ({"n_components": 2, "weights_init": [0.5, 0.6]}, np.zeros((10, 2)), ConfigError,
         "'weights' should be normalized"),
        ({"n_components": 2, "means_init": np.zeros((3, 2))}, np.zeros((10, 2)), ConfigError,
         r"'means' should have the shape of \(2, 2\), but got \(3, 2\)"),
        ({"n_components": 2, "covariance_type": "full",
          "precisions_init": np.stack([np.eye(2), -np.eye(2)])}, np.zeros((10, 2)),
         ConfigError, "'full precision' should be symmetric, positive-definite"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs, X, error, match):
    with pytest.raises(error, match=match):
        GaussianMixture(**kwargs).fit(X)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_rows_raise_in_the_first_pass_or_drop(bad, init_params):

    X = make_blobs(300, 2, 2, seed=33)
    X[[17, 200]] = bad
    Xd = da.from_array(X, chunks=(50, -1))
    with ComputeCounter() as counter, pytest.raises(
            DataError, match=r"2 row\(s\) with NaN or inf values \(the first at row 17\)"):
        GaussianMixture(2, random_state=0, init_params=init_params).fit(Xd)
    assert len([n for n in counter.sizes if n >= 6]) == 1  # found by the first full pass
    tight = dict(tol=1e-9, max_iter=1000)
    dropped = GaussianMixture(2, random_state=0, nonfinite="drop", init_params=init_params,
                              n_init=2, **tight).fit(Xd)
    clean = GaussianMixture(2, random_state=0, n_init=2, **tight).fit(np.delete(X, [17, 200], 0))
    assert dropped.n_nonfinite_ == 2
    # the same optimum as a fit on the clean rows (starting points differ by method)
    assert dropped.lower_bound_ == pytest.approx(clean.lower_bound_, abs=1e-7)
    # the score leaves the dropped rows out (and counts only the others)
    mean, n = dropped.score_and_count(Xd)
    assert n == 298 and mean == pytest.approx(dropped.score(np.delete(X, [17, 200], 0)))
    with pytest.raises(DataError, match="2 row"):
        GaussianMixture.from_params(dropped.params_).score(Xd)


def test_all_rows_nonfinite_is_a_data_error():
    X = np.full((50, 2), np.nan)
    for init_params in ("kmeans", "k-means++", "random_from_data", "random"):
        with pytest.raises(DataError, match="usable row|NaN or inf"):
            GaussianMixture(2, nonfinite="drop", init_params=init_params).fit(X)


def test_nonfinite_rows_at_predict_time():
    X = make_blobs(200, 2, 2, seed=34)
    model = GaussianMixture(2, random_state=0).fit(X)
    X[[3, 50]] = np.nan
    with pytest.raises(DataError,
                       match=r"2 row\(s\) with NaN or inf values \(the first at row 3\)"):
        model.predict(X)
    lazy = model.predict(da.from_array(X, chunks=(64, -1))).compute()
    proba = model.predict_proba(da.from_array(X, chunks=(64, -1))).compute()
    assert lazy[3] == -1 and lazy[50] == -1 and np.isnan(proba[[3, 50]]).all()
    clean = np.delete(np.arange(200), [3, 50])
    np.testing.assert_array_equal(lazy[clean], model.predict(X[clean]))
    model.set_params(nonfinite="drop")
    assert np.isnan(model.score_samples(X)[50])


def test_predict_before_fit_is_an_error():
    for method in ("predict", "predict_proba", "score_samples", "score", "bic", "aic"):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            getattr(GaussianMixture(), method)(np.zeros((3, 2)))
        with pytest.raises(NotFittedError, match="not fitted yet"):
            getattr(GaussianMixture(), method)(da.zeros((3, 2)))
    with pytest.raises(NotFittedError, match="not fitted yet"):
        GaussianMixture().sample(3)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_same_answer_as_sklearn_with_many_features(covariance_type, offset):
    """d = 36 takes the triangular E-step GEMM and the SYRK scatter (d >= 32)."""
    X = make_blobs(3000, 36, 3, seed=35, spread=2.0)
    assert_same_fit_when_shifted(X, covariance_type, offset, chunk_rows=700, max_iter=200)
