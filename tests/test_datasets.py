"""dgmm.datasets: synthetic mixtures written chunk by chunk to real Zarr and Parquet."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from dgmm.data import readers as io
from dgmm.data import synthetic as datasets
from dgmm.errors import ConfigError, DataError

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def _mixture_moments(params):
    """Mean (d,) and covariance (d, d) of the whole mixture."""
    w, mu = params.weights, params.means
    d = mu.shape[1]
    cov = params.covariances
    per_component = {
        "full": lambda k: cov[k],
        "tied": lambda k: cov,
        "diag": lambda k: np.diag(cov[k]),
        "spherical": lambda k: cov[k] * np.eye(d),
    }[params.covariance_type]
    mean = w @ mu
    second = sum(w[k] * (per_component(k) + np.outer(mu[k], mu[k])) for k in range(len(w)))
    return mean, second - np.outer(mean, mean)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_true_params_shape_weights_and_separation(covariance_type):
    params = datasets.true_params(5, 4, covariance_type, seed=1, separation=3.0)
    assert params.covariance_type == covariance_type and params.means.shape == (4, 5)
    assert np.isclose(params.weights.sum(), 1.0) and params.weights.min() >= 1 / 8 - 1e-12
    cov = params.covariances
    max_var = {
        "full": lambda: max(np.linalg.eigvalsh(c).max() for c in cov),
        "tied": lambda: np.linalg.eigvalsh(cov).max(),
        "diag": lambda: cov.max(),
        "spherical": lambda: cov.max(),
    }[covariance_type]()
    gaps = np.linalg.norm(params.means[:, None] - params.means[None], axis=2)
    closest = gaps[np.triu_indices(4, 1)].min()
    assert np.isclose(closest, 3.0 * np.sqrt(max_var))
    again = datasets.true_params(5, 4, covariance_type, seed=1, separation=3.0)
    assert again.allclose(params)
    assert not datasets.true_params(5, 4, covariance_type, seed=2).allclose(params)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_chunk_follows_one_component(covariance_type):
    params = datasets.true_params(3, 1, covariance_type, seed=4)
    X = datasets.sample_chunk(40_000, 0, 4, params)
    expected_mean, expected_cov = _mixture_moments(params)
    np.testing.assert_allclose(X.mean(axis=0), expected_mean, atol=0.03)
    np.testing.assert_allclose(np.cov(X.T), expected_cov, atol=0.06)


@pytest.mark.parametrize(
    "fmt, zarr_format, dtype",
    [("zarr", 3, "float64"), ("zarr", 2, "float64"), ("zarr", 3, "float32"),
     ("parquet", None, "float64"), ("parquet", None, "float32")],
)
def test_make_gmm_data_layout_and_moments(tmp_path, fmt, zarr_format, dtype):
    path = tmp_path / ("data.zarr" if fmt == "zarr" else "data.parquet")
    kwargs = {"zarr_format": zarr_format} if zarr_format else {}
    info, params = datasets.make_gmm_data(
        path, 30_001, 3, 3, covariance_type="full", chunk_rows=4_000, seed=7, dtype=dtype,
        separation=3.0, **kwargs,
    )
    assert info.kind == fmt and info.shape == (30_001, 3) and info.dtype == dtype
    if fmt == "zarr":
        z = zarr.open_array(str(path), mode="r")
        assert z.chunks == (4_000, 3) and z.dtype == np.dtype(dtype)
        assert z.metadata.zarr_format == zarr_format
        X, _ = io.open_zarr(path, dtype=dtype, target_chunk_bytes=1)
        assert X.chunks[0] == (4_000,) * 7 + (2_001,)
    else:
        parts = sorted(p for p in os.listdir(path) if p.endswith(".parquet"))
        assert len(parts) == 8 and parts[0] == "part-00000.parquet"
        rows = [pq.ParquetFile(path / p).metadata for p in parts]
        assert [m.num_rows for m in rows] == [4_000] * 7 + [2_001]
        assert all(m.num_row_groups == 1 for m in rows)
        X, open_info = io.open_parquet(path, dtype=dtype, target_chunk_bytes=1)
        assert open_info.columns == ["x0", "x1", "x2"]
    data = X.compute().astype(np.float64)
    mean, cov = _mixture_moments(params)
    scale = np.sqrt(np.diag(cov))
    # sampling error of a mean over 30,000 rows is scale / 173: allow ~6 standard errors
    np.testing.assert_allclose(data.mean(axis=0), mean, atol=float(6 * scale.max() / 173))
    np.testing.assert_allclose(np.cov(data.T), cov, rtol=0.05, atol=0.05 * scale.max() ** 2)
    assert datasets.load_true_params(path).allclose(params)
    assert os.listdir(tmp_path) == [path.name]  # no temporary left beside it


def test_same_seed_same_data_on_any_scheduler(tmp_path, cluster_client):
    datasets.make_gmm_data(tmp_path / "a.zarr", 5_000, 2, 2, chunk_rows=700, seed=3)
    datasets.make_gmm_data(tmp_path / "b.zarr", 5_000, 2, 2, chunk_rows=700, seed=3,
                           client=cluster_client)
    datasets.make_gmm_data(tmp_path / "c.zarr", 5_000, 2, 2, chunk_rows=700, seed=4)
    datasets.make_gmm_data(tmp_path / "d.parquet", 5_000, 2, 2, chunk_rows=700, seed=3,
                           client=cluster_client)
    a = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")[:]
    b = zarr.open_array(str(tmp_path / "b.zarr"), mode="r")[:]
    c = zarr.open_array(str(tmp_path / "c.zarr"), mode="r")[:]
    d = io.open_parquet(tmp_path / "d.parquet")[0].compute()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, d)
    assert not np.array_equal(a, c)
    # chunk i is sample_chunk(rows, i, seed): generated independently of the others
    np.testing.assert_array_equal(
        a[1400:2100], datasets.sample_chunk(700, 2, 3, datasets.load_true_params(
            tmp_path / "a.zarr")))


def test_default_chunking_and_attributes(tmp_path):
    info, _ = datasets.make_gmm_data(tmp_path / "d.zarr", 1_000, 4, 2,
                                     covariance_type="diag")
    assert info.row_chunks == (1_000,)
    z = zarr.open_array(str(tmp_path / "d.zarr"), mode="r")
    assert z.chunks == (1_000, 4)  # 16 MiB chunks, capped at n_samples
    doc = z.attrs[datasets.TRUE_PARAMS_KEY]
    assert doc["format"] == datasets.DOCUMENT_FORMAT
    assert doc["settings"]["seed"] == 0 and doc["settings"]["n_samples"] == 1_000
    assert np.asarray(doc["means"]).shape == (2, 4)
    _info, _ = datasets.make_gmm_data(tmp_path / "big.parquet", 10, 1_000, 1,
                                     covariance_type="diag")
    sidecar = json.loads((tmp_path / "big.parquet" / "_true_params.json").read_text())
    assert sidecar["settings"]["chunk_rows"] == 10


def test_file_url_and_overwrite(tmp_path):
    url = f"file://{tmp_path}/u.zarr"
    info, params = datasets.make_gmm_data(url, 500, 2, 2, chunk_rows=100)
    assert info.path == url and datasets.load_true_params(url).allclose(params)
    with pytest.raises(ConfigError, match=r"'.*u.zarr' already exists; pass overwrite=True"):
        datasets.make_gmm_data(url, 500, 2, 2)
    info, other = datasets.make_gmm_data(url, 800, 2, 2, seed=9, overwrite=True)
    assert info.n_samples == 800 and datasets.load_true_params(url).allclose(other)
    assert sorted(os.listdir(tmp_path)) == ["u.zarr"]


def test_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"covariance_type must be .*got 'banana'"):
        datasets.make_gmm_data(tmp_path / "x.zarr", 10, 2, 2, covariance_type="banana")
    with pytest.raises(ConfigError, match=r"n_samples must be at least 1, got 0"):
        datasets.make_gmm_data(tmp_path / "x.zarr", 0, 2, 2)
    with pytest.raises(ConfigError, match=r"chunk_rows must be at least 1, got 0"):
        datasets.make_gmm_data(tmp_path / "x.zarr", 10, 2, 2, chunk_rows=0)
    with pytest.raises(ConfigError, match=r"fmt must be 'zarr' or 'parquet', got 'csv'"):
        datasets.make_gmm_data(tmp_path / "x.zarr", 10, 2, 2, fmt="csv")
    with pytest.raises(ConfigError, match=r"dtype must be one of"):
        datasets.make_gmm_data(tmp_path / "x.zarr", 10, 2, 2, dtype="int8")
    assert os.listdir(tmp_path) == []
    with pytest.raises(DataError, match=r"'.*nothing' does not exist; cannot read its true"):
        datasets.load_true_params(tmp_path / "nothing")
    zarr.create_array(str(tmp_path / "plain.zarr"), shape=(3, 2), dtype="f8")
    with pytest.raises(DataError, match=r"holds no true parameters .*only data written by "
                       r"dgmm.data.make_gmm_data"):
        datasets.load_true_params(tmp_path / "plain.zarr")
    (tmp_path / "fake.parquet").mkdir()
    (tmp_path / "fake.parquet" / "_true_params.json").write_text('{"format": "other"}')
    with pytest.raises(DataError, match=r"does not hold dgmm true parameters in format "
                       r"'dgmm-true-params/1' \(found 'other'\)"):
        datasets.load_true_params(tmp_path / "fake.parquet")
