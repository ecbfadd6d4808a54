"""Synthetic data from a known Gaussian mixture, written chunk by chunk in parallel.

``make_gmm_data`` draws the true parameters from ``seed`` and writes every chunk from its
own task with a generator seeded by ``(seed, chunk index)``: the data depend only on the
generator settings, never on the scheduler. The true parameters are stored beside the
data (Zarr: attribute ``dgmm_true_params``; Parquet: ``_true_params.json``) and read back
by :func:`load_true_params`. The output is published atomically
(``dgmm.data.publish.publish_directory``). Layouts: docs/workflows.md, "Synthetic data on
disk"; design: docs/design.md, "Synthetic data".
"""
from __future__ import annotations

import json
import logging
import os

import dask
import numpy as np

from ..core.families import COVARIANCE_TYPES, family
from ..core.params import GMMParams
from ..errors import ConfigError, DataError
from .files import format_from_suffix, url_to_fs, zarr_target
from .layout import DataInfo, check_dtype, even_chunks
from .outputs import atomic_directory, compute_all
from .parquet import open_parquet
from .publish import resolve
from .readers import open_zarr

log = logging.getLogger(__name__)

TRUE_PARAMS_KEY = "dgmm_true_params"
TRUE_PARAMS_FILE = "_true_params.json"
DOCUMENT_FORMAT = "dgmm-true-params/1"
#: default size of one stored chunk (one generating task)
STORED_CHUNK_BYTES = 16 * 2**20
#: component variances (eigenvalues for full/tied) are drawn uniformly in this range
VARIANCE_RANGE = (0.5, 2.0)


def true_params(
    n_features: int,
    n_components: int,
    covariance_type: str = "full",
    *,
    seed: int = 0,
    separation: float = 4.0,
) -> GMMParams:
    """The generating mixture for ``seed``.

    weights: half uniform, half Dirichlet(2) (no component below 1/(2K));
    covariances: eigenvalues uniform in [0.5, 2] (random rotations for full and tied);
    means: standard normal draws scaled so that the closest two are ``separation`` times
    the largest component standard deviation apart.
    """
    try:
        kind = family(covariance_type)
    except ValueError:
        raise ConfigError(
            f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}, got "
            f"{covariance_type!r}."
        ) from None
    k, d = int(n_components), int(n_features)
    rng = np.random.default_rng([int(seed), 2**31 - 1])  # apart from the chunk streams
    weights = 0.5 / k + 0.5 * rng.dirichlet(np.full(k, 2.0))
    weights /= weights.sum()
    low, high = VARIANCE_RANGE

    covariances = kind.random_covariances(rng, k, d, low, high)
    max_var = kind.largest_variance(covariances)
    means = rng.standard_normal((k, d))
    if k > 1:
        gaps = np.linalg.norm(means[:, None, :] - means[None, :, :], axis=2)
        closest = gaps[np.triu_indices(k, 1)].min()
        means *= separation * np.sqrt(max_var) / max(closest, 1e-12)
    covariances = kind.symmetrized(covariances)
    return GMMParams.from_covariances(weights, means, covariances, covariance_type)


def sample_chunk(
    n_rows: int, chunk_index: int, seed: int, params: GMMParams, dtype="float64"
) -> np.ndarray:
    """Rows ``chunk_index`` of the data set: (n_rows, n_features) drawn from ``params``
    with ``numpy.random.default_rng([seed, chunk_index])``."""
    rng = np.random.default_rng([int(seed), int(chunk_index)])
    k, d = params.means.shape
    labels = rng.choice(k, size=n_rows, p=params.weights)
    X = rng.standard_normal((n_rows, d))
    X = params.family.scale_standard_normal(X, labels, params.covariances)
    X += params.means[labels]
    return X.astype(dtype, copy=False)


def _document(params: GMMParams, **settings) -> dict:
    doc = {"format": DOCUMENT_FORMAT, "covariance_type": params.covariance_type}
    doc.update({name: params.to_arrays()[name].tolist()
                for name in ("weights", "means", "covariances")})
    doc["settings"] = settings
    return doc


def _params_from_document(doc: dict, where: str) -> GMMParams:
    if doc.get("format") != DOCUMENT_FORMAT:
        raise DataError(
            f"{where} does not hold dgmm true parameters in format {DOCUMENT_FORMAT!r} "
            f"(found {doc.get('format')!r}). Regenerate the data with make_gmm_data."
        )
    return GMMParams.from_covariances(
        np.asarray(doc["weights"]),
        np.asarray(doc["means"]),
        np.asarray(doc["covariances"]),
        doc["covariance_type"],
    )


def _write_zarr_chunk(n_rows, chunk_index, start, seed, params, dtype, z) -> int:
    """Generate chunk ``chunk_index`` and write it to rows [start, start + n_rows) of ``z``."""
    z[start : start + n_rows] = sample_chunk(n_rows, chunk_index, seed, params, dtype)
    return n_rows


def _write_parquet_part(n_rows, chunk_index, seed, params, dtype, fs, path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    X = sample_chunk(n_rows, chunk_index, seed, params, dtype)
    table = pa.table({f"x{j}": np.ascontiguousarray(X[:, j]) for j in range(X.shape[1])})
    with fs.open(path, "wb") as handle:
        pq.write_table(table, handle, row_group_size=max(1, n_rows))
    return n_rows


def infer_data_format(path: str, fmt: str | None) -> str:
    """'zarr' or 'parquet': ``fmt`` if given, else 'parquet' for *.parquet / *.pq paths and
    'zarr' otherwise."""
    if fmt is not None:
        if fmt not in ("zarr", "parquet"):
            raise ConfigError(f"fmt must be 'zarr' or 'parquet', got {fmt!r}.")
        return fmt
    return "parquet" if format_from_suffix(path) == "parquet" else "zarr"


def make_gmm_data(
    path: str | os.PathLike,
    n_samples: int,
    n_features: int,
    n_components: int,
    *,
    covariance_type: str = "full",
    chunk_rows: int | None = None,
    seed: int = 0,
    dtype: str = "float64",
    separation: float = 4.0,
    fmt: str | None = None,
    client=None,
    overwrite: bool = False,
    compress: bool = False,
    zarr_format: int = 3,
    storage_options: dict | None = None,
) -> tuple[DataInfo, GMMParams]:
    """Write ``n_samples`` rows drawn from a known mixture to Zarr or Parquet.

    Parameters
    ----------
    path : output path or fsspec URL (``--out``); the format follows ``fmt``, else the
        suffix (``*.parquet`` / ``*.pq`` -> Parquet, anything else -> Zarr).
    n_samples, n_features, n_components : the size (``--rows``, ``--features``,
        ``--components``).
    covariance_type : 'full' | 'tied' | 'diag' | 'spherical' of the generating mixture.
    chunk_rows : rows per stored chunk (= per generating task, = per Parquet part file);
        default: about 16 MiB of ``dtype`` per chunk.
    seed : the random seed; the same settings give the same data, whatever the cluster.
    dtype : 'float64' or 'float32' as stored.
    separation : distance between the two closest means, in units of the largest
        component standard deviation.
    fmt : 'zarr' | 'parquet' | None.
    client : distributed.Client to generate on (default: the current Dask scheduler).
    overwrite : replace an existing ``path`` (else a ConfigError is raised).
    compress : Zarr only: compress chunks with zstd (random floats barely compress, so the
        default stores them raw, which reads fastest).
    zarr_format : 3 (default) or 2.
    storage_options : passed to fsspec for URLs.

    Returns
    -------
    (DataInfo, GMMParams) : the written source opened with ``dgmm.data`` and the true
    parameters.
    """
    path = os.fspath(path).rstrip("/")
    fmt = infer_data_format(path, fmt)
    out_dtype = check_dtype(dtype)
    for name, value in (("n_samples", n_samples), ("n_features", n_features),
                        ("n_components", n_components)):
        if int(value) < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}.")
    n_samples, n_features, n_components = int(n_samples), int(n_features), int(n_components)
    if chunk_rows is None:
        chunk_rows = max(1, STORED_CHUNK_BYTES // (n_features * out_dtype.itemsize))
    if int(chunk_rows) < 1:
        raise ConfigError(f"chunk_rows must be at least 1, got {chunk_rows}.")
    chunk_rows = min(int(chunk_rows), n_samples)
    fs, fs_path = url_to_fs(path, storage_options)
    if fs.exists(fs_path) and not overwrite:
        raise ConfigError(
            f"{path!r} already exists; pass overwrite=True (--overwrite) to replace it, or "
            "choose another output path."
        )
    params = true_params(
        n_features, n_components, covariance_type, seed=seed, separation=separation
    )
    settings = {
        "n_samples": n_samples, "n_features": n_features, "n_components": n_components,
        "covariance_type": covariance_type, "chunk_rows": chunk_rows, "seed": int(seed),
        "dtype": out_dtype.name, "separation": float(separation),
    }
    document = _document(params, **settings)
    row_chunks = even_chunks(n_samples, chunk_rows)
    log.info("generating %d x %d rows in %d chunks to %s", n_samples, n_features,
             len(row_chunks), path)
    with atomic_directory(path, storage_options) as tmp:
        if fmt == "zarr":
            _write_zarr(tmp, row_chunks, params, document, settings, compress, zarr_format,
                        storage_options, client)
        else:
            _write_parquet(tmp, row_chunks, params, document, settings, storage_options,
                           client)
    if fmt == "zarr":
        info = open_zarr(path, dtype=out_dtype.name, storage_options=storage_options)[1]
    else:
        info = open_parquet(path, dtype=out_dtype.name, storage_options=storage_options)[1]
    return info, params


def _write_zarr(tmp, row_chunks, params, document, settings, compress, zarr_format,
                storage_options, client) -> None:
    import zarr

    n_features = settings["n_features"]
    store, kwargs = zarr_target(tmp, storage_options)
    kwargs["compressors"] = "auto" if compress else None
    z = zarr.create_array(
        store,
        shape=(settings["n_samples"], n_features),
        chunks=(row_chunks[0], n_features),
        dtype=settings["dtype"],
        zarr_format=zarr_format,
        attributes={TRUE_PARAMS_KEY: document},
        **kwargs,
    )
    write = dask.delayed(_write_zarr_chunk, pure=False)
    starts = np.concatenate([[0], np.cumsum(row_chunks)[:-1]]).astype(int).tolist()
    parts = [
        write(n, i, start, settings["seed"], params, settings["dtype"], z)
        for i, (n, start) in enumerate(zip(row_chunks, starts, strict=True))
    ]
    compute_all(parts, client)


def _write_parquet(tmp, row_chunks, params, document, settings, storage_options,
                   client) -> None:
    fs, root = url_to_fs(tmp, storage_options)
    fs.makedirs(root, exist_ok=True)
    width = max(5, len(str(len(row_chunks) - 1)))
    write = dask.delayed(_write_parquet_part, pure=False)
    parts = [
        write(n, i, settings["seed"], params, settings["dtype"], fs,
              f"{root}/part-{i:0{width}d}.parquet")
        for i, n in enumerate(row_chunks)
    ]
    compute_all(parts, client)
    with fs.open(f"{root}/{TRUE_PARAMS_FILE}", "w") as handle:
        json.dump(document, handle)


def load_true_params(path: str | os.PathLike, storage_options: dict | None = None) -> GMMParams:
    """The generating parameters stored beside data written by :func:`make_gmm_data`."""
    path = resolve(os.fspath(path).rstrip("/"), storage_options)
    fs, fs_path = url_to_fs(path, storage_options)
    if not fs.exists(fs_path):
        raise DataError(f"{path!r} does not exist; cannot read its true parameters.")
    sidecar = f"{fs_path}/{TRUE_PARAMS_FILE}"
    if fs.exists(sidecar):
        with fs.open(sidecar, "r") as handle:
            return _params_from_document(json.load(handle), sidecar)
    import zarr

    store, kwargs = zarr_target(path, storage_options, read_only=True)
    try:
        attrs = dict(zarr.open(store, mode="r", **kwargs).attrs)
    except FileNotFoundError:
        attrs = {}
    if TRUE_PARAMS_KEY not in attrs:
        raise DataError(
            f"{path!r} holds no true parameters (no {TRUE_PARAMS_FILE} and no Zarr "
            f"attribute {TRUE_PARAMS_KEY!r}); only data written by dgmm.data."
            "make_gmm_data (dgmm make-data) have them."
        )
    return _params_from_document(attrs[TRUE_PARAMS_KEY], path)
