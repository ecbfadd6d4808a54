"""Workflows on a real S3-API server (moto's, on 127.0.0.1): data, checkpoints, model,
predictions and report on s3://; kills, flaky and dead stores, secrets."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import yaml
from helpers import FlakyProxy, make_blobs

import dgmm
from dgmm.data.model_io import load_params
from dgmm.data.publish import POINTER_NAME, resolve
from dgmm.workflow.checkpoint import CheckpointStore

CLUSTER = {"kind": "local", "n_workers": 1, "threads_per_worker": 2, "processes": False,
           "dashboard_address": None}
MODEL = {"n_components": 3, "covariance_type": "full", "random_state": 0, "max_iter": 12,
         "tol": 0.0, "require_convergence": False}
ROWS, CHUNK = 20_000, 2_500
SECRET = "dgmm-Secret-9f8e7d6c5b"
TOKEN = "dgmm-Token-1a2b3c4d5e"


def dgmm_cli(*args, env, cwd, check=None, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "dgmm.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


def cli_in_process(capsys, *args):
    """``dgmm ARGS`` run by ``dgmm.cli.main`` in this process: (exit code, stdout, stderr)."""
    from dgmm.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def bucket_name() -> str:
    return f"dgmm-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="module")
def s3_data(s3_server):
    """The same rows as a Zarr array and as a Parquet dataset (8 files) on s3://."""
    import dask.array as da
    import pyarrow as pa
    import pyarrow.parquet as pq

    bucket = s3_server.create_bucket(bucket_name())
    X = make_blobs(n_samples=ROWS, n_features=3, n_components=3, seed=3)
    da.from_array(X, chunks=(CHUNK, 3)).to_zarr(f"{bucket}/x.zarr",
                                                storage_options=s3_server.storage_options())
    fs = s3_server.filesystem()
    for i, start in enumerate(range(0, ROWS, CHUNK)):
        part = X[start:start + CHUNK]
        with fs.open(f"{bucket}/x.parquet/part-{i}.parquet", "wb") as handle:
            pq.write_table(pa.table({c: part[:, j] for j, c in enumerate("abc")}), handle)
    return {"X": X, "zarr": f"{bucket}/x.zarr", "parquet": f"{bucket}/x.parquet"}


def write_workflow(path, data_url, storage_options, **sections):
    doc = {"name": "s3", "data": {"source": "zarr", "path": data_url,
                                  "storage_options": storage_options},
           "model": MODEL, "cluster": CLUSTER, "steps": ["fit"]}
    doc.update(sections)
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def reference(s3_server, s3_data, tmp_path_factory):
    """The model of an uninterrupted, clean run with data and checkpoints on s3://."""
    from dgmm.workflow.loading import load_workflow
    from dgmm.workflow.runner import run_workflow

    cwd = tmp_path_factory.mktemp("reference")
    bucket = s3_server.create_bucket(bucket_name())
    write_workflow(cwd / "wf.yaml", s3_data["zarr"], s3_server.storage_options(),
                   checkpoint={"dir": f"{bucket}/ckpt"},
                   outputs={"model": f"{bucket}/model"})
    run_workflow(load_workflow(cwd / "wf.yaml"))
    return load_params(f"{bucket}/model", s3_server.storage_options())


def assert_same_model(got, reference):
    (params, meta), (ref_params, ref_meta) = got, reference
    for name, array in ref_params.to_arrays().items():
        np.testing.assert_array_equal(getattr(params, name), array, err_msg=name)
    assert meta["lower_bounds"] == ref_meta["lower_bounds"]


def _all_objects(fs, bucket) -> dict[str, bytes]:
    return {path: fs.cat_file(path) for path in fs.find(bucket)}


# ----------------------------------------------------------------------- end to end


def test_zarr_workflow_on_s3_every_output_no_op_rerun_cli_and_no_leaked_secret(
        s3_server, s3_data, reference, tmp_path, monkeypatch, capsys):
    bucket = s3_server.create_bucket(bucket_name())
    options = s3_server.storage_options(secret=SECRET)  # moto accepts any secret
    env = {**s3_server.env(), "AWS_SESSION_TOKEN": TOKEN}
    write_workflow(
        tmp_path / "wf.yaml", s3_data["zarr"], options,
        checkpoint={"dir": f"{bucket}/ckpt"},
        outputs={"model": f"{bucket}/model", "predictions": f"{bucket}/pred.zarr",
                 "report": f"{bucket}/report"},
        steps=["fit", "predict", "score", "report"],
    )
    printed = []
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.chdir(tmp_path)

    class Ran:
        def __init__(self, code, stdout, stderr):
            self.returncode, self.stdout, self.stderr = code, stdout, stderr

    def run(*args, check=0):
        code, out, err = cli_in_process(capsys, *args)
        printed.append(out + err)
        assert code == check, out + err
        return Ran(code, out, err)

    run("validate", "wf.yaml")
    assert "done: ran fit, predict, score, report" in run("run", "wf.yaml").stdout
    fs = s3_server.filesystem()
    model_url = f"{bucket}/model"
    assert_same_model(load_params(model_url, options), reference)

    # the model through the public API, credentials and endpoint from the environment
    model = dgmm.load_model(model_url)
    X = s3_data["X"]
    import zarr

    pred = zarr.open_group(resolve(f"{bucket}/pred.zarr", options), mode="r",
                           storage_options=options)
    np.testing.assert_array_equal(pred["labels"][:], model.predict(X))
    np.testing.assert_allclose(pred["probabilities"][:], model.predict_proba(X), rtol=1e-12)
    report = json.loads(fs.cat_file(f"{bucket}/report/report.json"))
    assert report["model"]["n_iter"] == MODEL["max_iter"]
    assert fs.cat_file(f"{bucket}/report/components.png")[:4] == b"\x89PNG"
    metrics = [json.loads(line) for line in fs.cat_file(f"{bucket}/ckpt/metrics.jsonl")
               .decode().splitlines()]
    # the sample pass and the search, then one record per EM iteration
    assert [r.get("phase") for r in metrics[:2]] == ["sample", "search"]
    assert [r["iteration"] for r in metrics[2:]] == list(range(1, MODEL["max_iter"] + 1))
    assert fs.cat_file(f"{bucket}/report/report.html").startswith(b"<!DOCTYPE html>")
    training = json.loads(fs.cat_file(resolve(model_url, options) + "/model.json"))["training"]
    assert training["mean_log_likelihood"] == pytest.approx(model.score(X), rel=1e-10)
    assert report["predictions"]["shares"] == training["shares"]

    before = _all_objects(fs, bucket)
    assert "nothing to do" in run("run", "wf.yaml").stdout
    assert _all_objects(fs, bucket) == before  # a no-op rerun writes nothing

    # predict and inspect on s3:// paths (credentials from the environment)
    out = run("predict", "--model", f"s3://{model_url[5:]}", "--data", s3_data["parquet"],
              "--out", f"{bucket}/cli-pred.parquet").stdout
    assert f"wrote predictions for {ROWS:,} rows" in out
    import pyarrow.dataset as ds

    table = ds.dataset(resolve(f"{bucket}/cli-pred.parquet", options)[5:], filesystem=fs,
                       format="parquet").to_table()
    np.testing.assert_array_equal(table["label"].to_numpy(), model.predict(X))
    shown = json.loads(run("inspect", "--json", model_url).stdout)
    assert shown["kind"] == "model" and shown["n_iter"] == MODEL["max_iter"]
    shown = json.loads(run("inspect", "--json", f"{bucket}/ckpt").stdout)
    assert shown["kind"] == "checkpoints" and shown["metrics_lines"] == len(metrics)
    # debug logs carry the storage client's requests (the session token is a header)
    debug = dgmm_cli("--debug", "inspect", f"{bucket}/ckpt", env=env, cwd=tmp_path, check=0)
    printed.append(debug.stdout + debug.stderr)
    assert "X-Amz-Security-Token" in debug.stderr
    # an error message about a storage location
    failed = run("run", "wf.yaml", "--set", f"data.path={bucket}/missing.zarr", check=3)
    assert "missing.zarr" in failed.stderr

    # the secrets: in no file the runs wrote, in nothing they printed
    written = _all_objects(fs, bucket)
    written.update({str(p): p.read_bytes() for p in tmp_path.rglob("*")
                    if p.is_file() and p.name != "wf.yaml"})
    for secret in (SECRET, TOKEN):
        assert not [name for name, data in written.items() if secret.encode() in data]
        assert not [text for text in printed if secret in text]


def test_parquet_workflow_on_s3_with_parquet_predictions(s3_server, s3_data, tmp_path,
                                                          capsys):
    bucket = s3_server.create_bucket(bucket_name())
    options = s3_server.storage_options()
    write_workflow(
        tmp_path / "wf.yaml", s3_data["parquet"], options,
        outputs={"model": f"{bucket}/model", "predictions": f"{bucket}/pred.parquet"},
        steps=["fit", "predict"],
    )
    (tmp_path / "wf.yaml").write_text((tmp_path / "wf.yaml").read_text().replace(
        "source: zarr", "source: parquet"))
    assert cli_in_process(capsys, "run", str(tmp_path / "wf.yaml"))[0] == 0
    params, meta = load_params(f"{bucket}/model", options)
    # the estimator on the same Parquet data, read by the same reader (the same tasks):
    # the same fit as the workflow's
    X, _ = dgmm.open_source("parquet", s3_data["parquet"], storage_options=options)
    local = dgmm.GaussianMixture(**{k: v for k, v in MODEL.items()
                                    if k != "require_convergence"})
    local.fit(X)
    np.testing.assert_allclose(params.means, local.means_, rtol=1e-10)
    np.testing.assert_allclose(params.covariances, local.covariances_, rtol=1e-10)
    fs = s3_server.filesystem()
    current = resolve(f"{bucket}/pred.parquet", options)
    import pyarrow.dataset as ds

    table = ds.dataset(current[5:], filesystem=fs, format="parquet").to_table()
    assert table.num_rows == ROWS
    np.testing.assert_array_equal(table["label"].to_numpy(), local.predict(s3_data["X"]))
    assert "nothing to do" in cli_in_process(capsys, "run", str(tmp_path / "wf.yaml"))[1]


# --------------------------------------------------------------------- kill, resume


def test_sigkill_at_random_moments_with_checkpoints_on_s3_then_bit_identical(
        s3_server, s3_data, reference, tmp_path, capsys):
    bucket = s3_server.create_bucket(bucket_name())
    options = s3_server.storage_options()
    write_workflow(tmp_path / "wf.yaml", s3_data["zarr"], options,
                   checkpoint={"dir": f"{bucket}/ckpt"}, outputs={"model": f"{bucket}/model"})
    fs = s3_server.filesystem()

    def lines():
        try:
            return len(fs.cat_file(f"{bucket}/ckpt/metrics.jsonl").splitlines())
        except FileNotFoundError:
            return 0

    rng = np.random.default_rng(7)
    # kill at a random moment after the lock is taken (initialisation or early
    # iterations), then at a random moment after a few more checkpoints (past the sample
    # and search records, five EM iterations)
    plans = [lambda: fs.exists(f"{bucket}/ckpt/dgmm.lock"), lambda: lines() >= 2 + 5]
    for ready in plans:
        proc = subprocess.Popen([sys.executable, "-m", "dgmm.cli", "run", "wf.yaml"],
                                cwd=tmp_path, env=s3_server.env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not ready():
            assert proc.poll() is None, "the run ended before the kill"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.5))  # a random moment after the mark
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    code, out, err = cli_in_process(capsys, "run", str(tmp_path / "wf.yaml"))
    assert code == 0 and "resuming from checkpoint" in out, out + err
    assert_same_model(load_params(f"{bucket}/model", options), reference)
    records = [json.loads(line) for line in fs.cat_file(f"{bucket}/ckpt/metrics.jsonl")
               .decode().splitlines()]
    # the sample and search records once each (none repeated by the resumptions), then
    # every EM iteration exactly once
    assert [r.get("phase") for r in records if "iteration" not in r] == ["sample", "search"]
    assert [r["iteration"] for r in records[2:]] == list(range(1, MODEL["max_iter"] + 1))


KILLED_WRITER = """
import os, threading, dask
import dask.array as da
import numpy as np
from dgmm.data import outputs
from dgmm.data.model_io import save_model
from dgmm.data.synthetic import true_params
import dgmm

options = {options!r}
X = np.random.default_rng(0).normal(size=(4000, 3))
params = true_params(3, 3, "full", seed=5, separation=3.0)
models = [dgmm.GaussianMixture(3, random_state=s, max_iter=3).fit(X) for s in (0, 1)]
save_model({model_url!r}, models[0], data_fingerprint="0", storage_options=options)


def save_over_and_over():  # two different models in turn, until the process dies
    i = 1
    while True:
        save_model({model_url!r}, models[i % 2], data_fingerprint=str(i % 2),
                   storage_options=options)
        i += 1


threading.Thread(target=save_over_and_over, daemon=True).start()
calls = []


def crash(block):
    calls.append(1)
    if len(calls) == 4:  # earlier chunks are written under the new prefix; the model
        os._exit(17)     # writer is somewhere in a save
    return block


with dask.config.set(scheduler="sync"):
    outputs.write_predictions(da.from_array(X, chunks=(500, 3)).map_blocks(
        crash, dtype=X.dtype), params, {url!r}, storage_options=options)
"""


def test_killing_the_writer_mid_write_leaves_the_previous_version_readable(
        s3_server, tmp_path):
    import dask
    import dask.array as da
    import zarr

    from dgmm.data import outputs
    from dgmm.data.synthetic import true_params

    bucket = s3_server.create_bucket(bucket_name())
    options = s3_server.storage_options()
    fs = s3_server.filesystem()
    url, model_url = f"{bucket}/pred.zarr", f"{bucket}/model"
    X = np.random.default_rng(0).normal(size=(4000, 3))
    params = true_params(3, 3, "full", seed=5, separation=3.0)
    with dask.config.set(scheduler="sync"):
        outputs.write_predictions(da.from_array(X, chunks=(500, 3)), params, url,
                                  storage_options=options)
    first = resolve(url, options)
    expected = zarr.open_group(first, mode="r", storage_options=options)["labels"][:]

    script = KILLED_WRITER.format(options=options, url=url, model_url=model_url)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 17, result.stderr
    # the predictions: the previous version, whole
    assert resolve(url, options) == first
    got = zarr.open_group(resolve(url, options), mode="r", storage_options=options)
    np.testing.assert_array_equal(got["labels"][:], expected)
    versions = [p.rsplit("/", 1)[1] for p in fs.ls(url, detail=False, refresh=True)]
    assert len([v for v in versions if v.startswith("v-")]) == 2  # the abandoned one
    # the model, killed while being saved over and over: a whole one (checksums verified)
    _, meta = load_params(model_url, options)
    assert meta["data_fingerprint"] in ("0", "1")
    # a new write publishes and removes the older prefixes, the abandoned one included
    with dask.config.set(scheduler="sync"):
        outputs.write_predictions(da.from_array(X, chunks=(500, 3)), params, url,
                                  storage_options=options)
    versions = sorted(p.rsplit("/", 1)[1] for p in fs.ls(url, detail=False, refresh=True))
    assert versions[0] == POINTER_NAME and len(versions) == 2


# ------------------------------------------------------------------ flaky, dead store


def test_a_flaky_store_ends_with_the_same_model_as_a_clean_run(
        s3_server, s3_data, reference, tmp_path, capsys):
    proxy = FlakyProxy(s3_server.port, fail_every=4, max_failures=15)
    try:
        bucket = s3_server.create_bucket(bucket_name())
        options = s3_server.storage_options(endpoint=proxy.endpoint)
        write_workflow(tmp_path / "wf.yaml", s3_data["zarr"], options,
                       checkpoint={"dir": f"{bucket}/ckpt"},
                       outputs={"model": f"{bucket}/model"})
        code, out, err = cli_in_process(capsys, "run", str(tmp_path / "wf.yaml"))
        assert code == 0, out + err
        assert proxy.failures == 15  # failures were injected (and retried)
    finally:
        proxy.stop()
    assert_same_model(load_params(f"{bucket}/model", s3_server.storage_options()), reference)


def test_a_store_that_stays_down_ends_with_exit_3_naming_the_url_and_keeps_checkpoints(
        s3_server, s3_data, tmp_path, capsys):
    import threading

    proxy = FlakyProxy(s3_server.port)
    bucket = s3_server.create_bucket(bucket_name())
    store = CheckpointStore(f"{bucket}/ckpt", storage_options=s3_server.storage_options())
    went_down = []

    def take_down_after_three_iterations():
        deadline = time.monotonic() + 120
        while (len([r for r in store.read_metrics() if "iteration" in r]) < 3
               and time.monotonic() < deadline):
            time.sleep(0.05)
        proxy.down = True
        went_down.append(time.monotonic())

    watcher = threading.Thread(target=take_down_after_three_iterations, daemon=True)
    try:
        # few attempts, so that giving up takes seconds (the default: 5 attempts per request)
        options = s3_server.storage_options(
            endpoint=proxy.endpoint,
            config_kwargs={"retries": {"max_attempts": 3, "mode": "standard"}})
        write_workflow(tmp_path / "wf.yaml", s3_data["zarr"], options,
                       checkpoint={"dir": f"{bucket}/ckpt"},
                       outputs={"model": f"{bucket}/model"},
                       model={**MODEL, "max_iter": 10_000})
        watcher.start()
        code, out, err = cli_in_process(capsys, "run", str(tmp_path / "wf.yaml"))
        ended = time.monotonic()
        watcher.join()
    finally:
        proxy.stop()
    assert code == 3, out + err
    assert went_down and ended - went_down[0] < 60  # bounded: the retries give up
    assert s3_data["zarr"] in err and "Storage failed" in err
    found = store.load_latest()  # what was written before the outage is whole
    # the outage began after the third iteration's metrics, which follow the second
    # iteration's checkpoint
    assert found is not None and found[1].get("kind") != "sample"
    assert found[1]["iteration"] >= 2
