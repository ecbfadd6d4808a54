"""dgmm.outputs: predictions streamed to real Zarr and Parquet outputs, atomically."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid

import dask.array as da
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from helpers import threads_running

from dgmm.core import kernels
from dgmm.data import outputs
from dgmm.data import readers as io
from dgmm.data.synthetic import sample_chunk, true_params
from dgmm.errors import ConfigError, DataError

BAD_ROWS = (3, 77, 78, 150)


@pytest.fixture(scope="module", params=["full", "diag"])
def params(request):
    return true_params(3, 4, request.param, seed=5, separation=3.0)


def _data(params, n_rows=203):
    data = sample_chunk(n_rows, 0, 11, params)
    for i, row in enumerate(BAD_ROWS):
        data[row, i % 3] = [np.nan, np.inf, -np.inf][i % 3]
    return data


def _open(kind, tmp_path, data, dtype="float64"):
    """The data as a source of ``kind`` with several chunks, the last one shorter."""
    if kind == "zarr":
        z = zarr.create_array(str(tmp_path / "in.zarr"), shape=data.shape, chunks=(25, 3),
                              dtype="f8")
        z[...] = data
        return io.open_zarr(tmp_path / "in.zarr", dtype=dtype, target_chunk_bytes=1)
    if kind == "parquet":  # row groups of 30, files of 100 and 103 rows: unequal chunks
        os.makedirs(tmp_path / "in", exist_ok=True)
        for i, (lo, hi) in enumerate([(0, 100), (100, data.shape[0])]):
            table = pa.table({f"x{j}": data[lo:hi, j] for j in range(3)})
            pq.write_table(table, tmp_path / "in" / f"part.{i}.parquet", row_group_size=30)
        return io.open_parquet(tmp_path / "in", dtype=dtype, target_chunk_bytes=1)
    np.save(tmp_path / "in.npy", data)
    return io.open_npy(tmp_path / "in.npy", dtype=dtype, target_chunk_bytes=40 * 3 * 8)


def _expected(data, params):
    finite = np.isfinite(data).all(axis=1)
    labels = np.full(data.shape[0], -1)
    proba = np.full((data.shape[0], params.n_components), np.nan)
    loglik = np.full(data.shape[0], np.nan)
    labels[finite] = kernels.predict(data[finite], params)
    proba[finite] = kernels.predict_proba(data[finite], params)
    loglik[finite] = kernels.score_samples(data[finite], params)
    return labels, proba, loglik


def _read_parquet_output(path):
    parts = sorted(os.listdir(path))
    frames = [pd.read_parquet(os.path.join(path, p)) for p in parts]
    return parts, frames, pd.concat(frames, ignore_index=True)


def _siblings(path):
    parent, name = os.path.split(str(path))
    return sorted(f for f in os.listdir(parent) if f.startswith(f".{name}."))


# ------------------------------------------------------------------------ contents


@pytest.mark.parametrize("kind", ["zarr", "parquet", "npy"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_zarr_output_matches_kernels_row_by_row(tmp_path, params, kind, dtype):
    data = _data(params)
    X, info = _open(kind, tmp_path, data, dtype)
    out = outputs.write_predictions(X, params, tmp_path / "pred.zarr")
    assert out == str(tmp_path / "pred.zarr")
    group = zarr.open_group(out, mode="r")
    assert sorted(group.array_keys()) == ["labels", "log_likelihood", "probabilities"]
    labels, proba, loglik = _expected(data.astype(dtype), params)
    assert group["labels"].dtype == np.int64
    np.testing.assert_array_equal(group["labels"][:], labels)
    np.testing.assert_allclose(group["probabilities"][:], proba, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(group["log_likelihood"][:], loglik, rtol=1e-12)
    assert (group["labels"][list(BAD_ROWS)] == -1).all()
    assert np.isnan(group["probabilities"][list(BAD_ROWS)]).all()
    assert group.attrs["n_components"] == params.n_components
    rows = info.row_chunks[0] if kind != "parquet" else max(info.row_chunks)
    assert group["labels"].chunks == (rows,)
    assert group["probabilities"].chunks == (rows, params.n_components)
    if kind != "parquet":  # regular input chunks are kept as they are
        assert info.row_chunks[-1] < info.row_chunks[0]
    assert _siblings(out) == []


@pytest.mark.parametrize("kind", ["zarr", "parquet", "npy"])
def test_parquet_output_one_part_per_input_chunk(tmp_path, params, kind):
    data = _data(params)
    X, info = _open(kind, tmp_path, data)
    out = outputs.write_predictions(X, params, tmp_path / "pred.parquet")
    parts, frames, table = _read_parquet_output(out)
    assert len(parts) == info.n_chunks == len(info.row_chunks) > 3
    assert [len(f) for f in frames] == list(info.row_chunks)
    k = params.n_components
    assert list(table.columns) == ["label"] + [f"prob_{i}" for i in range(k)] + [
        "log_likelihood"]
    assert table["label"].dtype == np.int64
    labels, proba, loglik = _expected(data, params)
    np.testing.assert_array_equal(table["label"].to_numpy(), labels)
    np.testing.assert_allclose(table[[f"prob_{i}" for i in range(k)]].to_numpy(), proba,
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(table["log_likelihood"].to_numpy(), loglik, rtol=1e-12)
    # the output reads back as a dgmm source, row for row
    Y, _ = io.open_parquet(out, columns=["log_likelihood"])
    np.testing.assert_allclose(Y.compute()[:, 0], loglik, rtol=1e-12)


def test_output_subsets(tmp_path, params):
    data = _data(params)
    X, _ = _open("zarr", tmp_path, data)
    labels, _proba, _loglik = _expected(data, params)
    z = outputs.write_predictions(X, params, tmp_path / "l.zarr", outputs=["labels"])
    assert list(zarr.open_group(z, mode="r").array_keys()) == ["labels"]
    p = outputs.write_predictions(X, params, tmp_path / "p.parquet",
                                  outputs=("log_likelihood", "probabilities"))
    _, _, table = _read_parquet_output(p)
    assert list(table.columns) == [f"prob_{i}" for i in range(params.n_components)] + [
        "log_likelihood"]
    q = outputs.write_predictions(X, params, tmp_path / "noext", format="parquet",
                                  outputs="labels")
    _, _, table = _read_parquet_output(q)
    np.testing.assert_array_equal(table["label"].to_numpy(), labels)


def test_prediction_arrays_are_lazy_and_aligned(params):
    data = _data(params)
    X = da.from_array(data, chunks=(50, 3))
    arrays = outputs.prediction_arrays(X, params)
    assert arrays["labels"].chunks == ((50, 50, 50, 50, 3),)
    assert arrays["probabilities"].chunks == ((50, 50, 50, 50, 3), (params.n_components,))
    labels, _proba, loglik = _expected(data, params)
    np.testing.assert_array_equal(arrays["labels"].compute(), labels)
    np.testing.assert_allclose(arrays["log_likelihood"].compute(), loglik, rtol=1e-12)


def test_predict_block_all_rows_bad(params):
    block = np.full((4, 3), np.nan)
    out = outputs.predict_block(block, params)
    assert out.shape == (4, 2 + params.n_components)
    assert (out[:, 0] == -1).all() and np.isnan(out[:, 1:]).all()
    assert outputs.predict_block(np.empty((0, 3)), params).shape == (0, 2 + params.n_components)


def test_write_predictions_with_a_distributed_client(tmp_path, params, cluster_client):
    data = _data(params)
    X, _info = _open("npy", tmp_path, data)
    labels, _, loglik = _expected(data, params)
    z = outputs.write_predictions(X, params, tmp_path / "c.zarr", client=cluster_client)
    np.testing.assert_array_equal(zarr.open_group(z, mode="r")["labels"][:], labels)
    p = outputs.write_predictions(X, params, tmp_path / "c.parquet", client=cluster_client)
    _, _, table = _read_parquet_output(p)
    np.testing.assert_allclose(table["log_likelihood"].to_numpy(), loglik, rtol=1e-12)


def test_a_transient_write_error_is_retried_on_the_cluster(tmp_path, params, cluster_client):
    """Every part file fails on its first write: the Dask task retries write it."""
    import fsspec
    from helpers import FailOnceFileSystem

    fsspec.register_implementation("failonce", FailOnceFileSystem, clobber=True)
    markers = tmp_path / "markers"
    markers.mkdir()
    data = _data(params)
    X = da.from_array(data, chunks=(60, 3))
    labels, _, _ = _expected(data, params)
    outputs.write_predictions(X, params, f"failonce://{tmp_path}/r.parquet",
                              client=cluster_client,
                              storage_options={"markers": str(markers)})
    assert len(os.listdir(markers)) == len(X.chunks[0])  # each part failed once
    _, _, table = _read_parquet_output(tmp_path / "r.parquet")
    np.testing.assert_array_equal(table["label"].to_numpy(), labels)


def test_fsspec_urls(tmp_path, params):
    data = _data(params)
    X = da.from_array(data, chunks=(60, 3))
    labels, _, _ = _expected(data, params)
    url = f"file://{tmp_path}/u.zarr"
    assert outputs.write_predictions(X, params, url) == url
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "u.zarr"), mode="r")
                                  ["labels"][:], labels)
    outputs.write_predictions(X, params, f"file://{tmp_path}/u.parquet")
    _, _, table = _read_parquet_output(tmp_path / "u.parquet")
    np.testing.assert_array_equal(table["label"].to_numpy(), labels)
    # a memory:// store lives in this process: write with the synchronous scheduler
    import dask
    import fsspec

    mem = f"memory://dgmm-{uuid.uuid4().hex}/m.parquet"
    with dask.config.set(scheduler="sync"):
        outputs.write_predictions(X, params, mem)
    mem_zarr = mem.replace(".parquet", ".zarr")
    with dask.config.set(scheduler="sync"):
        outputs.write_predictions(X, params, mem_zarr, outputs=["labels"])
    # memory:// has no atomic rename: each output is a version prefix named by the pointer
    from dgmm.data.publish import POINTER_NAME, resolve

    current = resolve(mem_zarr)
    assert current.startswith(mem_zarr + "/v-")
    np.testing.assert_array_equal(zarr.open_group(current, mode="r")["labels"][:], labels)
    fs = fsspec.filesystem("memory")
    assert len(fs.ls(resolve(mem))) == 4
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(mem, detail=False)) == [
        POINTER_NAME, resolve(mem).rsplit("/", 1)[1]]
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(mem.rsplit("/", 1)[0], detail=False)) == [
        "m.parquet", "m.zarr"]
    # writing again publishes a new version and removes the superseded one
    with dask.config.set(scheduler="sync"):
        outputs.write_predictions(X, params, mem_zarr, outputs=["labels"])
    assert resolve(mem_zarr) != current and not fs.exists(current)
    assert len(fs.ls(mem_zarr, detail=False)) == 2


# ------------------------------------------------------------------------- errors


def test_errors(tmp_path, params):
    X = da.from_array(_data(params), chunks=(50, 3))
    with pytest.raises(ConfigError, match=r"Cannot tell the output format of '.*pred.csv' "
                       r"from its suffix; name it \*.zarr or \*.parquet"):
        outputs.write_predictions(X, params, tmp_path / "pred.csv")
    with pytest.raises(ConfigError, match=r"format must be one of \('zarr', 'parquet'\)"):
        outputs.write_predictions(X, params, tmp_path / "p.zarr", format="hdf5")
    with pytest.raises(ConfigError, match=r"outputs must be a non-empty selection.*unknown: "
                       r"'labelz'"):
        outputs.write_predictions(X, params, tmp_path / "p.zarr", outputs=["labelz"])
    with pytest.raises(ConfigError, match=r"outputs must be a non-empty selection"):
        outputs.write_predictions(X, params, tmp_path / "p.zarr", outputs=[])
    with pytest.raises(DataError, match=r"The data to predict have shape \(203, 2\), but the "
                       r"model was fitted on 3 features"):
        outputs.write_predictions(X[:, :2], params, tmp_path / "p.zarr")
    assert not os.path.exists(tmp_path / "p.zarr")


# ---------------------------------------------------------------------- atomicity


def _fail_on_chunk(block, bad_chunk, delay=0.0, block_info=None):
    """A real failing read: chunk ``bad_chunk`` raises, the others take ``delay`` s."""
    if block_info[0]["chunk-location"][0] == bad_chunk:
        raise OSError(f"read error in chunk {bad_chunk}")
    time.sleep(delay)
    return block


def _processing(dask_scheduler):
    """The keys of the tasks that the scheduler has running on a worker."""
    return [key for key, task in dask_scheduler.tasks.items() if task.state == "processing"]


def _failing(X, bad_chunk=3, delay=0.0):
    return X.map_blocks(_fail_on_chunk, bad_chunk, delay, dtype=X.dtype)


@pytest.mark.parametrize("scheduler", ["sync", "threads", "distributed"])
@pytest.mark.parametrize("suffix", [".zarr", ".parquet"])
def test_failed_write_leaves_no_output(tmp_path, params, suffix, scheduler, request):
    """The error raised is the chunk's; the partial temporary output is removed, also
    when other chunks are still being written as the failure happens."""
    import dask

    X = da.from_array(_data(params), chunks=(20, 3))
    out = tmp_path / f"pred{suffix}"
    client = request.getfixturevalue("cluster_client") if scheduler == "distributed" else None
    config = {"scheduler": scheduler} if client is None else {}
    with dask.config.set(config), pytest.raises(OSError, match=r"read error in chunk 3"):
        outputs.write_predictions(_failing(X, 3, delay=0.05), params, out, client=client)
    assert not os.path.exists(out)
    assert _siblings(out) == []
    # no late writer can bring the temporary output back: once the error is raised no
    # task of the write is running, neither in a thread of this process nor on the cluster
    assert threads_running(_fail_on_chunk.__code__, outputs.__file__) == []
    if client is not None:
        assert client.run_on_scheduler(_processing) == []


@pytest.mark.parametrize("suffix", [".zarr", ".parquet"])
def test_failed_rewrite_keeps_the_old_output(tmp_path, params, suffix):
    data = _data(params)
    X = da.from_array(data, chunks=(20, 3))
    out = tmp_path / f"pred{suffix}"
    outputs.write_predictions(X, params, out, outputs=["labels"])
    before = sorted(os.listdir(out))
    snapshot = {f: (out / f).stat().st_mtime_ns for f in before if (out / f).is_file()}
    other = true_params(3, 4, params.covariance_type, seed=99)
    with pytest.raises(OSError, match=r"read error in chunk 7"):
        outputs.write_predictions(_failing(X, 7), other, out)
    assert sorted(os.listdir(out)) == before
    assert snapshot == {f: (out / f).stat().st_mtime_ns for f in snapshot}
    assert _siblings(out) == []
    labels, _, _ = _expected(data, params)
    got = (zarr.open_group(str(out), mode="r")["labels"][:] if suffix == ".zarr"
           else _read_parquet_output(out)[2]["label"].to_numpy())
    np.testing.assert_array_equal(got, labels)
    # a successful rewrite replaces it whole (other outputs, other parameters)
    outputs.write_predictions(X, other, out, outputs=["log_likelihood"])
    if suffix == ".zarr":
        group = zarr.open_group(str(out), mode="r")
        assert list(group.array_keys()) == ["log_likelihood"]
        np.testing.assert_allclose(group["log_likelihood"][:], _expected(data, other)[2])
    else:
        assert list(_read_parquet_output(out)[2].columns) == ["log_likelihood"]
    assert _siblings(out) == []


@pytest.mark.parametrize("suffix", [".zarr", ".parquet"])
def test_process_killed_mid_write_leaves_old_output_whole(tmp_path, params, suffix):
    """A real crash (the process exits inside a chunk): the final path keeps the old
    output, and the partial one sits only under a hidden temporary name."""
    data = _data(params)
    np.save(tmp_path / "in.npy", data)
    out = tmp_path / f"pred{suffix}"
    X, _ = io.open_npy(tmp_path / "in.npy", target_chunk_bytes=20 * 3 * 8)
    outputs.write_predictions(X, params, out, outputs=["labels"])
    before = sorted(os.listdir(out))
    script = textwrap.dedent(f"""
        import os, dask
        from dgmm.data import readers as io
        from dgmm.data import outputs
        from dgmm.data.synthetic import true_params

        calls = []

        def crash(block):
            calls.append(1)
            if len(calls) == 6:  # the sixth chunk read: earlier chunks are written
                os._exit(17)
            return block

        X, _ = io.open_npy({str(tmp_path / "in.npy")!r}, target_chunk_bytes=20 * 3 * 8)
        params = true_params(3, 4, {params.covariance_type!r}, seed=5, separation=3.0)
        with dask.config.set(scheduler="sync"):
            outputs.write_predictions(X.map_blocks(crash, dtype=X.dtype, name="crash"), params,
                                      {str(out)!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 17, result.stderr
    assert sorted(os.listdir(out)) == before
    leftovers = _siblings(out)
    assert len(leftovers) == 1 and ".tmp-" in leftovers[0]
    assert len(os.listdir(tmp_path / leftovers[0])) > 0  # it had started writing
