"""Data sources: Zarr, Parquet, ``.npy`` and in-memory arrays as row-chunked Dask arrays.

Every ``open_*`` function returns ``(X, info)``: ``X`` a lazy 2-D Dask array with known row
chunks and one column chunk, in float64 or float32; ``info`` a :class:`DataInfo` (shape,
dtype, chunking, fingerprint). Opening reads metadata only. A task reads about
``target_chunk_bytes`` of rows and never splits a stored Zarr chunk or a Parquet row group.
Non-finite values are counted by the first E-step pass, not here. See docs/design.md,
"Reading the data".
"""
from __future__ import annotations

import logging
import os
import pickle

import dask.array as da
import numpy as np

from ..engine.passes import DEFAULT_CHUNK_BYTES
from ..errors import ConfigError, DataError
from .files import is_url, url_to_fs, zarr_target
from .layout import (
    SOURCE_KINDS,
    DataInfo,
    RowSource,
    check_dtype,
    check_numeric,
    check_shape,
    check_target,
    data_fingerprint,
    even_chunks,
    missing_source,
    rows_per_task,
)
from .parquet import open_parquet
from .publish import resolve

log = logging.getLogger(__name__)


def _open_zarr_node(path: str, array_path: str | None, storage_options: dict | None):
    import zarr

    store, kwargs = (zarr_target(path, storage_options, read_only=True) if is_url(path)
                     else (path, {}))
    kwargs["mode"] = "r"
    if array_path:
        kwargs["path"] = array_path
    try:
        node = zarr.open(store, **kwargs)
    except FileNotFoundError as exc:
        inside = f" (array_path={array_path!r})" if array_path else ""
        raise DataError(
            f"No Zarr array or group found at {path!r}{inside}: {exc}. Check the path, "
            "and array_path for an array inside a group."
        ) from None
    if isinstance(node, zarr.Group):
        arrays = sorted(node.array_keys())
        groups = sorted(node.group_keys())
        if len(arrays) == 1 and not array_path:
            log.info("Zarr group %s holds one array, %r: using it", path, arrays[0])
            return node[arrays[0]], arrays[0]
        raise DataError(
            f"Zarr source {path!r}{' at ' + repr(array_path) if array_path else ''} is a "
            f"group, not an array; its arrays are {arrays or 'none'} and its groups "
            f"{groups or 'none'}. Pass array_path='<name>' (e.g. 'group/array') to choose "
            "the array to read."
        )
    return node, array_path


def open_zarr(
    path: str | os.PathLike,
    *,
    array_path: str | None = None,
    dtype: str = "float64",
    target_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    storage_options: dict | None = None,
):
    """Open a 2-D Zarr array (format 3 or 2) as a row-chunked Dask array.

    Parameters
    ----------
    path : local path or fsspec URL (``file://``, ``s3://``, ``memory://`` ...) of a Zarr
        array or group.
    array_path : path of the array inside the group at ``path`` (e.g. ``'data/X'``). When
        ``path`` is a group holding exactly one array, that array is used.
    dtype : 'float64' or 'float32', the dtype of the returned array.
    target_chunk_bytes : about how many bytes of output one task reads. Each task covers a
        whole number m >= 1 of stored row chunks (shards when the array is sharded), with m
        the largest whole number that keeps the task under the target (at least one).
    storage_options : passed to fsspec for URLs.

    Returns
    -------
    X : dask.array.Array (n_samples, n_features) of ``dtype``
    info : DataInfo

    Raises
    ------
    DataError : missing path, a group without a single array, a 1-D / >2-D / empty /
        non-numeric array.
    """
    import dask.array as da

    path = resolve(os.fspath(path), storage_options)
    out_dtype = check_dtype(dtype)
    target = check_target(target_chunk_bytes)
    fs, fs_path = url_to_fs(path, storage_options)
    if not fs.exists(fs_path):
        raise missing_source("Zarr", path)
    z, array_path = _open_zarr_node(path, array_path, storage_options)
    source = f"Zarr array {path!r}" + (f" (array_path={array_path!r})" if array_path else "")
    check_shape(z.shape, source)
    check_numeric(z.dtype, source)
    n_rows, n_features = (int(s) for s in z.shape)
    stored_rows = int((z.shards or z.chunks)[0])
    stored_bytes = stored_rows * n_features * max(out_dtype.itemsize, np.dtype(z.dtype).itemsize)
    per_task = max(1, target // max(1, stored_bytes)) * stored_rows
    row_chunks = even_chunks(n_rows, per_task)
    metadata = z.metadata.to_dict()
    fingerprint = data_fingerprint(
        {
            "kind": "zarr",
            "url": fs.unstrip_protocol(fs_path),
            "array_path": array_path,
            "metadata": metadata,
            "dtype": out_dtype.name,
            "row_chunks": row_chunks,
        }
    )
    X = da.from_zarr(
        z, chunks=(row_chunks, (n_features,)), name=f"zarr-{fingerprint}-{n_rows}"
    )
    if X.dtype != out_dtype:
        X = X.astype(out_dtype)
    info = DataInfo(
        kind="zarr",
        path=path,
        shape=(n_rows, n_features),
        dtype=out_dtype.name,
        row_chunks=row_chunks,
        columns=None,
        fingerprint=fingerprint,
    )
    log.info("opened %s", info.describe())
    return X, info


# -------------------------------------------------------------------------------- npy


class NpyRows(RowSource):
    """Rows of a ``.npy`` file, read through a read-only memory map opened per read."""

    def __init__(self, path: str, shape: tuple, stored_dtype, dtype):
        super().__init__(shape, dtype)
        self.path = path
        self.stored_dtype = np.dtype(stored_dtype)

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        mm = np.load(self.path, mmap_mode="r")
        return np.array(mm[start:stop], dtype=self.dtype, order="C")


def open_npy(
    path: str | os.PathLike,
    *,
    dtype: str = "float64",
    target_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
):
    """Open a local ``.npy`` file, memory-mapped, as a row-chunked Dask array.

    Only the header is read here; each task maps the file and copies its rows
    (``target_chunk_bytes`` of output per task, the last chunk holding the remainder).

    Returns ``(X, info)`` as :func:`open_zarr`. Raises ``DataError`` for a missing file, a
    file that is not a ``.npy`` array, a 1-D / >2-D / empty / non-numeric array.
    """
    path = os.fspath(path)
    out_dtype = check_dtype(dtype)
    target = check_target(target_chunk_bytes)
    if not os.path.isfile(path):
        raise missing_source("npy", path, " (or is not a file)")
    try:
        mm = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:  # not a .npy
        raise DataError(
            f"Cannot read {path!r} as a .npy array: {exc}. Save the data with numpy.save "
            "(object arrays and .npz archives are not supported)."
        ) from None
    source = f"npy file {path!r}"
    if not isinstance(mm, np.ndarray):
        raise DataError(f"{source} is not a single array; save one 2-D array with numpy.save.")
    check_shape(mm.shape, source)
    check_numeric(mm.dtype, source)
    n_rows, n_features = (int(s) for s in mm.shape)
    row_chunks = even_chunks(
        n_rows, rows_per_task(n_features * out_dtype.itemsize, target)
    )
    stat = os.stat(path)
    fingerprint = data_fingerprint(
        {
            "kind": "npy",
            "path": os.path.abspath(path),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "shape": mm.shape,
            "stored_dtype": mm.dtype.str,
            "dtype": out_dtype.name,
            "row_chunks": row_chunks,
        }
    )
    reader = NpyRows(os.path.abspath(path), mm.shape, mm.dtype, out_dtype)
    del mm
    X = da.from_array(
        reader,
        chunks=(row_chunks, (n_features,)),
        name=f"npy-{fingerprint}",
        asarray=True,
        fancy=False,
        meta=np.empty((0, 0), out_dtype),
    )
    info = DataInfo(
        kind="npy",
        path=path,
        shape=(n_rows, n_features),
        dtype=out_dtype.name,
        row_chunks=row_chunks,
        columns=None,
        fingerprint=fingerprint,
    )
    log.info("opened %s", info.describe())
    return X, info


# ----------------------------------------------------------------------------- arrays


def from_array(
    X,
    *,
    dtype: str = "float64",
    target_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
):
    """Wrap an in-memory NumPy array, or a Dask array, as a row-chunked Dask array.

    A NumPy array is cut into tasks of about ``target_chunk_bytes``; a Dask array keeps its
    row chunks (its column chunks are merged into one). The fingerprint hashes the bytes of
    a NumPy array (``dask.base.tokenize``) and the graph name of a Dask array.
    """
    from dask.base import tokenize

    out_dtype = check_dtype(dtype)
    target = check_target(target_chunk_bytes)
    source = "in-memory array"
    if isinstance(X, da.Array):
        check_shape(X.shape, source)
        if any(np.isnan(c) for c in X.chunks[0]):
            raise DataError(
                f"{source} has unknown row chunk sizes; compute them first "
                "(e.g. X.compute_chunk_sizes()) so that dgmm can align rows."
            )
        check_numeric(X.dtype, source)
        if len(X.chunks[1]) > 1:
            X = X.rechunk({1: -1})
        array = X
    else:
        X = np.asarray(X)
        check_shape(X.shape, source)
        check_numeric(X.dtype, source)
        rows = rows_per_task(X.shape[1] * out_dtype.itemsize, target)
        array = da.from_array(X, chunks=(even_chunks(X.shape[0], rows), (X.shape[1],)))
    if array.dtype != out_dtype:
        array = array.astype(out_dtype)
    row_chunks = tuple(int(c) for c in array.chunks[0])
    fingerprint = data_fingerprint(
        {
            "kind": "array",
            "token": tokenize(X),
            "dtype": out_dtype.name,
            "row_chunks": row_chunks,
        }
    )
    info = DataInfo(
        kind="array",
        path=None,
        shape=tuple(int(s) for s in array.shape),
        dtype=out_dtype.name,
        row_chunks=row_chunks,
        columns=None,
        fingerprint=fingerprint,
    )
    return array, info


def open_source(kind: str, path: str | os.PathLike, **options):
    """Open ``path`` with the reader for ``kind``.

    Parameters
    ----------
    kind : {'zarr', 'parquet', 'npy'}
        The format (``open_zarr``, ``open_parquet``, ``open_npy``).
    path : str or os.PathLike
        A local path or an fsspec URL (``.npy``: local only).
    **options
        Passed on to the reader: ``array_path``, ``columns``, ``dtype``,
        ``target_chunk_bytes``, ``storage_options``.

    Returns
    -------
    X : dask.array.Array of shape (n_samples, n_features)
        Lazy, row-chunked, one column chunk, float64 or float32.
    info : DataInfo
        Shape, dtype, chunking and fingerprint.
    """
    readers = {"zarr": open_zarr, "parquet": open_parquet, "npy": open_npy}
    if kind not in readers:
        raise ConfigError(
            f"Unknown data kind {kind!r} for {os.fspath(path)!r}; use one of {SOURCE_KINDS}."
        )
    try:
        return readers[kind](path, **options)
    except TypeError as exc:
        raise ConfigError(
            f"Invalid option for a {kind} source {os.fspath(path)!r}: {exc}. See the "
            f"signature of dgmm.data.open_{kind}."
        ) from None


def validate_rows(info: DataInfo, n_components: int) -> None:
    """Raise ``DataError`` when the source has fewer rows than mixture components."""
    if info.n_samples < n_components:
        where = info.path if info.path is not None else "the in-memory array"
        raise DataError(
            f"{info.kind} source {where} has {info.n_samples} rows, fewer than "
            f"n_components={n_components}; a mixture needs at least one row per component. "
            "Use more data or fewer components."
        )
