"""Mini-batch EM in workflows: the schema, saved models with their state, daily updates,
SIGKILL and resume of a real ``dgmm run``."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import COVARIANCE_TYPES, kill_when, make_blobs

import dgmm
from dgmm import GaussianMixture, MiniBatchGaussianMixture
from dgmm.data import readers as data_io
from dgmm.data.model_io import load_params, save_model
from dgmm.data.synthetic import make_gmm_data
from dgmm.errors import CheckpointError, ConfigError
from dgmm.workflow.checkpoint import CheckpointStore
from dgmm.workflow.loading import load_workflow
from dgmm.workflow.model_config import ModelConfig
from dgmm.workflow.runner import run_workflow
from dgmm.workflow.schema import DataConfig, OutputsConfig, Workflow

ROOT = Path(__file__).resolve().parents[1]
ARRAYS = ("weights", "means", "covariances", "precisions_cholesky")

#: the model settings a batch-EM workflow hashed before mini-batch EM existed: the same
#: keys give the same settings hash (the hash covers the payload's values, and absolute
#: paths, so it is compared by its parts here)
EM_MODEL_KEYS = ["n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init",
                 "init_params", "init_size", "weights_init", "means_init", "precisions_init",
                 "random_state", "warm_start", "split_every"]
SHIPPED = ["fit_parquet", "fit_zarr", "quickstart"]


def assert_same_model(a, b):
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a.params_, name), getattr(b.params_, name),
                                      err_msg=name)


# ----------------------------------------------------------------------------- schema


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workflows_keep_their_settings_hash(name):
    workflow = load_workflow(ROOT / "workflows" / f"{name}.yaml")
    assert list(workflow.settings_payload()["model"]) == EM_MODEL_KEYS
    assert workflow.settings_hash() == load_workflow(
        ROOT / "workflows" / f"{name}.yaml").settings_hash()


def test_minibatch_parameters_belong_to_the_minibatch_algorithm():
    def workflow(**model):
        return Workflow(data=DataConfig(source="zarr", path="x.zarr"),
                        model=ModelConfig(**model), steps=["fit"],
                        outputs=OutputsConfig(model="m"))

    em_default = workflow()
    explicit_em = workflow(algorithm="em")
    assert em_default.settings_hash() == explicit_em.settings_hash()
    mini = workflow(algorithm="minibatch")
    assert mini.settings_hash() != em_default.settings_hash()
    payload = mini.settings_payload()["model"]
    assert (payload["algorithm"], payload["batch_size"], payload["step_power"],
            payload["polish_iter"], payload["wave_width"]) == ("minibatch", 32768, 0.6, 0, 8)
    smaller = workflow(algorithm="minibatch", batch_size=100)
    assert smaller.settings_hash() != mini.settings_hash()
    kwargs = smaller.estimator_kwargs()
    assert kwargs["batch_size"] == 100 and "algorithm" not in kwargs
    MiniBatchGaussianMixture(**kwargs)  # every key is a constructor parameter
    GaussianMixture(**em_default.estimator_kwargs())

    for bad, key in [({"batch_size": 10}, "batch_size"), ({"polish_iter": 2}, "polish_iter"),
                     ({"warm_start_from": "m"}, "warm_start_from")]:
        with pytest.raises(ValueError, match=f"{key}.*applies to algorithm 'minibatch'"):
            ModelConfig(**bad)
    for bad in ({"step_power": 0.5}, {"step_power": 1.5}, {"batch_size": 0},
                {"n_init": 2}):
        with pytest.raises(ValueError):
            ModelConfig(algorithm="minibatch", **bad)


def test_warm_start_from_is_resolved_like_every_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wf = tmp_path / "wf.yaml"
    wf.write_text(yaml.safe_dump({
        "data": {"source": "zarr", "path": "day2.zarr"},
        "model": {"algorithm": "minibatch", "warm_start_from": "runs/day1/model"},
        "steps": ["fit"], "outputs": {"model": "runs/day2/model"}}))
    workflow = load_workflow(wf)
    assert workflow.model.warm_start_from == str(tmp_path / "runs/day1/model")


# ------------------------------------------------------------------------ saved model


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_saved_minibatch_model_keeps_its_state_and_partial_fit_continues(
        tmp_path, covariance_type):
    X = make_blobs(900, 3, 3, seed=1)
    X1, X2 = X[:600], X[600:]
    fitted = MiniBatchGaussianMixture(3, covariance_type=covariance_type, batch_size=50,
                                      max_iter=2, tol=0.0, random_state=0,
                                      polish_iter=1).fit(X1)
    save_model(tmp_path / "m", fitted)
    loaded = dgmm.load_model(tmp_path / "m")
    assert type(loaded) is MiniBatchGaussianMixture
    assert (loaded.batch_size, loaded.step_power, loaded.polish_iter) == (50, 0.6, 1)
    assert loaded.n_steps_ == fitted.n_steps_ and loaded.n_passes_ == fitted.n_passes_
    assert loaded.lower_bounds_ == fitted.lower_bounds_
    assert_same_model(loaded, fitted)
    for name in ("shift", "nk", "s1", "s2"):
        np.testing.assert_array_equal(getattr(loaded.state_.running, name),
                                      getattr(fitted.state_.running, name))
    fitted.partial_fit(X2)
    loaded.partial_fit(X2)
    assert_same_model(loaded, fitted)
    assert loaded.n_steps_ == fitted.n_steps_

    # a batch EM model has no state and loads as GaussianMixture
    em_model = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X1)
    save_model(tmp_path / "em", em_model)
    assert type(dgmm.load_model(tmp_path / "em")) is GaussianMixture
    assert "stepwise" not in load_params(tmp_path / "em")[1]


def test_a_corrupt_state_file_is_refused(tmp_path):
    X = make_blobs(400, 2, 2, seed=3)
    fitted = MiniBatchGaussianMixture(2, batch_size=40, max_iter=1, random_state=0).fit(X)
    save_model(tmp_path / "m", fitted)
    state_file = tmp_path / "m" / "state.running.s2.npy"
    blob = bytearray(state_file.read_bytes())
    blob[-1] ^= 1
    state_file.write_bytes(bytes(blob))
    with pytest.raises(dgmm.errors.DataError, match="checksum"):
        dgmm.load_model(tmp_path / "m")


# ---------------------------------------------------------------------- daily updates


def _workflow(path: Path, data: str, client, **model):
    doc = {
        "data": {"source": "zarr", "path": data, "chunk_bytes": 1500 * 3 * 8},
        "model": {"algorithm": "minibatch", "n_components": 3, "covariance_type": "full",
                  "random_state": 0, "batch_size": 400, "tol": 0.0, "max_iter": 2,
                  "wave_width": 1, **model},
        "cluster": {"kind": "address", "address": client.scheduler.address},
        "checkpoint": {"dir": f"ckpt-{path.stem}", "every": 1},
        "outputs": {"model": f"runs/{path.stem}/model"},
        "steps": ["fit"],
    }
    path.write_text(yaml.safe_dump(doc))
    return load_workflow(path)


def _read(workflow):
    X, _ = data_io.open_source(workflow.data.reader_kind, workflow.data.path,
                               **workflow.data.open_kwargs())
    return X


def test_day2_update_continues_day1_and_a_rerun_does_nothing(tmp_path, cluster_client,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    for day, seed in (("day1", 0), ("day2", 1)):
        make_gmm_data(str(tmp_path / f"{day}.zarr"), 6000, 3, 3, chunk_rows=1500, seed=seed,
                      fmt="zarr")
    day1 = _workflow(tmp_path / "day1.yaml", "day1.zarr", cluster_client)
    day2 = _workflow(tmp_path / "day2.yaml", "day2.zarr", cluster_client, max_iter=1,
                     warm_start_from="runs/day1/model")
    lines = []
    run_workflow(day1, emit=lines.append)
    assert any(line.startswith("pass 1 chunk 1/4 step") for line in lines), lines
    assert any(line.startswith("pass 1 chunk 1/4 step") for line in lines)
    summary = run_workflow(day2, emit=lines.append)
    assert summary.ran == ["fit"]

    reference = MiniBatchGaussianMixture(**day1.estimator_kwargs(), client=cluster_client)
    reference.fit(_read(day1))
    day1_model = dgmm.load_model(tmp_path / "runs/day1/model")
    assert_same_model(day1_model, reference)
    reference.partial_fit(_read(day2))
    updated = dgmm.load_model(tmp_path / "runs/day2/model")
    assert_same_model(updated, reference)
    assert updated.n_steps_ == reference.n_steps_ > day1_model.n_steps_
    assert updated.n_passes_ == 3

    again = run_workflow(day2, emit=lines.append)
    assert again.did_nothing and again.skipped == ["fit"]

    # an update stopped in mid-pass (its newest checkpoint left is after chunk 3 of 4)
    # resumes there, from the day-1 model's statistics, to the same numbers
    store = CheckpointStore(tmp_path / "ckpt-day2")
    newest = store.list()[-1]
    for suffix in (".npz", ".sha256"):
        os.remove(newest.path.removesuffix(".npz") + suffix)
    shutil.rmtree(tmp_path / "runs/day2/model")
    lines.clear()
    resumed = run_workflow(day2, emit=lines.append)
    assert resumed.ran == ["fit"]
    assert any(line.startswith("resuming from checkpoint: pass 3, chunk 3,")
               for line in lines), lines
    assert_same_model(dgmm.load_model(tmp_path / "runs/day2/model"), reference)

    # a new day-1 model makes the same day-2 update stale
    refit = _workflow(tmp_path / "day1.yaml", "day1.zarr", cluster_client, batch_size=300)
    run_workflow(refit, restart=True)
    with pytest.raises(CheckpointError, match="warm_start_checksum"):
        run_workflow(day2)  # its checkpoints continue the old day-1 model
    assert run_workflow(day2, restart=True).ran == ["fit"]


def test_warm_start_needs_a_minibatch_model_of_the_same_shape(tmp_path, cluster_client,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_gmm_data(str(tmp_path / "d.zarr"), 3000, 3, 3, chunk_rows=1000, seed=0, fmt="zarr")
    X = make_blobs(300, 3, 3)
    save_model(tmp_path / "em", GaussianMixture(3, random_state=0).fit(X))
    save_model(tmp_path / "mb2", MiniBatchGaussianMixture(2, max_iter=1, batch_size=50,
                                                          random_state=0).fit(X))
    cases = [("em", "not fitted by mini-batch EM"), ("mb2", "n_components=3 differs")]
    for name, message in cases:
        wf = _workflow(tmp_path / f"w{name}.yaml", "d.zarr", cluster_client,
                       warm_start_from=name)
        with pytest.raises(ConfigError, match=message):
            run_workflow(wf)
    same = _workflow(tmp_path / "same.yaml", "d.zarr", cluster_client,
                     warm_start_from="runs/same/model")
    with pytest.raises(ConfigError, match="both"):
        run_workflow(same)


def test_checkpoints_follow_every_chunks_whatever_the_wave_width(tmp_path):
    """checkpoint.every: 5 with waves of 3 chunks in a pass of 12: a checkpoint after the
    wave that completes chunk 5 (the one ending at 6) and at the end of the pass; then
    again in the next pass."""
    from dgmm.engine import minibatch as stepwise
    from dgmm.workflow.progress import StepwiseProgress

    X = make_blobs(300, 3, 3)
    fitted = MiniBatchGaussianMixture(3, max_iter=1, batch_size=100, random_state=0)
    with pytest.warns(UserWarning):
        fitted.fit(X)
    store = CheckpointStore(tmp_path / "ckpt", keep=100)
    progress = StepwiseProgress(lambda line: None, store, 5, {}, 12)
    for n_passes in (0, 1):
        for position in (3, 6, 9, 12):
            state = replace(fitted.state_, n_passes=n_passes + (position == 12),
                            position=position % 12, n_steps=100 * n_passes + position)
            progress(stepwise.StepwiseInfo(state, "chunk" if position < 12 else "pass", 0.1))
    assert [info.step // 1_000_000 for info in store.list()] == [6, 12, 106, 112]


# ------------------------------------------------------------------ SIGKILL and resume

INPROCESS_CLUSTER = {"kind": "local", "n_workers": 1, "threads_per_worker": 2,
                     "processes": False, "dashboard_address": None}


def _cli_workflow(directory: Path):
    doc = {
        "data": {"source": "zarr", "path": "data.zarr", "chunk_bytes": 2500 * 3 * 8},
        "model": {"algorithm": "minibatch", "n_components": 3, "random_state": 0,
                  "batch_size": 250, "max_iter": 3, "tol": 0.0, "polish_iter": 2,
                  "wave_width": 3},
        "cluster": INPROCESS_CLUSTER,
        "checkpoint": {"dir": "ckpt", "every": 1, "keep": 3},
        "outputs": {"model": "model"},
        "steps": ["fit"],
    }
    (directory / "wf.yaml").write_text(yaml.safe_dump(doc))


def _run(cwd, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DGMM_")}
    return subprocess.run([sys.executable, "-m", "dgmm.cli", "run", "wf.yaml", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _checkpoints(directory: Path) -> list[int]:
    from dgmm.workflow.checkpoint import CheckpointStore

    if not directory.exists():
        return []
    return [info.step for info in CheckpointStore(directory).list()]


def test_sigkill_in_mid_pass_then_rerun_is_bit_identical(tmp_path):
    data = tmp_path / "data.zarr"
    make_gmm_data(str(data), 30000, 3, 3, chunk_rows=2500, seed=2, fmt="zarr")
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    for d in (ref_dir, run_dir):
        d.mkdir()
        os.symlink(data, d / "data.zarr")
        _cli_workflow(d)
    reference = _run(ref_dir)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    assert "pass 1 chunk 3/12 step" in reference.stdout
    expected, expected_meta = load_params(ref_dir / "model")

    # 4 waves of 3 chains, each through a 2500-row chunk in 250-row batches
    one_pass_steps = 4 * 10
    plans = [lambda steps: any(0 < s < one_pass_steps * 1_000_000 for s in steps),
             lambda steps: any(one_pass_steps * 1_000_000 < s for s in steps),
             lambda steps: any(2 * one_pass_steps * 1_000_000 + 5 * 1_000_000 < s
                               for s in steps)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DGMM_")}
    for ready in plans:
        proc = subprocess.Popen([sys.executable, "-m", "dgmm.cli", "run", "wf.yaml"],
                                cwd=run_dir, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        kill_when(proc, lambda ready=ready: ready(_checkpoints(run_dir / "ckpt")))
        proc.stdout.close()
    final = _run(run_dir)
    assert final.returncode == 0, final.stdout + final.stderr
    # the last kill came in the middle of pass 3
    assert re.search(r"resuming from checkpoint: pass 3, chunk [369], step",
                     final.stdout), final.stdout
    got, meta = load_params(run_dir / "model")
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name),
                                      err_msg=name)
    assert meta["lower_bounds"] == expected_meta["lower_bounds"]
    assert meta["stepwise"]["record"]["n_steps"] == 3 * one_pass_steps
    for name, entry in meta["stepwise"]["arrays"].items():
        assert entry["sha256"] == expected_meta["stepwise"]["arrays"][name]["sha256"], name
    # metrics.jsonl: one record per pass and per polish iteration though steps were redone
    records = [json.loads(line) for line in
               (run_dir / "ckpt" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("pass") for r in records] == [1, 2, 3, None, None]
    assert [r.get("polish_iteration") for r in records[3:]] == [1, 2]
