"""The report step: report.json and the PNG plots, with and without matplotlib.

Models are fitted for real on small Dask arrays; the PNGs are read back with matplotlib
and checked for content (not blank, one colour per component). The no-matplotlib path
runs in a subprocess where ``import matplotlib`` fails.
"""
from __future__ import annotations

import colorsys
import json
import os
import warnings

import numpy as np
import pytest
from helpers import COVARIANCE_TYPES, make_blobs

import dgmm
from dgmm import GaussianMixture
from dgmm.core.params import GMMParams
from dgmm.data import readers as dgmm_io
from dgmm.estimators.gaussian_mixture import ConvergenceWarning
from dgmm.workflow.report import full_covariances, principal_axes, sample_rows, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TAB10 = [  # matplotlib's tab10, the colours of components 0, 1, 2, ...
    (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (0x2C, 0xA0, 0x2C), (0xD6, 0x27, 0x28),
    (0x94, 0x67, 0xBD),
]


def _fit(n_features, *, n_components=3, covariance_type="full", n_samples=3000, seed=0):
    X = make_blobs(n_samples=n_samples, n_features=n_features, n_components=n_components,
                   seed=seed, spread=6.0)
    array, info = dgmm_io.from_array(X, target_chunk_bytes=n_features * 8 * 500)
    model = dgmm.GaussianMixture(n_components, covariance_type=covariance_type,
                                 random_state=seed, max_iter=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(array)
    return model, array, info


def _read_png(path):
    import matplotlib.image

    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_SIGNATURE, f"{path} is not a PNG file"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image[..., :3]


def _n_colours(rgb) -> int:
    return len(np.unique(rgb.reshape(-1, 3), axis=0))


def _hue_mask(rgb, colour, tolerance=0.02):
    """(H, W) bool: pixels with the hue of ``colour`` (alpha over white keeps the hue)."""
    flat = rgb.reshape(-1, 3).astype(np.float64)
    saturated = (flat.max(axis=1) - flat.min(axis=1)) > 0.15
    hues = np.zeros(len(flat))
    hues[saturated] = [colorsys.rgb_to_hsv(*p)[0] for p in flat[saturated]]
    target = colorsys.rgb_to_hsv(*(np.array(colour) / 255.0))[0]
    distance = np.abs(hues - target)
    distance = np.minimum(distance, 1 - distance)
    return (saturated & (distance < tolerance)).reshape(rgb.shape[:2])


def _assert_coloured_by_component(rgb, weights, means_2d=None):
    """Each component's colour covers a share of the coloured pixels in line with its
    weight (its points are drawn in it, not only its ellipses), and, given the means
    in plot coordinates, each colour sits where its component is."""
    k = len(weights)
    masks = [_hue_mask(rgb, TAB10[j]) for j in range(k)]
    counts = np.array([m.sum() for m in masks])
    assert _hue_mask(rgb, TAB10[k]).sum() < 20, "a colour of a component that is not there"
    shares = counts / counts.sum()
    assert np.all(shares > 0.5 * np.asarray(weights)), (
        f"colour shares {shares.round(3)} do not follow the component weights "
        f"{np.round(weights, 3)}: points are not coloured by their label"
    )
    if means_2d is not None:
        rows, cols = zip(*[np.argwhere(m).mean(axis=0) for m in masks], strict=True)
        # image columns grow with the first coordinate, image rows fall with the second
        assert np.array_equal(np.argsort(cols), np.argsort(means_2d[:, 0]))
        assert np.array_equal(np.argsort(rows), np.argsort(-means_2d[:, 1]))


# -------------------------------------------------------------------- with matplotlib


def test_report_2d_writes_json_and_plots(tmp_path):
    model, X, info = _fit(2)
    out = tmp_path / "report"

    written = write_report(str(out), model, X, info, score={"mean_loglik": -1.5})

    files = ["components.png", "loglik.png", "report.html", "report.json", "sample.npy"]
    assert sorted(written) == sorted(str(out / n) for n in files)
    assert sorted(os.listdir(out)) == files
    report = json.loads((out / "report.json").read_text())
    assert report["dgmm_version"] == dgmm.__version__
    assert report["plots"] == {"loglik": "loglik.png", "components": "components.png"}
    assert report["score"] == {"mean_loglik": -1.5}
    assert report["workflow"] is None
    # the data description
    assert report["data"] == info.to_dict()
    assert report["data"]["shape"] == [3000, 2]
    assert report["data"]["fingerprint"] == info.fingerprint
    # the model and its history
    m = report["model"]
    assert m["covariance_type"] == "full"
    assert (m["n_components"], m["n_features"]) == (3, 2)
    assert m["n_iter"] == model.n_iter_ and m["converged"] == model.converged_
    assert m["lower_bound"] == model.lower_bound_
    assert m["lower_bounds"] == model.lower_bounds_ and len(m["lower_bounds"]) >= 2
    assert np.array_equal(np.array(m["weights"]), model.weights_)
    assert np.array_equal(np.array(m["means"]), model.means_)
    assert np.array_equal(np.array(m["covariances"]), model.covariances_)
    assert m["n_nonfinite_rows_skipped"] == 0

    loglik = _read_png(out / "loglik.png")
    assert _n_colours(loglik) > 2  # white background, line, text
    components = _read_png(out / "components.png")
    assert _n_colours(components) > 10
    _assert_coloured_by_component(components, model.weights_, model.means_)


def test_report_5d_draws_a_scatter_plot_matrix(tmp_path, cluster_client):
    model, X, info = _fit(5, n_components=4, covariance_type="diag")
    out = tmp_path / "report"

    written = write_report(str(out), model, X, info, client=cluster_client)

    assert len(written) == 5  # report.json, .html, sample.npy, loglik.png, components.png
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["n_features"] == 5 and report["model"]["covariance_type"] == "diag"
    assert np.array(report["model"]["means"]).shape == (4, 5)
    assert report["data"]["shape"] == [3000, 5]
    components = _read_png(out / "components.png")
    assert components.shape[0] > 1000 and components.shape[1] > 1000  # 5 x 5 panels
    _assert_coloured_by_component(components, model.weights_, None)
    assert _n_colours(_read_png(out / "loglik.png")) > 2


@pytest.mark.parametrize("covariance_type", ["tied", "spherical"])
def test_report_of_model_without_history_skips_only_the_loglik_plot(tmp_path,
                                                                     covariance_type):
    fitted, X, _ = _fit(2, covariance_type=covariance_type)
    model = dgmm.GaussianMixture.from_params(fitted.params_)  # e.g. built from parameters
    assert model.lower_bounds_ == []

    written = write_report(str(tmp_path), model, X, None)

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["plots"] == {"components": "components.png"}
    assert report["data"] is None
    assert report["model"]["lower_bounds"] == [] and report["model"]["n_iter"] == 0
    assert not (tmp_path / "loglik.png").exists()
    assert sorted(written) == sorted(str(tmp_path / n) for n in (
        "report.json", "components.png", "report.html", "sample.npy"))
    assert _n_colours(_read_png(tmp_path / "components.png")) > 10


def test_report_overwrites_and_leaves_no_temporary_files(tmp_path):
    model, X, info = _fit(2)
    write_report(str(tmp_path), model, X, info, score={"run": 1})
    write_report(str(tmp_path), model, X, info, score={"run": 2})

    assert sorted(os.listdir(tmp_path)) == ["components.png", "loglik.png", "report.html",
                                            "report.json", "sample.npy"]
    assert json.loads((tmp_path / "report.json").read_text())["score"] == {"run": 2}


# ----------------------------------------------------------------- without matplotlib

# ------------------------------------------------------------------- principal axes


def _mixture(covariance_type, seed=3):
    """K=3 components in d=4 with a clear spread (distinct total-covariance eigenvalues)."""
    rng = np.random.default_rng(seed)
    k, d = 3, 4
    weights = np.array([0.5, 0.3, 0.2])
    means = rng.normal(scale=3.0, size=(k, d)) * np.array([3.0, 1.5, 0.6, 0.2])
    if covariance_type == "full":
        a = rng.normal(size=(k, d, d)) * 0.5
        cov = a @ np.transpose(a, (0, 2, 1)) + np.eye(d) * 0.3
    elif covariance_type == "tied":
        a = rng.normal(size=(d, d)) * 0.5
        cov = a @ a.T + np.eye(d) * 0.3
    elif covariance_type == "diag":
        cov = rng.uniform(0.2, 2.0, size=(k, d))
    else:
        cov = rng.uniform(0.2, 2.0, size=k)
    return GMMParams.from_covariances(weights, means, cov, covariance_type)


def _closed_form_total_covariance(params):
    covs = full_covariances(params)
    w, mu = params.weights, params.means
    mean = w @ mu
    second = np.einsum("k,kij->ij", w, covs) + np.einsum("k,ki,kj->ij", w, mu, mu)
    return second - np.outer(mean, mean)


def _draw(params, n, seed=0):
    rng = np.random.default_rng(seed)
    covs = full_covariances(params)
    labels = rng.choice(params.n_components, size=n, p=params.weights)
    out = np.empty((n, params.n_features))
    for k in range(params.n_components):
        rows = labels == k
        out[rows] = rng.multivariate_normal(params.means[k], covs[k], size=rows.sum())
    return out


def _same_axes(a, b, atol):
    """Columns equal up to sign."""
    return all(min(np.abs(a[:, j] - b[:, j]).max(), np.abs(a[:, j] + b[:, j]).max()) < atol
               for j in range(a.shape[1]))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_principal_axes_are_the_main_eigenvectors_of_the_total_covariance(covariance_type):
    params = _mixture(covariance_type)

    axes = principal_axes(params)

    assert axes.shape == (4, 2)
    assert np.allclose(axes.T @ axes, np.eye(2), atol=1e-12)
    # closed form sum_k pi_k (Sigma_k + mu_k mu_k^T) - mu mu^T
    total = _closed_form_total_covariance(params)
    values, vectors = np.linalg.eigh(total)
    assert values[-1] > 1.2 * values[-2] > 1.44 * values[-3]  # axes well defined
    assert _same_axes(axes, vectors[:, ::-1][:, :2], atol=1e-10)
    # and against a large sample of the mixture
    sample = _draw(params, 400_000)
    assert np.allclose(np.cov(sample, rowvar=False), total, rtol=0.02, atol=0.05)
    _, sample_vectors = np.linalg.eigh(np.cov(sample, rowvar=False))
    assert _same_axes(axes, sample_vectors[:, ::-1][:, :2], atol=0.02)
    # the first axis carries the most variance of any unit direction
    projected = np.var(sample @ axes, axis=0)
    assert projected[0] > projected[1] > np.var(sample @ vectors[:, -3])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_full_covariances_expand_every_covariance_type(covariance_type):
    params = _mixture(covariance_type)
    covs = full_covariances(params)
    assert covs.shape == (3, 4, 4)
    c = params.covariances
    expected = {
        "full": lambda: c,
        "tied": lambda: np.stack([c] * 3),
        "diag": lambda: np.stack([np.diag(row) for row in c]),
        "spherical": lambda: np.stack([np.eye(4) * v for v in c]),
    }[covariance_type]()
    assert np.array_equal(covs, expected)


# ------------------------------------------------------------------------- sampling


def test_sample_rows_takes_finite_rows_from_a_few_chunks():
    import dask.array as da

    X = np.arange(100_000 * 2, dtype=np.float64).reshape(100_000, 2)
    X[5, 0] = np.nan
    Xd = da.from_array(X, chunks=(1_000, 2))  # 100 chunks

    sample = sample_rows(Xd, max_rows=4_000)

    assert 0 < len(sample) <= 4_000
    assert np.isfinite(sample).all()
    rows = (sample[:, 0] // 2).astype(int)
    assert np.array_equal(X[rows], sample)  # real rows of X
    assert len(np.unique(rows // 1_000)) == 8  # from 8 chunks spread over the data
    assert rows.min() < 1_000 and rows.max() >= 99_000


def test_sample_rows_of_numpy_array_drops_non_finite_rows():
    X = np.arange(2_000, dtype=np.float64).reshape(1_000, 2)
    X[::7, 1] = np.inf

    sample = sample_rows(X, max_rows=500)

    assert np.isfinite(sample).all()


def test_drawing_leaves_the_process_matplotlib_backend_alone(tmp_path):
    import matplotlib

    from dgmm.workflow.report import plot_components, plot_loglik

    before = matplotlib.rcParams["backend"]
    matplotlib.rcParams["backend"] = "svg"  # what a notebook's user may have chosen
    try:
        X = make_blobs(300, 2, 2, seed=5)
        model = GaussianMixture(2, random_state=0).fit(X)
        plot_loglik(model.lower_bounds_, str(tmp_path / "loglik.png"))
        plot_components(model.params_, X, str(tmp_path / "components.png"))
        assert matplotlib.rcParams["backend"] == "svg"
        assert (tmp_path / "loglik.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / "components.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        matplotlib.rcParams["backend"] = before
