"""SIGTERM and SIGINT to a real ``dgmm run``: the pass stops, the last checkpoint is kept,
the lock released, the workers stopped; exit 143 / 130; a rerun resumes bit-identically."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import yaml
from helpers import make_blobs

from dgmm.data.model_io import load_params
from dgmm.workflow.checkpoint import LOCK_NAME

MODEL = {"n_components": 4, "covariance_type": "full", "random_state": 0, "max_iter": 40,
         "tol": 0.0, "require_convergence": False}


def _workflow(path, cluster):
    path.write_text(yaml.safe_dump({
        "data": {"source": "zarr", "path": "data.zarr"}, "model": MODEL, "cluster": cluster,
        "checkpoint": {"dir": "ckpt"}, "outputs": {"model": "model"}, "steps": ["fit"],
    }))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import zarr

    root = tmp_path_factory.mktemp("signals")
    X = make_blobs(n_samples=200_000, n_features=4, n_components=4, seed=11, spread=2.0)
    z = zarr.open_array(str(root / "data.zarr"), mode="w", shape=X.shape,
                        chunks=(20_000, 4), dtype="f8")
    z[:] = X
    return root


def _metric_lines(path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def _stop_with(signum, run_dir):
    """Start ``dgmm run``, send ``signum`` after a few iterations; (proc, out, workers)."""
    proc = subprocess.Popen([sys.executable, "-m", "dgmm.cli", "run", "wf.yaml"],
                            cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    metrics = run_dir / "ckpt" / "metrics.jsonl"
    start = _metric_lines(metrics)
    deadline = time.monotonic() + 180
    while _metric_lines(metrics) < start + 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.02)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)]
    assert workers, "the local cluster runs worker processes"
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return proc, out, err, workers


def test_sigterm_and_sigint_stop_cleanly_and_a_rerun_is_bit_identical(data_dir, tmp_path,
                                                                      monkeypatch):
    from dgmm.workflow.loading import load_workflow
    from dgmm.workflow.runner import run_workflow

    reference_dir, run_dir = tmp_path / "reference", tmp_path / "stopped"
    for d in (reference_dir, run_dir):
        d.mkdir()
        os.symlink(data_dir / "data.zarr", d / "data.zarr")
    _workflow(reference_dir / "wf.yaml", {"kind": "local", "n_workers": 1,
                                          "threads_per_worker": 2, "processes": False,
                                          "dashboard_address": None})
    with monkeypatch.context() as patch:
        patch.chdir(reference_dir)
        run_workflow(load_workflow("wf.yaml"))
    reference = load_params(reference_dir / "model")

    _workflow(run_dir / "wf.yaml", {"kind": "local", "n_workers": 1, "threads_per_worker": 1,
                                    "processes": True, "dashboard_address": None})
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        proc, out, err, workers = _stop_with(signum, run_dir)
        name = signal.Signals(signum).name
        assert proc.returncode == code, out + err
        assert f"stopped by {name}" in err and "again to resume" in err, err
        assert "Traceback" not in err and "leaked semaphore" not in err, err
        assert not (run_dir / "ckpt" / LOCK_NAME).exists()
        gone = psutil.wait_procs(workers, timeout=10)[1]
        assert not gone, f"worker processes still running after {name}: {gone}"
        assert not (run_dir / "model").exists()

    final = subprocess.run([sys.executable, "-m", "dgmm.cli", "run", "wf.yaml"], cwd=run_dir,
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "resuming from checkpoint" in final.stdout
    got, meta = load_params(run_dir / "model")
    for name, array in reference[0].to_arrays().items():
        np.testing.assert_array_equal(getattr(got, name), array, err_msg=name)
    assert meta["lower_bounds"] == reference[1]["lower_bounds"]
