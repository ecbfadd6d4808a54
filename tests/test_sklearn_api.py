"""dgmm.GaussianMixture as a scikit-learn estimator: check_estimator, Pipeline, GridSearchCV,
clone, NotFittedError, ConvergenceWarning and scikit-learn's messages for initial parameters."""
import re
import warnings

import dask.array as da
import numpy as np
import pytest
import sklearn.exceptions
from helpers import COVARIANCE_TYPES
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._test_common.instance_generator import PER_ESTIMATOR_XFAIL_CHECKS
from sklearn.utils.estimator_checks import (
    check_param_validation,
    estimator_checks_generator,
    parametrize_with_checks,
)
from sklearn.utils.validation import check_is_fitted

import dgmm
from dgmm.errors import ConfigError, DataError

#: The only checks allowed to fail: those scikit-learn 1.9 itself expects its own
#: GaussianMixture to fail, declared in sklearn/utils/_test_common/instance_generator.py
#: (PER_ESTIMATOR_XFAIL_CHECKS[GaussianMixture]: check_array_api_mixed_inputs, an array-API
#: check that runs only for estimators whose tags claim array-API support; dgmm's do not,
#: so no check of dgmm's estimator is expected to fail).
EXPECTED_FAILED_CHECKS = dict(PER_ESTIMATOR_XFAIL_CHECKS.get(SkGaussianMixture, {}))

#: scikit-learn's own test configuration of GaussianMixture (n_init=2, max_iter=5: fast),
#: plus the other covariance families and the NaN-tolerant mode (whose tags allow NaN).
#: One component: with more, the random initialisation of a fit on repeated rows differs
#: from that of a fit on weighted rows, which check_sample_weight_equivalence compares
#: (EM itself treats weights as repetitions: see test_estimator).
CHECKED_ESTIMATORS = [
    dgmm.GaussianMixture(n_init=2, max_iter=5),
    *(dgmm.GaussianMixture(covariance_type=c, max_iter=5) for c in COVARIANCE_TYPES[1:]),
    dgmm.GaussianMixture(max_iter=5, nonfinite="drop"),
    dgmm.GaussianMixture(max_iter=5, nonfinite="marginalize"),
    dgmm.MiniBatchGaussianMixture(max_iter=5, batch_size=64),
    dgmm.BayesianGaussianMixture(max_iter=5),
    dgmm.BayesianGaussianMixture(covariance_type="spherical", max_iter=5, nonfinite="drop",
                                 weight_concentration_prior_type="dirichlet_distribution"),
    dgmm.MiniBatchBayesianGaussianMixture(max_iter=5, batch_size=64),
]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(CHECKED_ESTIMATORS,
                         expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_no_check_is_expected_to_fail():
    assert EXPECTED_FAILED_CHECKS, "scikit-learn declares expected failures for GaussianMixture"
    for estimator in CHECKED_ESTIMATORS:
        names = {getattr(check, "func", check).__name__
                 for _, check in estimator_checks_generator(estimator)}
        assert {"check_estimators_pickle", "check_estimators_unfitted"} <= names
        assert not names & set(EXPECTED_FAILED_CHECKS)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_parameter_validation_check():
    """scikit-learn runs this check on its own estimators (not in check_estimator): every
    constrained parameter given a value outside its constraints raises in fit."""
    check_param_validation("GaussianMixture", CHECKED_ESTIMATORS[0])
    check_param_validation("MiniBatchGaussianMixture", CHECKED_ESTIMATORS[-4])
    check_param_validation("BayesianGaussianMixture", CHECKED_ESTIMATORS[-2])
    check_param_validation("MiniBatchBayesianGaussianMixture", CHECKED_ESTIMATORS[-1])


def separated_blobs(n=400, d=2, k=3, seed=5):
    """Well separated blobs with their true labels."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10.0, size=(k, d)) + np.arange(k)[:, None] * 6.0
    labels = rng.integers(k, size=n)
    return centers[labels] + rng.normal(size=(n, d)), labels


def test_pipeline_with_a_scaler():
    X, truth = separated_blobs()
    X = X * [1.0, 50.0] + [0.0, 1e3]
    pipe = make_pipeline(StandardScaler(), dgmm.GaussianMixture(3, random_state=0)).fit(X)
    labels = pipe.predict(X)
    assert labels.shape == (X.shape[0],) and labels.dtype.kind == "i"
    assert adjusted_rand_score(truth, labels) == 1.0
    # the same as fitting the scaled data directly, and as scikit-learn's pipeline
    scaled = StandardScaler().fit_transform(X)
    direct = dgmm.GaussianMixture(3, random_state=0).fit(scaled)
    np.testing.assert_array_equal(labels, direct.predict(scaled))
    np.testing.assert_allclose(pipe.score_samples(X), direct.score_samples(scaled), rtol=1e-12)
    sk = make_pipeline(StandardScaler(), SkGaussianMixture(3, random_state=0)).fit(X)
    assert pipe.score(X) == pytest.approx(sk.score(X), rel=1e-6)


def bic_scorer(estimator, X, y=None):
    return -estimator.bic(X)


def test_grid_search_with_a_bic_scorer_finds_the_true_k_as_sklearn_does():
    X, _ = separated_blobs()
    grid = {"n_components": [1, 2, 3, 4]}
    ours = GridSearchCV(dgmm.GaussianMixture(random_state=0), grid, scoring=bic_scorer).fit(X)
    theirs = GridSearchCV(SkGaussianMixture(random_state=0), grid, scoring=bic_scorer).fit(X)
    assert ours.best_params_ == theirs.best_params_ == {"n_components": 3}
    assert isinstance(ours.best_estimator_, dgmm.GaussianMixture)
    # with one component and with the true K every fold reaches scikit-learn's optimum
    # (with too few or too many components the local optimum depends on the start)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"][[0, 2]],
                               theirs.cv_results_["mean_test_score"][[0, 2]], rtol=1e-6)


def test_clone_copies_parameters_and_no_fitted_state():
    X, _ = separated_blobs()
    means = X[:3].copy()
    model = dgmm.GaussianMixture(3, covariance_type="diag", means_init=means, tol=1e-5,
                                 split_every=4, nonfinite="drop", random_state=1).fit(X)
    twin = clone(model)
    assert twin.get_params().keys() == model.get_params().keys()
    for name, value in model.get_params().items():
        np.testing.assert_array_equal(getattr(twin, name), value)
    assert twin.means_init is not means  # deep-copied, as scikit-learn clones
    assert not hasattr(twin, "means_")
    with pytest.raises(sklearn.exceptions.NotFittedError):
        check_is_fitted(twin)
    np.testing.assert_array_equal(twin.fit(X).means_, model.means_)


def test_clone_shares_the_dask_client(cluster_client):
    X, _ = separated_blobs(200)
    model = dgmm.GaussianMixture(2, client=cluster_client, random_state=0)
    twin = clone(model)
    assert twin.client is cluster_client and model.client is cluster_client
    local = dgmm.GaussianMixture(2, random_state=0).fit(X)
    np.testing.assert_allclose(twin.fit(da.from_array(X, chunks=50)).means_, local.means_,
                               rtol=1e-10)


def test_not_fitted_error_before_fit():
    model = dgmm.GaussianMixture()
    for method in ("predict", "predict_proba", "score_samples", "score", "bic", "aic"):
        with pytest.raises(sklearn.exceptions.NotFittedError):
            getattr(model, method)(np.zeros((3, 2)))
    with pytest.raises(sklearn.exceptions.NotFittedError):
        check_is_fitted(model)
    model.fit(separated_blobs(50)[0])
    check_is_fitted(model)


def test_convergence_warning_is_sklearns():
    assert dgmm.estimators.ConvergenceWarning is sklearn.exceptions.ConvergenceWarning
    X, _ = separated_blobs()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=sklearn.exceptions.ConvergenceWarning)
        with pytest.raises(sklearn.exceptions.ConvergenceWarning, match="did not converge"):
            dgmm.GaussianMixture(3, max_iter=1, tol=0, random_state=0).fit(X)
        dgmm.GaussianMixture(3, random_state=0).fit(X)  # converges: no warning


def test_invalid_parameters_raise_sklearns_error():
    from sklearn.utils._param_validation import InvalidParameterError

    X = np.zeros((10, 2))
    for bad in ({"n_components": 0}, {"tol": -1.0}, {"covariance_type": "round"},
                {"random_state": "seed"}, {"split_every": 1}, {"nonfinite": "skip"},
                {"warm_start": "yes"}, {"verbose_interval": 0}):
        for method in ("fit", "fit_predict"):
            with pytest.raises(InvalidParameterError, match=f"'{next(iter(bad))}' parameter"):
                getattr(dgmm.GaussianMixture(**bad), method)(X)
    assert issubclass(InvalidParameterError, ValueError)


def init_cases(covariance_type, k=2, d=3):
    """(parameter, bad value, X) triples that scikit-learn rejects."""
    shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}
    good = {"full": np.stack([np.eye(d)] * k), "tied": np.eye(d), "diag": np.ones((k, d)),
            "spherical": np.ones(k)}[covariance_type]
    wrong_k = {"full": np.stack([np.eye(d)] * (k + 1)), "tied": np.eye(d + 1),
               "diag": np.ones((k + 1, d)), "spherical": np.ones(k + 1)}[covariance_type]
    negative = good.copy()
    negative[(0,) * negative.ndim] = -1.0
    assert good.shape == shape[covariance_type]
    return [
        ("weights_init", np.full(k + 1, 1 / (k + 1))),
        ("weights_init", np.full((k, 1), 1 / k)),
        ("weights_init", np.array([0.7, 0.6])),
        ("weights_init", np.array([1.5, -0.5])),
        ("means_init", np.zeros((k + 1, d))),
        ("means_init", np.zeros((k, d + 1))),
        ("means_init", np.zeros(k)),
        ("precisions_init", wrong_k),
        ("precisions_init", negative),
    ]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_initial_parameter_errors_read_like_sklearns(covariance_type):
    X = np.random.default_rng(0).normal(size=(20, 3))
    for name, value in init_cases(covariance_type):
        kwargs = dict(n_components=2, covariance_type=covariance_type, **{name: value})
        with pytest.raises(ValueError) as theirs:
            SkGaussianMixture(**kwargs).fit(X)
        with pytest.raises(ConfigError) as ours:
            dgmm.GaussianMixture(**kwargs).fit(X)
        message = str(ours.value)
        assert numbers_hidden(message).startswith(numbers_hidden(str(theirs.value))), name
        assert name in message  # and says which argument to fix
        if name == "weights_init" and value.min() < 0:
            # scikit-learn prints the minimum as "max value" and the maximum as "min value"
            assert "max value 1.50000, min value -0.50000" in message


def numbers_hidden(message: str) -> str:
    return re.sub(r"-?\d+\.\d{5}", "<number>", message)


def test_dask_input_keeps_lazy_outputs_and_checks_like_sklearn():
    X, _ = separated_blobs()
    Xd = da.from_array(X, chunks=(90, -1))
    model = dgmm.GaussianMixture(3, random_state=0).fit(Xd)
    assert model.n_features_in_ == 2
    for method in ("predict", "predict_proba", "score_samples"):
        lazy = getattr(model, method)(Xd)
        assert isinstance(lazy, da.Array) and lazy.chunks[0] == Xd.chunks[0]
        eager = getattr(model, method)(X)
        assert isinstance(eager, np.ndarray)
        np.testing.assert_allclose(lazy.compute(), eager, rtol=1e-12)
    with pytest.raises(DataError, match="X has 3 features, but GaussianMixture is expecting "
                                        "2 features as input"):
        model.predict(da.zeros((5, 3)))
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is expecting "
                                         "2 features as input"):
        model.predict(np.zeros((5, 3)))


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_pandas_feature_names_are_kept_and_dropped_by_a_dask_fit():
    import pandas as pd

    X, _ = separated_blobs()
    frame = pd.DataFrame(X, columns=["a", "b"])
    model = dgmm.GaussianMixture(3, random_state=0).fit(frame)
    assert list(model.feature_names_in_) == ["a", "b"]
    np.testing.assert_array_equal(model.predict(frame), model.predict(X))
    model.fit(da.from_array(X, chunks=100))
    assert not hasattr(model, "feature_names_in_")
