"""dgmm.io: real Zarr stores, Parquet files and .npy files written to tmp_path."""
from __future__ import annotations

import os
import pickle
import uuid

import dask.array as da
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from dgmm.data import readers as io
from dgmm.engine.persist import decide_persist
from dgmm.errors import ConfigError, DataError

# ------------------------------------------------------------------------- helpers


def _data(n_rows=103, n_features=4, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_rows, n_features)) * 10).astype(dtype)


def _write_zarr(path, data, chunk_rows, zarr_format=3, shard_rows=None, **kwargs):
    if shard_rows is not None:
        kwargs["shards"] = (shard_rows,) + data.shape[1:]
    z = zarr.create_array(
        str(path), shape=data.shape, chunks=(chunk_rows,) + data.shape[1:], dtype=data.dtype,
        zarr_format=zarr_format, **kwargs,
    )
    z[...] = data
    return z


def _write_parquet_files(directory, data, file_rows, row_group_size, names=None, extra=None):
    """Split ``data`` into files of ``file_rows`` rows (a list), named part.<i>.parquet."""
    os.makedirs(directory, exist_ok=True)
    names = names or [f"c{j}" for j in range(data.shape[1])]
    start = 0
    paths = []
    for i, n in enumerate(file_rows):
        block = data[start : start + n]
        columns = {name: block[:, j] for j, name in enumerate(names)}
        if extra:
            columns.update({k: v[start : start + n] for k, v in extra.items()})
        path = os.path.join(directory, f"part.{i}.parquet")
        pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
        paths.append(path)
        start += n
    assert start == data.shape[0]
    return paths


def _boundaries(chunks):
    return np.cumsum((0,) + tuple(chunks))


# ---------------------------------------------------------------------------- Zarr


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("stored_rows, chunks_per_task", [(10, 1), (10, 3), (7, 2), (103, 1)])
def test_open_zarr_values_dtype_and_whole_stored_chunks(
    tmp_path, zarr_format, dtype, stored_rows, chunks_per_task
):
    data = _data()
    _write_zarr(tmp_path / "x.zarr", data, stored_rows, zarr_format=zarr_format)
    itemsize = np.dtype(dtype).itemsize
    target = chunks_per_task * stored_rows * data.shape[1] * 8  # stored float64 dominates
    X, info = io.open_zarr(tmp_path / "x.zarr", dtype=dtype, target_chunk_bytes=target)

    assert X.dtype == np.dtype(dtype) and info.dtype == dtype
    np.testing.assert_array_equal(X.compute(), data.astype(dtype))
    assert X.chunks == (info.row_chunks, (4,))
    assert info.shape == (103, 4) and info.kind == "zarr" and info.columns is None
    task_rows = chunks_per_task * stored_rows
    assert info.row_chunks[:-1] == (task_rows,) * (len(info.row_chunks) - 1)
    assert 0 < info.row_chunks[-1] <= task_rows  # the uneven remainder
    # every task boundary is a stored-chunk boundary: no stored chunk is split
    assert all(b % stored_rows == 0 for b in _boundaries(info.row_chunks)[:-1])
    assert info.nbytes == 103 * 4 * itemsize


def test_open_zarr_target_below_one_stored_chunk_keeps_whole_chunks(tmp_path):
    _write_zarr(tmp_path / "x.zarr", _data(), 25)
    _X, info = io.open_zarr(tmp_path / "x.zarr", target_chunk_bytes=1)
    assert info.row_chunks == (25, 25, 25, 25, 3)


def test_open_zarr_sharded_tasks_cover_whole_shards(tmp_path):
    data = _data(n_rows=200)
    _write_zarr(tmp_path / "s.zarr", data, 10, shard_rows=40)
    X, info = io.open_zarr(tmp_path / "s.zarr", target_chunk_bytes=1)
    assert info.row_chunks == (40,) * 5
    np.testing.assert_array_equal(X.compute(), data)


def test_open_zarr_integer_store_converted_to_float(tmp_path):
    data = np.arange(60, dtype="int32").reshape(20, 3)
    _write_zarr(tmp_path / "i.zarr", data, 8)
    X, _info = io.open_zarr(tmp_path / "i.zarr", dtype="float32")
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X.compute(), data.astype("float32"))


def test_open_zarr_array_inside_group(tmp_path):
    data = _data()
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_group("inner").create_array("X", shape=data.shape, chunks=(20, 4),
                                             dtype="f8")[...] = data
    group.create_array("other", shape=(5, 2), dtype="f8")
    group.create_array("more", shape=(5, 2), dtype="f8")
    X, _info = io.open_zarr(tmp_path / "g.zarr", array_path="inner/X")
    np.testing.assert_array_equal(X.compute(), data)
    with pytest.raises(DataError, match=r"is a group, not an array; its arrays are "
                       r"\['more', 'other'\].*Pass array_path"):
        io.open_zarr(tmp_path / "g.zarr")
    with pytest.raises(DataError, match=r"No Zarr array or group found at .*array_path='nope'"):
        io.open_zarr(tmp_path / "g.zarr", array_path="nope")


def test_open_zarr_group_with_one_array_uses_it(tmp_path):
    data = _data()
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w").create_array(
        "X", shape=data.shape, chunks=(50, 4), dtype="f8")[...] = data
    X, _ = io.open_zarr(tmp_path / "g.zarr")
    np.testing.assert_array_equal(X.compute(), data)


def test_open_zarr_file_url_gives_same_data_and_fingerprint(tmp_path):
    data = _data()
    _write_zarr(tmp_path / "x.zarr", data, 30)
    _X_local, info_local = io.open_zarr(tmp_path / "x.zarr")
    X_url, info_url = io.open_zarr(f"file://{tmp_path}/x.zarr", storage_options={})
    np.testing.assert_array_equal(X_url.compute(), data)
    assert info_url.fingerprint == info_local.fingerprint
    assert info_url.path.startswith("file://")


def test_open_zarr_memory_url(tmp_path):
    data = _data()
    url = f"memory://dgmm-{uuid.uuid4().hex}/x.zarr"
    _write_zarr(url, data, 30)
    X, info = io.open_zarr(url)
    assert info.row_chunks == (103,)
    np.testing.assert_array_equal(X.compute(scheduler="sync"), data)


def test_open_zarr_through_a_synchronous_only_filesystem(tmp_path):
    """dir:// over the local disk refuses an asynchronous instance, which zarr asks for:
    the store is the synchronous filesystem, wrapped."""
    data = _data()
    _write_zarr(tmp_path / "x.zarr", data, 30)
    X, info = io.open_zarr("dir://x.zarr", storage_options={"path": str(tmp_path)})
    assert info.row_chunks == (103,)
    np.testing.assert_array_equal(X.compute(scheduler="sync"), data)


def test_zarr_fingerprint_stable_and_sensitive(tmp_path):
    _write_zarr(tmp_path / "x.zarr", _data(), 10)
    _, a = io.open_zarr(tmp_path / "x.zarr")
    _, b = io.open_zarr(tmp_path / "x.zarr")
    _, other_dtype = io.open_zarr(tmp_path / "x.zarr", dtype="float32")
    _, other_chunks = io.open_zarr(tmp_path / "x.zarr", target_chunk_bytes=1)
    _write_zarr(tmp_path / "y.zarr", _data(n_rows=104), 10)
    _, other_shape = io.open_zarr(tmp_path / "y.zarr")
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 32
    assert len({a.fingerprint, other_dtype.fingerprint, other_chunks.fingerprint,
                other_shape.fingerprint}) == 4


def test_open_zarr_errors(tmp_path):
    with pytest.raises(DataError, match=r"Zarr source '.*missing.zarr' does not exist\. "
                       r"Check the path"):
        io.open_zarr(tmp_path / "missing.zarr")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match=r"No Zarr array or group found at '.*empty_dir'"):
        io.open_zarr(tmp_path / "empty_dir")
    _write_zarr(tmp_path / "one.zarr", np.arange(10.0), 5)
    with pytest.raises(DataError, match=r"Zarr array '.*one.zarr' is a 1-D array of shape "
                       r"\(10,\).*store it with shape \(10, 1\)"):
        io.open_zarr(tmp_path / "one.zarr")
    _write_zarr(tmp_path / "three.zarr", np.zeros((4, 3, 2)), 2)
    with pytest.raises(DataError, match=r"is a 3-D array of shape \(4, 3, 2\)"):
        io.open_zarr(tmp_path / "three.zarr")
    _write_zarr(tmp_path / "empty.zarr", np.zeros((0, 3)), 1)
    with pytest.raises(DataError, match=r"Zarr array '.*empty.zarr' has zero rows"):
        io.open_zarr(tmp_path / "empty.zarr")
    zarr.create_array(str(tmp_path / "text.zarr"), shape=(4, 2), dtype=str)
    with pytest.raises(DataError, match=r"text.zarr' has dtype .* which is not numeric"):
        io.open_zarr(tmp_path / "text.zarr")
    _write_zarr(tmp_path / "ok.zarr", _data(), 10)
    with pytest.raises(ConfigError, match=r"dtype must be one of \('float64', 'float32'\), "
                       r"got 'int32'"):
        io.open_zarr(tmp_path / "ok.zarr", dtype="int32")
    with pytest.raises(ConfigError, match=r"target_chunk_bytes must be a positive integer"):
        io.open_zarr(tmp_path / "ok.zarr", target_chunk_bytes=0)


# ------------------------------------------------------------------------- Parquet


@pytest.fixture
def parquet_dataset(tmp_path):
    """Three files of 37, 50 and 16 rows, row groups of 8 (uneven last groups)."""
    data = _data()
    labels = np.array([f"s{i}" for i in range(103)])
    _write_parquet_files(tmp_path / "ds", data, [37, 50, 16], 8, extra={"name": labels})
    return tmp_path / "ds", data


@pytest.mark.parametrize("form", ["file", "dir", "glob", "file_url", "dir_url"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_open_parquet_forms_values_and_metadata_chunks(parquet_dataset, form, dtype):
    directory, data = parquet_dataset
    path, expected = {
        "file": (directory / "part.1.parquet", data[37:87]),
        "dir": (directory, data),
        "glob": (f"{directory}/part.*.parquet", data),
        "file_url": (f"file://{directory}/part.1.parquet", data[37:87]),
        "dir_url": (f"file://{directory}", data),
    }[form]
    X, info = io.open_parquet(path, dtype=dtype, target_chunk_bytes=1)
    assert X.dtype == np.dtype(dtype)
    assert info.columns == ["c0", "c1", "c2", "c3"]  # 'name' is a string: not a default
    # one task per row group, sizes from the footers: known without reading the data
    groups = [pq.ParquetFile(f).metadata for f in sorted(directory.glob("part.*.parquet"))]
    expected_chunks = tuple(
        m.row_group(i).num_rows for m in groups for i in range(m.num_row_groups)
    )
    if form.startswith("file"):
        expected_chunks = (8,) * 6 + (2,)
    assert info.row_chunks == expected_chunks and X.chunks[0] == expected_chunks
    assert not any(np.isnan(c) for c in X.chunks[0])
    np.testing.assert_array_equal(X.compute(), expected.astype(dtype))


def test_open_parquet_groups_row_groups_and_small_files_to_target(parquet_dataset):
    directory, data = parquet_dataset
    # 20 rows x 4 columns x 8 bytes per task: row groups of 8 are grouped by two; the
    # 5-row tail of file 0 goes with the first group of file 1, and the 2-row tail of
    # file 1 with its previous group and the first group of file 2
    X, info = io.open_parquet(directory, target_chunk_bytes=20 * 4 * 8)
    assert max(info.row_chunks) <= 20 and sum(info.row_chunks) == 103
    assert info.row_chunks == (16, 16, 13, 16, 16, 18, 8)
    np.testing.assert_array_equal(X.compute(), data)
    # slices across task boundaries read the right rows
    np.testing.assert_array_equal(X[10:70:3].compute(), data[10:70:3])
    np.testing.assert_array_equal(X[[5, 40, 99], 1:3].compute(), data[[5, 40, 99], 1:3])


def _bytes_read_by_this_process() -> int:
    with open("/proc/self/io") as handle:
        return int(next(line for line in handle if line.startswith("rchar:")).split()[1])


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc/self/io")
def test_open_parquet_reads_footers_only(tmp_path):
    """Opening a 32 MB dataset reads its footers, not its pages: the row chunks are known
    from the metadata alone."""
    rng = np.random.default_rng(0)
    for i in range(4):
        pq.write_table(pa.table({"a": rng.standard_normal(1_000_000)}),
                       tmp_path / f"part.{i}.parquet", row_group_size=250_000,
                       compression="none")
    size = sum(f.stat().st_size for f in tmp_path.glob("*.parquet"))
    io.open_parquet(tmp_path / "part.0.parquet")  # warm up imports and caches
    before = _bytes_read_by_this_process()
    X, info = io.open_parquet(tmp_path, target_chunk_bytes=1)
    opened = _bytes_read_by_this_process() - before
    assert info.row_chunks == (250_000,) * 16
    # pyarrow reads the last 64 KiB of each file to find its footer
    assert opened < 4 * 128 * 2**10 and opened < 0.05 * size, (opened, size)
    before = _bytes_read_by_this_process()
    X.sum().compute(scheduler="sync")
    assert _bytes_read_by_this_process() - before > size


def test_open_parquet_natural_file_order_and_hidden_files(tmp_path):
    data = _data(n_rows=30)
    directory = tmp_path / "ds"
    directory.mkdir()
    for i, start in enumerate(range(0, 30, 10)):
        name = ["part.2.parquet", "part.10.parquet", "part.100.parquet"][i]
        pq.write_table(pa.table({"a": data[start : start + 10, 0]}), directory / name)
    (directory / "_SUCCESS").write_text("")
    (directory / ".part.0.parquet.crc").write_bytes(b"\x00\x01")
    pq.write_metadata(pa.schema([("a", pa.float64())]), directory / "_common_metadata")
    X, _info = io.open_parquet(directory)
    np.testing.assert_array_equal(X.compute()[:, 0], data[:, 0])


def test_open_parquet_columns_selection_order_and_types(tmp_path):
    n = 12
    table = pa.table({
        "i": pa.array(np.arange(n, dtype="int16")),
        "u": pa.array(np.arange(n, dtype="uint32")),
        "b": pa.array(np.arange(n) % 2 == 0),
        "f": pa.array(np.linspace(0, 1, n, dtype="float32")),
        "s": pa.array([str(i) for i in range(n)]),
        "__index_level_0__": pa.array(np.arange(n)),
    })
    pq.write_table(table, tmp_path / "t.parquet")
    X, info = io.open_parquet(tmp_path / "t.parquet")
    assert info.columns == ["i", "u", "b", "f"]
    X, info = io.open_parquet(tmp_path / "t.parquet", columns=["f", "i"], dtype="float32")
    assert info.columns == ["f", "i"] and info.shape == (n, 2)
    expected = np.column_stack([np.linspace(0, 1, n, dtype="float32"), np.arange(n)])
    np.testing.assert_array_equal(X.compute(), expected.astype("float32"))


def test_open_parquet_nulls_read_as_nan(tmp_path):
    values = pa.array([1.0, None, 3.0, float("inf")])
    ints = pa.array([1, 2, None, 4], type=pa.int64())
    pq.write_table(pa.table({"v": values, "n": ints}), tmp_path / "nulls.parquet")
    X, _ = io.open_parquet(tmp_path / "nulls.parquet")
    out = X.compute()
    assert np.isnan(out[1, 0]) and np.isnan(out[2, 1]) and np.isinf(out[3, 0])
    assert out[0].tolist() == [1.0, 1.0]


def test_open_parquet_memory_url():
    data = _data(n_rows=40)
    import fsspec

    root = f"memory://dgmm-{uuid.uuid4().hex}/ds"
    fs = fsspec.filesystem("memory")
    for i in range(2):
        with fs.open(f"{root}/part.{i}.parquet", "wb") as handle:
            pq.write_table(pa.table({"a": data[i * 20 : (i + 1) * 20, 0]}), handle,
                           row_group_size=7)
    X, info = io.open_parquet(root)
    assert info.row_chunks == (40,)
    np.testing.assert_array_equal(X.compute(scheduler="sync")[:, 0], data[:, 0])


def test_open_parquet_errors(parquet_dataset, tmp_path):
    directory, _ = parquet_dataset
    with pytest.raises(DataError, match=r"Parquet source '.*nowhere' does not exist"):
        io.open_parquet(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"the pattern matches no file"):
        io.open_parquet(f"{directory}/*.csv")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").write_text("")
    with pytest.raises(DataError, match=r"is a directory with no data files"):
        io.open_parquet(tmp_path / "empty")
    with pytest.raises(DataError, match=r"column 'name' \(string\) is not numeric.*The "
                       r"numeric columns are \['c0', 'c1', 'c2', 'c3'\]"):
        io.open_parquet(directory, columns=["c0", "name"])
    with pytest.raises(DataError, match=r"has no column 'zz'; the columns available are "
                       r"\['c0', 'c1', 'c2', 'c3', 'name'\]"):
        io.open_parquet(directory, columns=["c1", "zz"])
    with pytest.raises(ConfigError, match=r"columns for Parquet source .* is an empty list"):
        io.open_parquet(directory, columns=[])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "part.0.parquet").write_bytes(b"not a parquet file at all")
    with pytest.raises(DataError, match=r"Cannot read the Parquet footer of .*part.0.parquet"):
        io.open_parquet(bad)
    pq.write_table(pa.table({"a": pa.array([], pa.float64())}), tmp_path / "zero.parquet")
    with pytest.raises(DataError, match=r"Parquet source '.*zero.parquet' has zero rows"):
        io.open_parquet(tmp_path / "zero.parquet")
    pq.write_table(pa.table({"s": ["a", "b"]}), tmp_path / "text.parquet")
    with pytest.raises(DataError, match=r"has no numeric column \(columns: \['s'\]\)"):
        io.open_parquet(tmp_path / "text.parquet")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pq.write_table(pa.table({"a": [1.0], "b": [2.0]}), mixed / "part.0.parquet")
    pq.write_table(pa.table({"a": [1.0]}), mixed / "part.1.parquet")
    with pytest.raises(DataError, match=r"file '.*part.1.parquet' has no column 'b'"):
        io.open_parquet(mixed)


def test_open_parquet_file_changed_after_open_is_reported(tmp_path):
    pq.write_table(pa.table({"a": np.arange(10.0)}), tmp_path / "f.parquet")
    X, _ = io.open_parquet(tmp_path / "f.parquet")
    pq.write_table(pa.table({"a": np.arange(4.0)}), tmp_path / "f.parquet")
    with pytest.raises(DataError, match=r"changed after it was opened.*Re-open the source"):
        X.compute()


def test_parquet_fingerprint_tracks_files(tmp_path):
    pq.write_table(pa.table({"a": np.arange(10.0)}), tmp_path / "f.parquet")
    _, a = io.open_parquet(tmp_path / "f.parquet")
    _, b = io.open_parquet(tmp_path / "f.parquet")
    assert a.fingerprint == b.fingerprint
    pq.write_table(pa.table({"a": np.arange(11.0)}), tmp_path / "f.parquet")
    _, c = io.open_parquet(tmp_path / "f.parquet")
    assert c.fingerprint != a.fingerprint


# ----------------------------------------------------------------------------- npy


@pytest.mark.parametrize("stored", ["float64", "float32", "int64"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_open_npy_values_and_chunks(tmp_path, stored, dtype):
    data = _data(dtype="float64").astype(stored)
    np.save(tmp_path / "x.npy", data)
    rows_per_task = 10
    target = rows_per_task * 4 * np.dtype(dtype).itemsize
    X, info = io.open_npy(tmp_path / "x.npy", dtype=dtype, target_chunk_bytes=target)
    assert info.row_chunks == (10,) * 10 + (3,) and info.kind == "npy"
    assert X.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(X.compute(), data.astype(dtype))
    np.testing.assert_array_equal(X[17:44].compute(), data[17:44].astype(dtype))


def test_open_npy_fortran_order(tmp_path):
    data = np.asfortranarray(_data())
    np.save(tmp_path / "f.npy", data)
    X, _ = io.open_npy(tmp_path / "f.npy", target_chunk_bytes=200)
    np.testing.assert_array_equal(X.compute(), data)


def test_npy_reader_pickles_small(tmp_path):
    np.save(tmp_path / "x.npy", _data(n_rows=20_000))
    X, _ = io.open_npy(tmp_path / "x.npy", target_chunk_bytes=80_000)
    graph = dict(X.__dask_graph__())
    assert len(pickle.dumps(graph)) < 50_000  # the file is ~640 kB: not in the graph


def test_open_npy_errors(tmp_path):
    with pytest.raises(DataError, match=r"npy source '.*nope.npy' does not exist"):
        io.open_npy(tmp_path / "nope.npy")
    (tmp_path / "junk.npy").write_bytes(b"junk" * 10)
    with pytest.raises(DataError, match=r"Cannot read '.*junk.npy' as a .npy array"):
        io.open_npy(tmp_path / "junk.npy")
    np.save(tmp_path / "one.npy", np.arange(5.0))
    with pytest.raises(DataError, match=r"npy file '.*one.npy' is a 1-D array"):
        io.open_npy(tmp_path / "one.npy")
    np.save(tmp_path / "zero.npy", np.zeros((0, 2)))
    with pytest.raises(DataError, match=r"npy file '.*zero.npy' has zero rows"):
        io.open_npy(tmp_path / "zero.npy")
    np.save(tmp_path / "cplx.npy", np.zeros((3, 2), complex))
    with pytest.raises(DataError, match=r"has dtype complex128, which is not numeric"):
        io.open_npy(tmp_path / "cplx.npy")


# ----------------------------------------------------------------------- in memory


def test_from_array_numpy_and_dask():
    data = _data()
    X, info = io.from_array(data, target_chunk_bytes=20 * 4 * 8)
    assert info.kind == "array" and info.path is None
    assert info.row_chunks == (20,) * 5 + (3,)
    np.testing.assert_array_equal(X.compute(), data)
    _, same = io.from_array(data.copy(), target_chunk_bytes=20 * 4 * 8)
    changed = data.copy()
    changed[5, 2] += 1
    _, other = io.from_array(changed, target_chunk_bytes=20 * 4 * 8)
    assert same.fingerprint == info.fingerprint != other.fingerprint

    lazy = da.from_array(data, chunks=(30, 2))
    X, info = io.from_array(lazy, dtype="float32")
    assert X.chunks == ((30, 30, 30, 13), (4,)) and X.dtype == np.float32
    np.testing.assert_array_equal(X.compute(), data.astype("float32"))


def test_from_array_errors():
    with pytest.raises(DataError, match=r"in-memory array is a 1-D array"):
        io.from_array(np.arange(3.0))
    with pytest.raises(DataError, match=r"in-memory array has zero rows"):
        io.from_array(np.zeros((0, 3)))
    unknown = da.from_array(np.ones((10, 2)), chunks=5)
    unknown = unknown[unknown[:, 0] > 0]
    with pytest.raises(DataError, match=r"unknown row chunk sizes.*compute_chunk_sizes"):
        io.from_array(unknown)


# ------------------------------------------------------------- dispatch and checks


def test_open_source_dispatch(tmp_path):
    data = _data()
    _write_zarr(tmp_path / "x.zarr", data, 10)
    np.save(tmp_path / "x.npy", data)
    pq.write_table(pa.table({"a": data[:, 0]}), tmp_path / "x.parquet")
    assert io.open_source("zarr", tmp_path / "x.zarr")[1].kind == "zarr"
    assert io.open_source("npy", tmp_path / "x.npy", dtype="float32")[1].dtype == "float32"
    X, _info = io.open_source("parquet", tmp_path / "x.parquet", columns=["a"])
    np.testing.assert_array_equal(X.compute()[:, 0], data[:, 0])
    with pytest.raises(ConfigError, match=r"Unknown data kind 'csv' .* use one of "
                       r"\('zarr', 'parquet', 'npy'\)"):
        io.open_source("csv", tmp_path / "x.csv")
    with pytest.raises(ConfigError, match=r"Invalid option for a npy source .*columns"):
        io.open_source("npy", tmp_path / "x.npy", columns=["a"])


def test_validate_rows(tmp_path):
    _, info = io.from_array(np.ones((3, 2)))
    io.validate_rows(info, 3)
    with pytest.raises(DataError, match=r"array source the in-memory array has 3 rows, fewer "
                       r"than n_components=4"):
        io.validate_rows(info, 4)
    np.save(tmp_path / "x.npy", np.ones((2, 2)))
    _, info = io.open_npy(tmp_path / "x.npy")
    with pytest.raises(DataError, match=r"npy source .*x.npy has 2 rows, fewer than "
                       r"n_components=5.*Use more data or fewer components"):
        io.validate_rows(info, 5)


def test_data_info_to_dict_is_json_ready(tmp_path):
    import json

    _write_zarr(tmp_path / "x.zarr", _data(), 10)
    _, info = io.open_zarr(tmp_path / "x.zarr")
    assert {info} == {io.open_zarr(tmp_path / "x.zarr")[1]}  # hashable, equal when reopened
    doc = json.loads(json.dumps(info.to_dict()))
    assert doc["shape"] == [103, 4] and sum(doc["row_chunks"]) == 103
    assert "103 rows x 4 features" in info.describe()


# ------------------------------------------------------------------------- persist


def test_decide_persist_explicit_and_local():
    import psutil

    assert decide_persist(10**15, True) is True
    assert decide_persist(10**15, "true") is True
    assert decide_persist(1, "false") is False
    assert decide_persist(1, False) is False
    available = psutil.virtual_memory().available
    assert decide_persist(int(0.1 * available), "auto") is True
    assert decide_persist(int(0.5 * available), "auto") is False
    with pytest.raises(ConfigError, match=r"persist must be 'auto', true or false, got 'maybe'"):
        decide_persist(1, "maybe")


def test_decide_persist_auto_from_worker_memory_limits():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      memory_limit="100MiB", dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        total = 2 * 100 * 2**20
        assert decide_persist(int(0.45 * total), "auto", client) is True
        assert decide_persist(int(0.55 * total), "auto", client) is False


# ----------------------------------------------------------- sources on a cluster


def test_sources_compute_in_worker_processes(tmp_path, cluster_client):
    data = _data(n_rows=500)
    _write_zarr(tmp_path / "x.zarr", data, 64)
    np.save(tmp_path / "x.npy", data)
    _write_parquet_files(tmp_path / "ds", data, [200, 300], 50)
    for X, _ in (
        io.open_zarr(tmp_path / "x.zarr", target_chunk_bytes=1),
        io.open_npy(tmp_path / "x.npy", target_chunk_bytes=4000),
        io.open_parquet(tmp_path / "ds", target_chunk_bytes=1),
    ):
        assert X.npartitions > 2
        np.testing.assert_array_equal(cluster_client.compute(X, sync=True), data)


# --------------------------------------------- non-finite rows, through the estimator


def _blobs_with_bad_rows(bad_rows):
    from dgmm.data.synthetic import sample_chunk, true_params

    data = sample_chunk(400, 0, 3, true_params(3, 2, "diag", seed=3))
    for i, row in enumerate(bad_rows):
        data[row, i % 3] = [np.nan, np.inf, -np.inf][i % 3]
    return data


@pytest.mark.parametrize("kind", ["zarr", "parquet"])
def test_nonfinite_rows_raise_or_drop_on_real_files(tmp_path, kind):
    from dgmm import GaussianMixture

    bad_rows = [57, 130, 131, 390]
    data = _blobs_with_bad_rows(bad_rows)
    if kind == "zarr":
        _write_zarr(tmp_path / "x.zarr", data, 50)
        X, _ = io.open_zarr(tmp_path / "x.zarr", target_chunk_bytes=1)
    else:
        _write_parquet_files(tmp_path / "ds", data, [150, 250], 60)
        X, _ = io.open_parquet(tmp_path / "ds", target_chunk_bytes=1)
    assert X.npartitions > 3
    settings = {"n_components": 2, "covariance_type": "diag", "random_state": 0, "max_iter": 20}
    with pytest.raises(DataError, match=r"The data hold 4 row\(s\) with NaN or inf values "
                       r"\(the first at row 57\)"):
        GaussianMixture(**settings).fit(X)
    dropped = GaussianMixture(nonfinite="drop", **settings).fit(X)
    assert dropped.n_nonfinite_ == 4
    clean = np.delete(data, bad_rows, axis=0)
    reference = GaussianMixture(**settings).fit(
        da.from_array(clean, chunks=(50, 3)))
    order = np.argsort(dropped.means_[:, 0])
    ref_order = np.argsort(reference.means_[:, 0])
    np.testing.assert_allclose(dropped.means_[order], reference.means_[ref_order], rtol=1e-6)
    np.testing.assert_allclose(dropped.weights_[order], reference.weights_[ref_order],
                               rtol=1e-6)
