"""The pictures: BIC against K per covariance type and the scatter-plot matrix."""
import matplotlib
import numpy as np
import pandas as pd
from helpers import COVARIANCE_TYPES, random_covariances
from matplotlib.patches import Ellipse

from dgmm.core.params import GMMParams
from dgmm.workflow import plots


def table():
    rows = []
    for c, offset in (("full", 0.0), ("diag", 40.0)):
        for k in (1, 2, 4, 8):
            for restart in (0, 1):
                bic = 1000 - 100 * min(k, 4) + 5 * k + offset + restart
                rows.append({"n_components": k, "covariance_type": c, "restart": restart,
                             "bic": bic, "aic": bic - 1})
    return pd.DataFrame(rows)


def test_criterion_figure_draws_one_line_per_covariance_type(tmp_path):
    backend = matplotlib.get_backend()
    results = table()
    fig = plots.criterion_figure(results, "bic")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"full", "diag", "best: K=4, full"}
    for c in ("full", "diag"):
        expected = results[results.covariance_type == c].groupby("n_components").bic.min()
        np.testing.assert_array_equal(lines[c].get_xdata(), expected.index)
        np.testing.assert_array_equal(lines[c].get_ydata(), expected.values)
    np.testing.assert_array_equal(lines["best: K=4, full"].get_ydata(), [620.0])
    plots.save_figure(fig, tmp_path / "bic.png")
    assert (tmp_path / "bic.png").stat().st_size > 1000
    assert matplotlib.get_backend() == backend  # never switched


def mixture(covariance_type, k, d, separating):
    rng = np.random.default_rng(3)
    means = rng.normal(scale=0.01, size=(k, d))
    means[:, separating] += 10.0 * np.arange(k)[:, None]
    cov = random_covariances(covariance_type, k, d, seed=4)
    return GMMParams.from_covariances(np.full(k, 1 / k), means, cov, covariance_type)


def test_pairs_figure_draws_every_feature_up_to_six(tmp_path):
    for covariance_type in COVARIANCE_TYPES:
        params = mixture(covariance_type, 3, 4, [1])
        sample = np.random.default_rng(0).normal(size=(200, 4))
        fig = plots.pairs_figure(params, sample, labels=np.zeros(200, int),
                                 names=list("abcd"))
        axes = fig.axes
        assert len(axes) == 16
        for index, ax in enumerate(axes):
            ellipses = [p for p in ax.patches if isinstance(p, Ellipse)]
            diagonal = index // 4 == index % 4
            assert len(ellipses) == (0 if diagonal else 3 * len(plots.ELLIPSE_SIGMAS))
        assert "separate" not in fig._suptitle.get_text()
    # each ellipse is the 1 sd contour of the projected covariance
    full = params.family.full_covariances(params.covariances, 3, 4)
    ax = axes[1 * 4 + 0]  # row feature b, column feature a
    ellipse = [p for p in ax.patches if isinstance(p, Ellipse)][0]
    cov2 = full[0][np.ix_([0, 1], [0, 1])]
    np.testing.assert_allclose(ellipse.center, params.means[0, [0, 1]])
    np.testing.assert_allclose(sorted([ellipse.width, ellipse.height]),
                               2 * np.sqrt(np.linalg.eigvalsh(cov2)), rtol=1e-12)
    plots.save_figure(fig, tmp_path / "pairs.png")
    assert (tmp_path / "pairs.png").stat().st_size > 1000


def test_pairs_figure_keeps_the_features_that_separate_most():
    params = mixture("full", 3, 9, [0, 2, 3, 5, 7, 8])
    features, selected = plots.pairs_features(params)
    assert selected and features == [0, 2, 3, 5, 7, 8]
    sample = np.random.default_rng(0).normal(size=(100, 9))
    fig = plots.pairs_figure(params, sample, names=[f"f{j}" for j in range(9)])
    assert len(fig.axes) == 36
    title = fig._suptitle.get_text()
    assert "the 6 of 9 features that separate the components most: f0, f2, f3, f5, f7, f8" \
        in title
    assert [ax.get_xlabel() for ax in fig.axes[-6:]] == ["f0", "f2", "f3", "f5", "f7", "f8"]
