"""report.html without a browser: the page references nothing outside itself, the model
table, the separating directions against Fisher's discriminant, the one-pass score
summary against NumPy on every row, drift and its thresholds."""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from helpers import make_blobs
from pydantic import ValidationError

import dgmm
from dgmm.core import kernels
from dgmm.core.directions import separating_directions
from dgmm.core.params import GMMParams
from dgmm.data import readers
from dgmm.errors import DriftError
from dgmm.estimators.gaussian_mixture import ConvergenceWarning
from dgmm.workflow import drift, html_report
from dgmm.workflow.report import rebuild_page, write_report


@pytest.fixture(scope="module")
def fitted():
    X = make_blobs(n_samples=3000, n_features=3, n_components=3, seed=2, spread=6.0)
    array, info = readers.from_array(X, target_chunk_bytes=3 * 8 * 400)
    model = dgmm.GaussianMixture(3, random_state=0, max_iter=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(array)
    return X, array, info, model


def external_references(page: str) -> list[str]:
    """Every reference that leaves the file: src/href that are not data: URIs or
    fragments, CSS url() and @import, scripts, linked style sheets."""
    found = []
    for attribute, value in re.findall(r'\b(src|href|srcset|action|poster)\s*=\s*"([^"]*)"',
                                       page, flags=re.I):
        if not (value.startswith("data:") or value.startswith("#")):
            found.append(f"{attribute}={value[:60]}")
    found += re.findall(r"url\(\s*['\"]?(?!data:)[^)]*\)", page, flags=re.I)
    found += re.findall(r"@import[^;]*", page, flags=re.I)
    found += re.findall(r"<script\b|<link\b|<iframe\b|<object\b|<embed\b", page, flags=re.I)
    return found


@pytest.fixture(scope="module")
def written(fitted, tmp_path_factory):
    """A report of shifted data against the model: (directory, training record)."""
    X, array, info, model = fitted
    training = drift.training_record(drift.summarize(array, model.params_), info)
    shifted = X + np.array([0.0, 0.0, 3.0])
    new, new_info = readers.from_array(shifted, target_chunk_bytes=3 * 8 * 400)
    directory = tmp_path_factory.mktemp("report")
    write_report(str(directory), model, new, new_info, training=training)
    return directory, training


def test_the_page_references_nothing_outside_itself(written):
    page = (written[0] / "report.html").read_text()
    assert external_references(page) == []
    assert "http://" not in page and "https://" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 5  # convergence, matrix, projection, uncertainty, shares
    for section in ("The run", "Convergence", "The model", "The components", "Predictions",
                    "Drift against the training data"):
        assert f">{section}</h2>" in page
    # the checker finds what it looks for
    assert external_references('<img src="https://x/y.png"><link rel=stylesheet href="a.css">'
                               '<style>@import "b.css"; p{background:url(c.png)}</style>')


def test_model_table_is_sorted_by_weight_with_volume_shape_orientation(fitted):
    _, _, _, model = fitted
    params = model.params_
    headers, rows = html_report.component_table(params)
    assert headers == ["component", "weight", "mean", "sd scale", "volume", "shape",
                       "orientation (first axis)"]
    order = [int(r[0]) for r in rows]
    assert order == list(np.argsort(-params.weights, kind="stable"))
    full = params.family.full_covariances(params.covariances, 3, 3)
    values, vectors = np.linalg.eigh(full[order[0]])
    expected = np.linalg.det(full[order[0]]) ** (1 / 6)
    assert float(rows[0][3]) == pytest.approx(expected, rel=1e-3)
    assert float(rows[0][4]) == pytest.approx(expected ** 2, rel=1e-3)  # lambda = det^(1/d)
    shape = [float(v) for v in rows[0][5].strip("[]").split(",")]
    np.testing.assert_allclose(shape, values[::-1] / expected ** 2, rtol=1e-3)
    axis = np.array([float(v) for v in rows[0][6].strip("[]").split(",")])
    assert abs(axis @ vectors[:, -1]) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("name", ["EEE", "VII", "EVI"])
def test_model_table_marks_the_parts_a_structured_model_shares(name):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    shared = a @ a.T + np.eye(3)
    full = np.stack([shared * s for s in (1.0, 1.0, 1.0)]) if name == "EEE" else np.stack(
        [np.diag(rng.uniform(0.5, 2.0, 3)) for _ in range(3)])
    if name == "VII":
        full = np.stack([np.eye(3) * s for s in (0.5, 1.0, 2.0)])
    from dgmm.core.families import family

    covariances = family(name).from_full(full)
    params = GMMParams.from_covariances([0.5, 0.3, 0.2], rng.normal(size=(3, 3)),
                                        covariances, name)
    headers, rows = html_report.component_table(params)
    shared_parts = {"EEE": {"volume", "shape", "orientation"}, "VII": {"shape", "orientation"},
                    "EVI": {"volume", "orientation"}}[name]
    for part in ("volume", "shape", "orientation"):
        header = next(h for h in headers if h.startswith(part))
        assert ("(shared)" in header) == (part in shared_parts), (name, header)
        column = headers.index(header)
        cells = {row[column] for row in rows}
        assert (len(cells) == 1) == (part in shared_parts) or part == "orientation"


def test_separating_directions_are_fishers_discriminant_for_equal_covariances():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 4))
    shared = a @ a.T + 4 * np.eye(4)
    means = np.array([[0.0, 1.0, 2.0, 0.0], [3.0, -1.0, 0.5, 2.0]])
    params = GMMParams.from_covariances([0.3, 0.7], means, np.stack([shared, shared]), "full")
    values, directions = separating_directions(params)
    fisher = np.linalg.solve(shared, means[1] - means[0])
    fisher /= np.linalg.norm(fisher)
    assert abs(directions[:, 0] @ fisher) == pytest.approx(1.0, abs=1e-10)
    assert values[0] > 0.01 and np.all(np.abs(values[1:]) < 1e-10)
    assert np.allclose(np.linalg.norm(directions, axis=0), 1.0)
    # the kernel's eigenvalue: B S^-1 B v = lambda S v along Fisher's direction
    centred = means - params.weights @ means
    between = (centred.T * params.weights) @ centred
    total = shared + between
    v = directions[:, 0]
    assert values[0] == pytest.approx(
        (v @ between @ np.linalg.solve(total, between) @ v) / (v @ total @ v), rel=1e-8)


def test_summary_matches_every_row_and_counts_below_a_threshold():
    X = make_blobs(n_samples=60_000, n_features=2, n_components=3, seed=5, spread=5.0)
    X[::997, 1] = np.nan
    params = GMMParams.from_covariances(
        [0.2, 0.5, 0.3], np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]]),
        np.stack([np.eye(2) * s for s in (1.0, 2.0, 3.0)]), "full")
    array, _ = readers.from_array(X, target_chunk_bytes=2 * 8 * 3000)
    threshold = -9.0
    summary = drift.summarize(array, params, below=threshold)
    finite = np.isfinite(X).all(axis=1)
    log_density, resp = kernels.log_prob_resp(X[finite], params)
    record = summary.to_json()
    assert record["n_rows"] == len(X) and record["n_scored"] == finite.sum()
    assert record["n_missing_entries"] == np.isnan(X).sum()
    assert record["mean_log_likelihood"] == pytest.approx(log_density.mean(), rel=1e-12)
    np.testing.assert_allclose(record["shares"], resp.mean(axis=0), rtol=1e-12)
    assert record["label_counts"] == np.bincount(resp.argmax(1), minlength=3).tolist()
    expected_hist, _ = np.histogram(1 - resp.max(axis=1), bins=drift.UNCERTAINTY_BINS,
                                    range=(0, 1))
    assert record["uncertainty_counts"] == expected_hist.tolist()
    assert record["n_below"] == (log_density < threshold).sum()
    for q in drift.QUANTILES:  # the rank of each estimated quantile, within 2% of q
        rank = (log_density < record["log_density_quantiles"][f"{q:g}"]).mean()
        assert abs(rank - q) <= 0.02 * min(q, 1 - q) + 1.5 / len(log_density), q


def test_drift_and_its_thresholds(fitted):
    X, array, info, model = fitted
    training = drift.training_record(drift.summarize(array, model.params_), info)
    log_density = kernels.score_samples(X, model.params_)
    assert 0.008 <= (log_density < training["anomaly_threshold"]).mean() <= 0.012
    same = drift.summarize(array, model.params_, below=training["anomaly_threshold"])
    unchanged = drift.compare(training, same.to_json())
    assert unchanged["log_likelihood_drop"] == pytest.approx(0.0, abs=1e-12)
    assert unchanged["max_share_change"] == pytest.approx(0.0, abs=1e-12)
    assert 0.008 <= unchanged["anomaly_share"] <= 0.012
    thresholds = drift.DriftThresholds(max_log_likelihood_drop=0.5, max_share_change=0.05,
                                       max_anomaly_share=0.05)
    assert drift.breaches(unchanged, thresholds) == []

    moved = X[X[:, 0] > np.median(X[:, 0])] + 0.5
    new, _ = readers.from_array(moved, target_chunk_bytes=3 * 8 * 400)
    current = drift.summarize(new, model.params_, below=training["anomaly_threshold"])
    shifted = drift.compare(training, current.to_json())
    new_density = kernels.score_samples(moved, model.params_)
    assert shifted["n_anomalies"] == (new_density < training["anomaly_threshold"]).sum()
    assert shifted["log_likelihood_drop"] == pytest.approx(
        training["mean_log_likelihood"] - new_density.mean(), rel=1e-10)
    found = drift.breaches(shifted, thresholds)
    assert len(found) >= 2
    with pytest.raises(DriftError, match=r"monitor\.max_share_change=0\.05.*report "
                                         r"\(here\)") as caught:
        drift.check(shifted, thresholds, "here")
    assert caught.value.exit_code == 9
    with pytest.raises(ValidationError, match="greater than 0"):
        drift.DriftThresholds(max_share_change=0)
    with pytest.raises(ValidationError, match="Extra inputs"):
        drift.DriftThresholds(max_drop=1.0)


def test_rebuild_from_the_report_directory_and_from_the_model(fitted, written, tmp_path):
    from dgmm.data.model_io import save_model

    model = fitted[3]
    directory, training = written
    first = (directory / "report.html").read_text()
    (directory / "report.html").unlink()
    assert rebuild_page(str(directory)) == str(directory / "report.html")
    again = (directory / "report.html").read_text()
    strip = re.compile(r'src="data:[^"]+"|\d{4}-\d\d-\d\dT[\d:]+Z')
    assert strip.sub("", again) == strip.sub("", first)
    assert "Drift against the training data" in again

    save_model(tmp_path / "model", model, extra={"training": training})
    target = rebuild_page(str(tmp_path / "model"))
    with open(target) as fh:
        page = fh.read()
    assert external_references(page) == []
    assert f"{training['shares'][0]:.4f}" in page and "No data sample was kept" in page
    assert json.loads((tmp_path / "model" / "model.json").read_text())["training"] == training
    with pytest.raises(dgmm.errors.ConfigError, match="Nothing to build a report from"):
        rebuild_page(str(tmp_path))


def test_convergence_curves_from_the_metrics_mark_the_chosen_restart():
    from types import SimpleNamespace

    from dgmm.workflow.report import convergence_curves
    from dgmm.workflow.report_plots import convergence_figure

    metrics = [{"init": i, "iteration": t, "lower_bound": -5.0 + i + t / 10}
               for t in (1, 2, 3) for i in (1, 0)]
    metrics.append({"init": 0, "iteration": None, "lower_bound": None})  # ignored
    model = SimpleNamespace(lower_bounds_=[-3.9, -3.8, -3.7])  # restart 2's history
    curves = convergence_curves(model, metrics)
    assert [c["label"] for c in curves] == ["restart 1", "restart 2"]
    assert [c["best"] for c in curves] == [False, True]
    assert curves[0]["values"] == pytest.approx([-4.9, -4.8, -4.7])
    # no metrics (or none that match): the chosen history alone
    assert convergence_curves(model, None) == [
        {"label": "chosen fit", "values": [-3.9, -3.8, -3.7], "best": True}]

    grid = [{"n_components": k, "covariance_type": "full", "init": i, "iteration": t,
             "lower_bound": -k - i - 1 / t} for k in (1, 2) for i in (0, 1) for t in (1, 2)]
    selection = SimpleNamespace(best_params_={"n_components": 2, "covariance_type": "full"})
    chosen = SimpleNamespace(lower_bounds_=[-3.0, -2.5])  # K=2 restart 1
    curves = convergence_curves(chosen, grid, selection)
    assert [c["label"] for c in curves if c["best"]] == ["K=2 full restart 1"]
    legend = [t.get_text() for t in convergence_figure(curves).axes[0].get_legend().get_texts()]
    assert legend == ["K=1 full", "K=2 full restart 1 (chosen)", "K=2 full"]
