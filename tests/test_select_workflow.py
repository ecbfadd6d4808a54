"""Workflows with a ``select:`` section: schema, hashes, the runner end to end, kill and
resume of a whole grid, refused candidates."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from helpers import MINIMAL_WORKFLOW as MINIMAL
from helpers import REPO, kill_when
from helpers import write_file as write

from dgmm.data.model_io import load_params, read_model_meta
from dgmm.errors import ConfigError
from dgmm.workflow.loading import load_workflow
from dgmm.workflow.schema import Workflow

INPROCESS_CLUSTER = {"kind": "local", "n_workers": 1, "threads_per_worker": 2,
                     "processes": False, "dashboard_address": None}


def dgmm(*args, cwd, timeout=300, check=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DGMM_")}
    proc = subprocess.run([sys.executable, "-m", "dgmm.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


# ----------------------------------------------------------------------------- schema


def _load(tmp_path, select_text: str, extra: str = "", overrides=()):
    write(tmp_path, MINIMAL + extra + select_text)
    return load_workflow("workflows/w.yaml", list(overrides))


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_select_takes_a_list_or_an_inclusive_range_and_a_name_or_list(project):
    listed = _load(project, "select: {n_components: [2, 4, 8, 16], "
                            "covariance_type: [full, diag], criterion: aic}\n")
    assert listed.select.ks() == [2, 4, 8, 16]
    assert listed.select.covariance_types() == ["full", "diag"]
    assert listed.select.criterion == "aic"
    ranged = _load(project, "select: {n_components: {start: 2, stop: 8, step: 3}, "
                            "covariance_type: tied}\n")
    assert ranged.select.ks() == [2, 5, 8]  # stop included
    assert ranged.select.covariance_types() == ["tied"]
    assert ranged.select.criterion == "bic"
    # a range and the list of its values fit the same candidates: the same hash
    same = _load(project, "select: {n_components: [2, 5, 8], covariance_type: [tied]}\n")
    assert same.settings_hash() == ranged.settings_hash()
    # the grid and the criterion change the hash, the memory budget does not
    base = _load(project, "select: {n_components: [2, 4]}\n")
    for changed in ("select: {n_components: [2, 5]}\n",
                    "select: {n_components: [2, 4], criterion: aic}\n",
                    "select: {n_components: [2, 4], covariance_type: diag}\n"):
        assert _load(project, changed).settings_hash() != base.settings_hash()
    budget = _load(project, "select: {n_components: [2, 4], memory_budget: 64MiB}\n")
    assert budget.settings_hash() == base.settings_hash()
    assert _load(project, "").settings_hash() != base.settings_hash()
    again = Workflow.model_validate(listed.model_dump())  # a fixed point of validation
    assert again.model_dump() == listed.model_dump()


@pytest.mark.parametrize("select, message", [
    ("select: {n_components: []}", r"select\.n_components: found \[\]; is an empty grid"),
    ("select: {n_components: [2, 0, -1]}",
     r"select\.n_components: .*holds K = \[0, -1\]: every K must be an integer >= 1"),
    ("select: {n_components: {start: 0, stop: 4}}",
     r"select\.n_components: found \{'start': 0, 'stop': 4\}; start must be an integer >= 1"),
    ("select: {n_components: {start: 5, stop: 2}}",
     r"select\.n_components: .*stop \(2\) is below start \(5\), so the grid of K is empty"),
    ("select: {n_components: {start: 2}}", r"a range of K needs start and stop"),
    ("select: {n_components: [2, 2]}", r"lists \[2\] more than once"),
    ("select: {n_components: [2], covariance_type: []}", "is an empty list"),
    ("select: {n_components: [2], covariance_type: [full, round]}",
     r"'full', 'tied', 'diag', 'spherical', 'EII', .* 'EVV' or 'VVV'"),
    ("select: {n_components: [2], criterion: entropy}", r"must be 'bic', 'aic' or 'icl'"),
    ("select: {covariance_type: full}", r"select\.n_components: missing"),
    ("select: {n_components: [2], memory_budget: lots}", "must be a positive size"),
])
def test_a_bad_select_section_is_a_config_error_naming_the_key(project, select, message):
    with pytest.raises(ConfigError, match=message) as info:
        _load(project, select + "\n")
    assert "workflows/w.yaml" in str(info.value)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("model, message", [
    ("model: {n_components: 4}\n",
     r"w\.yaml:5: model\.n_components: found 4; the select section chooses n_components"),
    ("model: {covariance_type: diag}\n",
     r"w\.yaml:5: model\.covariance_type: .*chooses covariance_type"),
    ("model: {means_init: [[0.0, 1.0]]}\n", r"model\.means_init: .*remove model\.means_init"),
    ("model: {warm_start: true}\n", r"model\.warm_start: .*set warm_start: false"),
])
def test_select_refuses_model_settings_it_owns(project, model, message):
    with pytest.raises(ConfigError, match=message):
        _load(project, "select: {n_components: [2, 3]}\n", extra=model)


def test_an_override_can_set_the_grid_and_an_empty_one_exits_2(project):
    workflow = _load(project, "select: {n_components: [2, 3]}\n",
                     overrides=["select.n_components=[1, 5]"])
    assert workflow.select.ks() == [1, 5]
    shown = dgmm("validate", "workflows/w.yaml", cwd=project, check=0)
    assert "select:  K in [2, 3] x full, best by BIC" in shown.stdout
    proc = dgmm("validate", "workflows/w.yaml", "--set", "select.n_components=[]",
                cwd=project, check=2)
    assert "empty grid" in proc.stderr and "Traceback" not in proc.stderr


#: settings_hash() of the shipped one-model workflows, paths as written (a select section
#: must not change the hash of a workflow without one). They changed once, on purpose, when
#: ``model.init_size`` entered the settings: a default fit now starts from a sample search,
#: so a checkpoint written before must not be resumed as if nothing had changed.
SHIPPED_HASHES = {
    "quickstart": "ad2e9bef88e37a7a832eed7cf73b51155828008b1b293026e84b526b7df2bec4",
    "fit_zarr": "2ef2274793c3017f22ed1d02de3512d65d77e8549ab15a3e9079b7bd5a9ea849",
    "fit_parquet": "d115c0e1160fe11d40b2f4ba7736f05c54f9a8dd5b4b91d0e0a30e14be2c9b42",
}


@pytest.mark.parametrize("name", sorted(SHIPPED_HASHES))
def test_hashes_of_workflows_without_select_are_unchanged(name):
    document = yaml.safe_load((REPO / "workflows" / f"{name}.yaml").read_text())
    document.pop("cluster", None)  # not hashed; a profile name is resolved by loading
    workflow = Workflow.model_validate(document)
    assert workflow.select is None
    assert "select" not in workflow.settings_payload()
    assert workflow.settings_hash() == SHIPPED_HASHES[name]


# ------------------------------------------------------------------------- end to end


def test_the_shipped_select_quickstart_runs_end_to_end(tmp_path):
    """workflows/select_quickstart.yaml as the docs run it (its own cluster profile)."""
    proc = dgmm("run", str(REPO / "workflows" / "select_quickstart.yaml"), cwd=tmp_path,
                check=0)
    out = proc.stdout
    assert "candidates live 10/10" in out and "candidates live 0/10" in out
    run = tmp_path / "runs" / "select_quickstart"
    report = json.loads((run / "report" / "report.json").read_text())
    table = report["selection"]["results"]
    workflow = yaml.safe_load((REPO / "workflows" / "select_quickstart.yaml").read_text())
    n_init = workflow["model"]["n_init"]
    assert len(table) == 5 * 2 * n_init
    assert {(r["n_components"], r["covariance_type"]) for r in table} == {
        (k, c) for k in range(1, 6) for c in ("full", "diag")}
    best = report["selection"]["best_params"]
    by_candidate = {}
    for row in table:
        key = (row["n_components"], row["covariance_type"])
        by_candidate[key] = min(by_candidate.get(key, np.inf), row["bic"])
    assert min(by_candidate, key=by_candidate.get) == (best["n_components"],
                                                       best["covariance_type"])
    # the data hold 3 well separated components: BIC finds them
    assert best["n_components"] == workflow["data"]["synthetic"]["components"]
    assert report["model"]["n_components"] == best["n_components"]
    assert report["plots"]["selection"] == "selection.png"
    assert (run / "report" / "selection.png").stat().st_size > 1000
    params, meta = load_params(run / "model")
    assert (params.n_components, params.covariance_type) == (best["n_components"],
                                                             best["covariance_type"])
    assert meta["selection"]["results"] == table
    import zarr

    predictions = zarr.open_group(str(run / "predictions.zarr"), mode="r")
    assert predictions["probabilities"].shape[1] == best["n_components"]

    # the report alone, from the saved model and its table
    import shutil

    shutil.rmtree(run / "report")
    again = dgmm("run", str(REPO / "workflows" / "select_quickstart.yaml"),
                 "--set", "steps=[fit, report]", cwd=tmp_path, check=0)
    assert "fit: up to date" in again.stdout
    redone = json.loads((run / "report" / "report.json").read_text())
    assert redone["selection"]["results"] == table


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("select")
    cluster = root / "inproc.yaml"
    cluster.write_text(yaml.safe_dump(INPROCESS_CLUSTER))
    dgmm("make-data", "--rows", "20000", "--features", "2", "--components", "3",
         "--chunk-rows", "4000", "--out", "data.zarr", "--cluster", str(cluster),
         cwd=root, check=0)
    return root


def write_workflow(directory, **sections):
    doc = {
        "name": "select",
        "data": {"source": "zarr", "path": "data.zarr"},
        "select": {"n_components": [1, 2, 3, 4], "covariance_type": ["full", "diag"]},
        "model": {"random_state": 0, "n_init": 2, "tol": 1e-6, "max_iter": 15},
        "cluster": INPROCESS_CLUSTER,
        "checkpoint": {"dir": "ckpt", "every": 1, "keep": 3},
        "outputs": {"model": "model"},
        "steps": ["fit"],
    }
    doc.update(sections)
    (directory / "wf.yaml").write_text(yaml.safe_dump(doc))


def _metric_lines(path):
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_sigkill_during_a_grid_then_rerun_is_bit_identical(data_dir, tmp_path):
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    for directory in (ref_dir, run_dir):
        directory.mkdir()
        os.symlink(data_dir / "data.zarr", directory / "data.zarr")
        # init_size 0: every fit starts on all rows and iterates to about 90 metric lines
        # over some 28 passes (from the sample search the grid ends in 3 passes, its 32
        # lines written at once), so that every kill below lands mid-grid
        write_workflow(directory, model={"random_state": 0, "n_init": 2, "tol": 1e-6,
                                         "max_iter": 15, "init_size": 0})
    dgmm("run", "wf.yaml", cwd=ref_dir, check=0)
    reference, ref_meta = load_params(ref_dir / "model")
    assert _metric_lines(ref_dir / "ckpt" / "metrics.jsonl") > 70  # the last kill's mark

    metrics = run_dir / "ckpt" / "metrics.jsonl"
    rng = np.random.default_rng(0)
    # kill: during initialisation, right after a checkpoint, and at random moments
    plans = [lambda: (run_dir / "ckpt").exists(),
             lambda: _metric_lines(metrics) >= 10,
             lambda: _metric_lines(metrics) >= 35,
             lambda: _metric_lines(metrics) >= 70]
    for ready in plans:
        proc = subprocess.Popen([sys.executable, "-m", "dgmm.cli", "run", "wf.yaml"],
                                cwd=run_dir, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        time.sleep(rng.uniform(0, 0.05))
        kill_when(proc, ready, timeout=180)
    final = dgmm("run", "wf.yaml", cwd=run_dir, check=0)
    assert "resuming from checkpoint" in final.stdout
    got, meta = load_params(run_dir / "model")
    for name, arr in reference.to_arrays().items():
        np.testing.assert_array_equal(getattr(got, name), arr, err_msg=name)
    assert meta["lower_bounds"] == ref_meta["lower_bounds"]
    assert meta["selection"]["best_params"] == ref_meta["selection"]["best_params"]
    # every candidate and restart ends bit-identical: the whole table is equal
    assert meta["selection"]["results"] == ref_meta["selection"]["results"]
    # metrics.jsonl: one line per (candidate, restart, iteration) though some were redone
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    keys = [(r["n_components"], r["covariance_type"], r["init"], r["iteration"])
            for r in records]
    expected = [(row["n_components"], row["covariance_type"], row["restart"], t)
                for row in ref_meta["selection"]["results"]
                for t in range(1, row["n_iter"] + 1)]
    assert sorted(keys) == sorted(expected)


def _npy_workflow(tmp_path, rows, ks):
    X = np.random.default_rng(3).normal(size=(rows, 2))
    np.save(tmp_path / "x.npy", X)
    write_workflow(tmp_path, data={"source": "npy", "path": "x.npy"},
                   select={"n_components": ks, "covariance_type": ["full", "diag"]},
                   checkpoint={"dir": None})


def test_candidates_with_more_components_than_rows_are_refused_by_name(tmp_path):
    _npy_workflow(tmp_path, 30, [2, 40])
    proc = dgmm("run", "wf.yaml", cwd=tmp_path, check=0)
    for c in ("full", "diag"):
        assert f"refused candidate K=40 {c}" in proc.stdout
    assert "covariance_type='full'" in proc.stderr  # the warning in the log names them
    meta = read_model_meta(tmp_path / "model")
    assert {r["n_components"] for r in meta["selection"]["results"]} == {2}
    assert {(r["n_components"], r["covariance_type"])
            for r in meta["selection"]["refused"]} == {(40, "full"), (40, "diag")}


def test_every_k_larger_than_the_rows_exits_3(tmp_path):
    _npy_workflow(tmp_path, 30, [40, 50])
    proc = dgmm("run", "wf.yaml", cwd=tmp_path, check=3)
    assert "Traceback" not in proc.stderr
    assert "Every candidate has more components than the 30 rows" in proc.stderr
    assert "n_components=50" in proc.stderr


def test_selection_resumed_from_any_round_ends_where_an_uninterrupted_fit_ends():
    """GaussianMixtureSelection.fit(callback=..., resume=...) on its own: a state from any
    round (through SelectionState's record, as a checkpoint stores it) continues to the
    same table and the same best model, bit for bit."""
    from helpers import make_blobs

    from dgmm import GaussianMixtureSelection
    from dgmm.estimators.selection import SelectionState

    X = make_blobs(3000, 2, 3, seed=5)
    kwargs = dict(n_components=[1, 2, 3], covariance_type=["full", "spherical"], n_init=2,
                  tol=1e-6, max_iter=12, random_state=4)
    rounds = []
    reference = GaussianMixtureSelection(**kwargs).fit(X, callback=rounds.append)
    assert rounds[0].n_live == 6 and rounds[-1].n_live == 0
    assert [r.passes for r in rounds] == sorted(r.passes for r in rounds)
    for picked in (rounds[1], rounds[len(rounds) // 2], rounds[-2]):
        arrays, meta = picked.to_record()
        state = SelectionState.from_record(arrays, json.loads(json.dumps(meta)))
        resumed = GaussianMixtureSelection(**{**kwargs, "random_state": None}).fit(
            X, resume=state)
        assert resumed.random_seed_ == reference.random_seed_
        assert resumed.results_.equals(reference.results_)
        if picked is rounds[-2]:  # every restart initialised: only the missing passes run
            assert all(st is not None for st in state.states)
            assert resumed.n_passes_ == reference.n_passes_
        for name, arr in reference.best_estimator_.params_.to_arrays().items():
            np.testing.assert_array_equal(getattr(resumed.best_estimator_.params_, name),
                                          arr, err_msg=name)
