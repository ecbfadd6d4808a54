"""report.html in a real browser, and model monitoring end to end.

A grid workflow fits, predicts, scores and reports; headless Chromium (Debian's
``chromium``, installed by .ci/run) renders the page: the text it shows names the
chosen number of components, the log-likelihood and every K of the grid, and its
screenshot is a picture, not a blank page. Then new, shifted rows are scored against the
saved model: by a workflow without a fit step (drift past its monitor thresholds exits
with code 9) and by ``dgmm predict``; ``dgmm report`` rebuilds the page from the model and
``dgmm inspect`` shows the grid's checkpoint.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml
from helpers import CHROMIUM, browser, make_blobs

from dgmm.cli import main
from dgmm.core import kernels
from dgmm.data.model_io import load_params
from dgmm.workflow.loading import load_workflow
from dgmm.workflow.runner import run_workflow

INPROCESS_CLUSTER = {"kind": "local", "n_workers": 1, "threads_per_worker": 2,
                     "processes": False, "dashboard_address": None}
GRID = [1, 2, 3, 4]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor")
    X = make_blobs(n_samples=6000, n_features=2, n_components=3, seed=4, spread=7.0)
    np.save(root / "train.npy", X)
    rng = np.random.default_rng(1)
    new = X[rng.permutation(len(X))[:3000]]
    new[:600] += np.array([9.0, -9.0])  # a fifth of the rows move away from every component
    np.save(root / "new.npy", new)
    (root / "inproc.yaml").write_text(yaml.safe_dump(INPROCESS_CLUSTER))
    document = {
        "name": "grid-report",
        "data": {"source": "npy", "path": str(root / "train.npy"), "chunk_bytes": "16KiB"},
        "select": {"n_components": GRID, "covariance_type": ["full"]},
        "model": {"random_state": 0, "n_init": 2, "tol": 1e-4, "max_iter": 60},
        "cluster": INPROCESS_CLUSTER,
        "checkpoint": {"dir": str(root / "ckpt"), "every": 1, "keep": 2},
        "outputs": {"model": str(root / "model"), "predictions": str(root / "pred.zarr"),
                    "report": str(root / "report")},
        "steps": ["fit", "predict", "score", "report"],
    }
    (root / "fit.yaml").write_text(yaml.safe_dump(document))
    summary = run_workflow(load_workflow(str(root / "fit.yaml")))
    assert summary.ran == ["fit", "predict", "score", "report"]
    return root, X, new


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                    "(.ci/run installs it)")
def test_the_page_in_a_real_browser(project):
    root, _, _ = project
    page = root / "report" / "report.html"
    report = json.loads((root / "report" / "report.json").read_text())
    dom = browser("--dump-dom", page.as_uri()).stdout
    body = dom[dom.index("<body"):]
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))
    best = report["selection"]["best_params"]
    assert best == {"n_components": 3, "covariance_type": "full"}
    assert "dgmm report: grid-report" in text
    assert "components 3 covariance full" in text  # the first cards
    assert "3 components, covariance type full" in text
    lower_bound = report["model"]["lower_bound"]
    assert f"{lower_bound:.10g}" in text  # the chosen fit's final mean log-likelihood
    rows = re.findall(r"<tr[^>]*><td[^>]*>(\d+)</td><td[^>]*>full</td>", dom)
    assert sorted({int(k) for k in rows}) == GRID  # every K of the grid in the table
    assert "best by BIC (lower is better): K=3, full" in text
    for heading in ("The run", "Convergence", "The model", "Selection", "The components",
                    "Predictions"):
        assert heading in text
    # every restart of every candidate has its convergence line
    assert len(report["convergence"]) == len(GRID) * 2
    assert sum(c["best"] for c in report["convergence"]) == 1

    shot = root / "shot.png"
    browser(f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars",
            page.as_uri())
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    not_white = (pixels < 0.92).any(axis=2).mean()
    colours = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert not_white > 0.05 and colours > 200, (not_white, colours)


def test_scoring_against_the_saved_model_reports_drift_and_exits_9(project, capsys):
    root, X, new = project
    meta = json.loads((root / "model" / "model.json").read_text())
    training = meta["training"]
    params, _ = load_params(root / "model")
    train_density = kernels.score_samples(X, params)
    assert training["mean_log_likelihood"] == pytest.approx(train_density.mean(), rel=1e-12)
    assert training["data"]["shape"] == [6000, 2]

    document = yaml.safe_load((root / "fit.yaml").read_text())
    document.update({
        "name": "nightly",
        "data": {"source": "npy", "path": str(root / "new.npy"), "chunk_bytes": "16KiB"},
        "outputs": {"model": str(root / "model"), "predictions": str(root / "new.zarr"),
                    "report": str(root / "nightly")},
        "monitor": {"max_anomaly_share": 0.05, "max_log_likelihood_drop": 100.0},
        "steps": ["predict", "score"],
    })
    (root / "nightly.yaml").write_text(yaml.safe_dump(document))
    assert main(["validate", str(root / "nightly.yaml")]) == 0
    assert ("monitor: exit 9 when max_log_likelihood_drop > 100, max_anomaly_share > 0.05"
            in capsys.readouterr().out)
    assert main(["run", str(root / "nightly.yaml")]) == 9
    err = capsys.readouterr().err
    assert "monitor.max_anomaly_share=0.05" in err and "max_log_likelihood_drop" not in err

    report = json.loads((root / "nightly" / "report.json").read_text())
    new_density = kernels.score_samples(new, params)
    drift = report["drift"]
    assert drift["n_anomalies"] == (new_density < training["anomaly_threshold"]).sum() >= 600
    assert drift["mean_log_likelihood_now"] == pytest.approx(new_density.mean(), rel=1e-12)
    assert drift["shares_training"] == training["shares"]
    page = (root / "nightly" / "report.html").read_text()
    assert "Drift against the training data" in page and "past the thresholds" in page
    # the thresholds stay broken: a rerun checks again; looser ones pass
    assert main(["run", str(root / "nightly.yaml")]) == 9
    assert main(["run", str(root / "nightly.yaml"),
                 "--set", "monitor.max_anomaly_share=0.5"]) == 0
    assert "Within the thresholds" in (root / "nightly" / "report.html").read_text()


def test_predict_rebuild_and_inspect(project, capsys):
    root, _, _ = project
    assert main(["predict", "--model", str(root / "model"), "--data", str(root / "new.npy"),
                 "--out", str(root / "cli.zarr"), "--cluster", str(root / "inproc.yaml")]) == 0
    page = (root / "cli.report" / "report.html").read_text()
    assert "Drift against the training data" in page

    assert main(["report", str(root / "model")]) == 0
    assert "The model" in (root / "model" / "report.html").read_text()
    (root / "report" / "report.html").unlink()
    assert main(["report", str(root / "report")]) == 0
    assert "Selection" in (root / "report" / "report.html").read_text()

    capsys.readouterr()
    assert main(["inspect", str(root / "model")]) == 0
    assert "training data: 6,000 rows, mean log-likelihood" in capsys.readouterr().out
    assert main(["inspect", str(root / "ckpt")]) == 0
    out = capsys.readouterr().out
    assert f"grid: {len(GRID)} candidates" in out
    for k in GRID:
        assert re.search(rf"^\s+{k}\s+full\s+done\s+\d+\s+2\s+-?\d+\.\d+$", out, re.M), out
