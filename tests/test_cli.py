"""End to end: ``dgmm`` as a subprocess on real files, its exit codes, kill and resume."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from helpers import kill_when

from dgmm.data.model_io import load_params
from dgmm.workflow.checkpoint import CheckpointStore

INPROCESS_CLUSTER = {"kind": "local", "n_workers": 1, "threads_per_worker": 2,
                     "processes": False, "dashboard_address": None}


def dgmm(*args, cwd, timeout=300, check=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DGMM_")}
    proc = subprocess.run([sys.executable, "-m", "dgmm.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


def write_workflow(path, **sections):
    doc = {
        "name": "test",
        "data": {"source": "zarr", "path": "data.zarr"},
        "model": {"n_components": 3, "covariance_type": "full", "random_state": 0,
                  "max_iter": 100, "tol": 1e-4},
        "cluster": INPROCESS_CLUSTER,
        "checkpoint": {"dir": "ckpt", "every": 1, "keep": 3},
        "outputs": {"model": "model", "predictions": "pred.zarr", "report": "report"},
        "steps": ["fit", "predict", "score", "report"],
    }
    for key, value in sections.items():
        if key != "cluster" and isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small real Zarr data set written by `dgmm make-data`."""
    root = tmp_path_factory.mktemp("cli")
    cluster = root / "inproc.yaml"
    cluster.write_text(yaml.safe_dump(INPROCESS_CLUSTER))
    dgmm("make-data", "--rows", "60000", "--features", "3", "--components", "3",
         "--chunk-rows", "5000", "--out", "data.zarr", "--cluster", str(cluster),
         cwd=root, check=0)
    return root


@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
def test_checkpoints_and_predictions_use_their_own_storage_options(data_dir, tmp_path, fmt):
    """dir:// URLs resolve only with their 'path' option: checkpoints and predictions land
    under the roots their own sections give (the data section has no options)."""
    os.symlink(data_dir / "data.zarr", tmp_path / "data.zarr")
    (tmp_path / "ck_root").mkdir()
    (tmp_path / "out_root").mkdir()
    wf = write_workflow(
        tmp_path / "wf.yaml",
        checkpoint={"dir": "dir://ck", "storage_options": {"path": str(tmp_path / "ck_root")}},
        outputs={"predictions": f"dir://pred.{fmt}",
                 # a local target makes no parent directories unless asked (zarr needs them)
                 "storage_options": {"path": str(tmp_path / "out_root"),
                                     "target_options": {"auto_mkdir": True}}},
        model={"max_iter": 4, "tol": 0.0, "require_convergence": False},
        steps=["fit", "predict"],
    )
    dgmm("run", str(wf), cwd=tmp_path, check=0)
    assert len(CheckpointStore(tmp_path / "ck_root" / "ck").list()) >= 1
    if fmt == "zarr":
        import zarr

        pred = zarr.open_group(str(tmp_path / "out_root" / "pred.zarr"), mode="r")
        assert pred["labels"].shape == (60000,)
    else:
        import pyarrow.parquet as pq

        assert pq.read_table(tmp_path / "out_root" / "pred.parquet").num_rows == 60000
    assert "nothing to do" in dgmm("run", str(wf), cwd=tmp_path, check=0).stdout


def test_run_writes_every_output_and_second_run_does_nothing(data_dir, tmp_path):
    os.symlink(data_dir / "data.zarr", tmp_path / "data.zarr")
    wf = write_workflow(tmp_path / "wf.yaml")
    first = dgmm("run", str(wf), cwd=tmp_path, check=0)
    out = first.stdout
    assert "iter    1" in out and "rows/s" in out and "mean log-lik" in out
    assert "done: ran fit, predict, score, report" in out
    params, meta = load_params(tmp_path / "model")
    assert meta["converged"] and meta["n_components"] == 3
    import zarr

    pred = zarr.open_group(str(tmp_path / "pred.zarr"), mode="r")
    assert pred["labels"].shape == (60000,) and pred["probabilities"].shape == (60000, 3)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["model"]["n_iter"] == meta["n_iter"]
    assert (tmp_path / "report" / "components.png").stat().st_size > 1000
    metrics = [json.loads(line) for line in
               (tmp_path / "ckpt" / "metrics.jsonl").read_text().splitlines()]
    # the sample pass and the search, then one line per iteration
    assert [m.get("phase") for m in metrics[:2]] == ["sample", "search"]
    assert len(metrics) == 2 + meta["n_iter"]
    assert {"iteration", "lower_bound", "change", "seconds", "rows_per_second"} <= set(
        metrics[-1])

    second = dgmm("run", str(wf), cwd=tmp_path, check=0)
    assert "nothing to do" in second.stdout
    again, _ = load_params(tmp_path / "model")
    np.testing.assert_array_equal(again.means, params.means)

    # a changed setting is not "up to date": it refuses the old checkpoints
    changed = dgmm("run", str(wf), "--set", "model.n_components=4", cwd=tmp_path, check=6)
    assert "--restart" in changed.stderr and "Traceback" not in changed.stderr
    dgmm("run", str(wf), "--set", "model.n_components=4", "--restart", cwd=tmp_path, check=0)
    assert load_params(tmp_path / "model")[0].n_components == 4

    forced = dgmm("run", str(wf), "--force", cwd=tmp_path, check=0)
    assert "done: ran fit, predict, score, report" in forced.stdout
    np.testing.assert_array_equal(load_params(tmp_path / "model")[0].means, params.means)


def _metric_lines(path):
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_sigkill_at_any_moment_then_rerun_is_bit_identical(data_dir, tmp_path):
    model = {"tol": 0.0, "max_iter": 30, "n_init": 2, "covariance_type": "full"}
    ref_dir = tmp_path / "reference"
    run_dir = tmp_path / "killed"
    for d in (ref_dir, run_dir):
        d.mkdir()
        os.symlink(data_dir / "data.zarr", d / "data.zarr")
        write_workflow(d / "wf.yaml", model=model, steps=["fit"],
                       outputs={"model": "model", "predictions": None, "report": None})
    dgmm("run", "wf.yaml", cwd=ref_dir, check=0)
    reference, ref_meta = load_params(ref_dir / "model")

    metrics = run_dir / "ckpt" / "metrics.jsonl"
    rng = np.random.default_rng(0)
    # kill: during initialisation, right after a checkpoint, and at random moments
    plans = [lambda: (run_dir / "ckpt").exists(),
             lambda: _metric_lines(metrics) >= 7,
             lambda: _metric_lines(metrics) >= 22,
             lambda: _metric_lines(metrics) >= 42]
    for ready in plans:
        proc = subprocess.Popen([sys.executable, "-m", "dgmm.cli", "run", "wf.yaml"],
                                cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        kill_when(proc, ready)
        time.sleep(rng.uniform(0, 0.05))
    final = dgmm("run", "wf.yaml", cwd=run_dir, check=0)
    assert "resuming from checkpoint" in final.stdout
    got, meta = load_params(run_dir / "model")
    for name, arr in reference.to_arrays().items():
        np.testing.assert_array_equal(getattr(got, name), arr, err_msg=name)
    assert meta["lower_bounds"] == ref_meta["lower_bounds"]
    assert meta["n_iter"] == ref_meta["n_iter"]
    # metrics.jsonl: strict JSON, one line per iteration though iterations were redone
    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    records = [json.loads(line, parse_constant=no_constants)
               for line in (run_dir / "ckpt" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("phase") for r in records[:2]] == ["sample", "search"]
    keys = [(r["init"], r["iteration"]) for r in records[2:]]
    # the restarts run in lockstep: their lines interleave, each restart's in order
    assert sorted(keys) == [(i, t) for i in range(2) for t in range(1, 31)]
    for i in range(2):
        assert [t for r, t in keys if r == i] == list(range(1, 31))


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(data_dir, tmp_path):
    os.symlink(data_dir / "data.zarr", tmp_path / "data.zarr")
    wf = write_workflow(tmp_path / "wf.yaml", model={"tol": 0.0, "max_iter": 6},
                        steps=["fit"], outputs={"model": "model", "predictions": None,
                                                "report": None})
    dgmm("run", str(wf), cwd=tmp_path, check=0)
    reference, _ = load_params(tmp_path / "model")
    newest = sorted((tmp_path / "ckpt").glob("ckpt-*.npz"))[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated
    import shutil

    shutil.rmtree(tmp_path / "model")
    rerun = dgmm("run", str(wf), cwd=tmp_path, check=0)
    assert newest.name in rerun.stderr  # the warning names the skipped file
    got, _ = load_params(tmp_path / "model")
    np.testing.assert_array_equal(got.covariances, reference.covariances)


def test_a_locked_checkpoint_directory_is_refused(data_dir, tmp_path):
    os.symlink(data_dir / "data.zarr", tmp_path / "data.zarr")
    wf = write_workflow(tmp_path / "wf.yaml", steps=["fit"],
                        outputs={"model": "model", "predictions": None, "report": None})
    store = CheckpointStore(tmp_path / "ckpt")
    # the lock is held by another process: this one
    with store.lock():
        proc = dgmm("run", str(wf), cwd=tmp_path, check=7)
    assert str(os.getpid()) in proc.stderr and "Traceback" not in proc.stderr
    dgmm("run", str(wf), cwd=tmp_path, check=0)


def _npy(tmp_path, X):
    np.save(tmp_path / "x.npy", X)
    return {"source": "npy", "path": "x.npy"}


@pytest.mark.parametrize(
    "case, code, message",
    [
        ("unknown_key", 2, "unknown key 'n_componets' in section 'model'"),
        ("missing_data", 3, "does-not-exist.zarr"),
        ("nan", 3, r"row\(s\) with NaN or inf values \(the first at row 7\)"),
        ("too_few_rows", 3, "n_components=50"),
        ("no_convergence", 5, "did not converge within max_iter=1"),
        ("no_scheduler", 4, "Could not connect to the Dask scheduler"),
        ("collapsed", 8, "increase reg_covar"),
        ("bad_yaml", 2, "wf.yaml"),
        ("unknown_protocol", 3, r"Cannot open 'nosuchproto://m'.*fsspec backend"),
    ],
)
def test_exit_codes_and_messages(tmp_path, case, code, message):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 2))
    sections = {"checkpoint": {"dir": None}, "steps": ["fit"],
                "outputs": {"model": "model", "predictions": None, "report": None}}
    if case == "unknown_key":
        sections["model"] = {"n_componets": 3}
        sections["data"] = _npy(tmp_path, X)
    elif case == "missing_data":
        sections["data"] = {"source": "zarr", "path": "does-not-exist.zarr"}
    elif case == "nan":
        X[[7, 9]] = np.nan
        sections["data"] = _npy(tmp_path, X)
    elif case == "too_few_rows":
        sections["data"] = _npy(tmp_path, X[:20])
        sections["model"] = {"n_components": 50}
    elif case == "no_convergence":
        sections["data"] = _npy(tmp_path, X)
        sections["model"] = {"max_iter": 1, "tol": 0.0, "require_convergence": True}
    elif case == "no_scheduler":
        sections["data"] = _npy(tmp_path, X)
        sections["cluster"] = {"kind": "address", "address": "tcp://127.0.0.1:9", "timeout": 2}
    elif case == "collapsed":
        X[:100] = 3.0  # half the rows on one point, and no regularisation
        sections["data"] = _npy(tmp_path, X)
        sections["model"] = {"n_components": 2, "reg_covar": 0.0}
    elif case == "unknown_protocol":
        sections["data"] = _npy(tmp_path, X)
        sections["outputs"] = {"model": "nosuchproto://m", "predictions": None, "report": None}
    wf = write_workflow(tmp_path / "wf.yaml", **sections)
    if case == "bad_yaml":
        wf.write_text("data: {source: npy\nmodel: [")
    proc = dgmm("run", str(wf), cwd=tmp_path, check=code)
    assert "Traceback" not in proc.stderr
    import re

    assert re.search(message, proc.stderr), proc.stderr
    if case == "no_convergence":
        assert (tmp_path / "model" / "model.json").exists()  # the model is kept


def test_validate_inspect_predict_commands(data_dir, tmp_path):
    os.symlink(data_dir / "data.zarr", tmp_path / "data.zarr")
    wf = write_workflow(tmp_path / "wf.yaml", steps=["fit"],
                        outputs={"model": "model", "predictions": None, "report": None})
    valid = dgmm("validate", str(wf), cwd=tmp_path, check=0)
    assert "valid" in valid.stdout and "3 components" in valid.stdout
    dgmm("validate", str(wf), "--set", "steps=[dance]", cwd=tmp_path, check=2)
    dgmm("run", str(wf), cwd=tmp_path, check=0)
    shown = dgmm("inspect", "model", "--json", cwd=tmp_path, check=0)
    assert json.loads(shown.stdout)["n_components"] == 3
    ckpt = json.loads(dgmm("inspect", "ckpt", "--json", cwd=tmp_path, check=0).stdout)
    assert ckpt["kind"] == "checkpoints" and ckpt["latest"]["converged"] is True
    cluster = tmp_path / "inproc.yaml"
    cluster.write_text(yaml.safe_dump(INPROCESS_CLUSTER))
    dgmm("predict", "--model", "model", "--data", "data.zarr", "--out", "p.parquet",
         "--cluster", str(cluster), cwd=tmp_path, check=0)
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "p.parquet")
    assert table.num_rows == 60000 and "label" in table.column_names
    dgmm("inspect", "nowhere", cwd=tmp_path, check=2)
    dgmm("run", cwd=tmp_path, check=2)  # argparse: missing workflow


def test_sigkill_during_the_search_resumes_from_the_sampled_rows(data_dir, tmp_path):
    # a sample smaller than the data, and a search long enough to be caught in
    model = {"n_components": 6, "init_size": 40000, "n_init": 3, "tol": 1e-4}
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    for d in (ref_dir, run_dir):
        d.mkdir()
        os.symlink(data_dir / "data.zarr", d / "data.zarr")
        write_workflow(d / "wf.yaml", model=model, steps=["fit"],
                       outputs={"model": "model", "predictions": None, "report": None})
    first = dgmm("run", "wf.yaml", cwd=ref_dir, check=0)
    assert "sample: 40,000 of 60,000 usable rows drawn in one pass" in first.stdout
    assert "search: 3 start(s) found on the sample" in first.stdout
    reference, ref_meta = load_params(ref_dir / "model")

    metrics = run_dir / "ckpt" / "metrics.jsonl"

    def searching():
        try:
            phases = [json.loads(line).get("phase")
                      for line in metrics.read_text().splitlines()]
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        return phases == ["sample"]

    proc = subprocess.Popen([sys.executable, "-m", "dgmm.cli", "run", "wf.yaml"],
                            cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    kill_when(proc, searching)
    final = dgmm("run", "wf.yaml", cwd=run_dir, check=0)
    assert "resuming from checkpoint: the sample of 40,000 rows" in final.stdout
    assert "sample:" not in final.stdout  # the data are not sampled again
    got, meta = load_params(run_dir / "model")
    for name, arr in reference.to_arrays().items():
        np.testing.assert_array_equal(getattr(got, name), arr, err_msg=name)
    assert meta["lower_bounds"] == ref_meta["lower_bounds"]
    phases = [json.loads(line).get("phase") for line in metrics.read_text().splitlines()]
    assert phases[:2] == ["sample", "search"] and phases.count("sample") == 1


def test_make_data_draws_from_any_of_the_eighteen_covariance_types(tmp_path):
    """mclust's names too: the generating mixture has that structure (VEV: equal shapes,
    varying volumes and orientations)."""
    from dgmm.core.structured import decompose
    from dgmm.data import load_true_params

    dgmm("make-data", "--rows", "500", "--features", "3", "--components", "2",
         "--covariance-type", "VEV", "--out", str(tmp_path / "x.zarr"), cwd=tmp_path, check=0)
    truth = load_true_params(str(tmp_path / "x.zarr"))
    assert truth.covariance_type == "VEV"
    # decomposed as if everything varied: the shapes come out equal, the volumes not
    volumes, shapes, _ = decompose(np.asarray(truth.covariances), "VVV", False)
    np.testing.assert_allclose(shapes[0], shapes[1], rtol=1e-10)
    assert not np.isclose(volumes[0], volumes[1])
    bad = dgmm("make-data", "--rows", "5", "--features", "1", "--components", "1",
               "--covariance-type", "XYZ", "--out", str(tmp_path / "y.zarr"), cwd=tmp_path)
    assert bad.returncode == 2 and "invalid choice: 'XYZ'" in bad.stderr
