"""Data sources: Zarr, Parquet, ``.npy`` and in-memory arrays as row-chunked Dask arrays.

Every ``open_*`` function returns ``(X, info)``: ``X`` a lazy 2-D Dask array with known row
chunks and one column chunk, in float64 or float32; ``info`` a :class:`DataInfo` (shape,
dtype, chunking, fingerprint). Opening reads metadata only. A task reads about
``target_chunk_bytes`` of rows and never splits a stored Zarr chunk or a Parquet row group.
Non-finite values are counted by the first E-step pass, not here. See docs/design.md,
"Reading the data".
"""
from __future__ import annotations

import bisect
import glob
import hashlib
import json
import logging
import os
import pickle
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import dask.array as da
import numpy as np
from dask.utils import format_bytes

from ..engine.passes import DEFAULT_CHUNK_BYTES
from ..errors import ConfigError, DataError
from .files import is_url, url_to_fs
from .publish import resolve

log = logging.getLogger(__name__)

SOURCE_KINDS = ("zarr", "parquet", "npy")
FLOAT_DTYPES = ("float64", "float32")
#: dtype kinds accepted as numeric input: bool, signed and unsigned int, float
_NUMERIC_KINDS = "biuf"
#: fraction of the workers' total memory_limit below which persist='auto' keeps the data
PERSIST_CLUSTER_FRACTION = 0.5
#: fraction of the machine's available memory used when there is no distributed client
PERSIST_LOCAL_FRACTION = 0.25


@dataclass(frozen=True)
class DataInfo:
    """What a data source is, without its data.

    Attributes
    ----------
    kind : 'zarr' | 'parquet' | 'npy' | 'array'
    path : the path or URL as given (None for in-memory arrays)
    shape : (n_samples, n_features)
    dtype : the dtype of the Dask array handed out ('float64' or 'float32')
    row_chunks : rows per task, summing to n_samples
    columns : Parquet column names in the order of the array's columns (None otherwise)
    fingerprint : hex digest identifying the data by its description (path, shape, dtype,
        chunking, and Zarr metadata / Parquet file sizes, mtimes and row groups / ``.npy``
        size and mtime / a hash of the bytes for in-memory NumPy arrays). The data are not
        read to compute it, so an in-place rewrite of chunk contents that leaves the
        metadata, sizes and mtimes unchanged is not detected.
    """

    kind: str
    path: str | None
    shape: tuple
    dtype: str
    row_chunks: tuple
    columns: list | None
    fingerprint: str

    def __hash__(self) -> int:  # ``columns`` is a list: hash by what identifies the data
        return hash((self.kind, self.fingerprint))

    @property
    def n_samples(self) -> int:
        return int(self.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.shape[1])

    @property
    def n_chunks(self) -> int:
        return len(self.row_chunks)

    @property
    def nbytes(self) -> int:
        """Size in bytes of the array handed out (n_samples x n_features x itemsize)."""
        return self.n_samples * self.n_features * np.dtype(self.dtype).itemsize

    def to_dict(self) -> dict:
        """JSON-ready description (tuples become lists)."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        out["row_chunks"] = list(self.row_chunks)
        return out

    def describe(self) -> str:
        """One line for logs and error messages."""
        where = self.path if self.path is not None else "in-memory array"
        return (
            f"{self.kind} source {where}: {self.n_samples} rows x {self.n_features} "
            f"features, {self.dtype}, {self.n_chunks} chunks"
        )


# ----------------------------------------------------------------------------- helpers


def _fingerprint(description: dict) -> str:
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _check_dtype(dtype) -> np.dtype:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in FLOAT_DTYPES:
        raise ConfigError(
            f"dtype must be one of {FLOAT_DTYPES}, got {dtype!r}. dgmm computes in float64 "
            "or float32; pass dtype='float64' (the default) or dtype='float32'."
        )
    return np.dtype(name)


def _check_target(target_chunk_bytes: int) -> int:
    if not isinstance(target_chunk_bytes, (int, np.integer)) or target_chunk_bytes <= 0:
        raise ConfigError(
            f"target_chunk_bytes must be a positive integer (bytes per task), got "
            f"{target_chunk_bytes!r}; the default is {DEFAULT_CHUNK_BYTES} "
            f"({format_bytes(DEFAULT_CHUNK_BYTES)})."
        )
    return int(target_chunk_bytes)


def _check_shape(shape: tuple, source: str) -> None:
    if len(shape) == 1:
        raise DataError(
            f"{source} is a 1-D array of shape {tuple(shape)}; dgmm needs a 2-D array "
            "(n_samples, n_features). If it holds one feature, store it with shape "
            f"({shape[0]}, 1)."
        )
    if len(shape) != 2:
        raise DataError(
            f"{source} is a {len(shape)}-D array of shape {tuple(shape)}; dgmm needs a 2-D "
            "array (n_samples, n_features). Reshape or select a 2-D array."
        )
    if shape[0] == 0:
        raise DataError(
            f"{source} has zero rows (shape {tuple(shape)}); there is nothing to fit. "
            "Check that the path points at the data you meant."
        )
    if shape[1] == 0:
        raise DataError(
            f"{source} has zero columns (shape {tuple(shape)}); dgmm needs at least one "
            "feature. Check the array or the selected columns."
        )


def _check_numeric(dtype, source: str) -> None:
    if np.dtype(dtype).kind not in _NUMERIC_KINDS:
        raise DataError(
            f"{source} has dtype {np.dtype(dtype)}, which is not numeric; dgmm reads "
            "integer, boolean or floating-point data. Convert the array to a numeric dtype."
        )


def _rows_per_task(row_bytes: int, target_chunk_bytes: int) -> int:
    return max(1, target_chunk_bytes // max(1, row_bytes))


def _even_chunks(n_rows: int, step: int) -> tuple:
    step = max(1, min(step, n_rows))
    full, rest = divmod(n_rows, step)
    return (step,) * full + ((rest,) if rest else ())


_is_url = is_url
_url_to_fs = url_to_fs


def _zarr_target(path: str, storage_options: dict | None, read_only: bool = False):
    """(store argument, keyword arguments) to open or write a Zarr node at ``path``.

    Local paths and ``file://`` URLs become plain paths (zarr's LocalStore creates the
    directories it needs). Other URLs become a zarr ``FsspecStore``: an asynchronous
    instance of the filesystem (s3, gcs, http ...) or, for one that has none (memory, or
    dir:// over a local target, which refuses to be made asynchronous), the synchronous
    one wrapped for zarr's asynchronous store API.
    """
    from fsspec.implementations.local import LocalFileSystem

    fs, fs_path = _url_to_fs(path, storage_options)
    if isinstance(fs, LocalFileSystem):
        return fs_path, {}
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
    from zarr.storage import FsspecStore

    if fs.async_impl:
        try:
            fs = _url_to_fs(path, {"asynchronous": True, **(storage_options or {})})[0]
        except DataError:  # e.g. dir:// over a synchronous target
            fs = AsyncFileSystemWrapper(fs, asynchronous=True)
    else:
        fs = AsyncFileSystemWrapper(fs, asynchronous=True)
    return FsspecStore(fs=fs, path=fs_path, read_only=read_only), {}


def _missing(kind: str, path: str, what: str = "") -> DataError:
    return DataError(
        f"{kind} source {path!r} does not exist{what}. Check the path (relative paths are "
        f"taken from the current directory {os.getcwd()!r}) or the URL and its "
        "storage_options."
    )


def _natural_key(text: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


class _RowSource:
    """A lazily read 2-D array-like (``shape``, ``dtype``, ``ndim``, ``__getitem__``) for
    :func:`dask.array.from_array`; subclasses implement ``_read_rows(start, stop)``.

    Pickles small (a path and a few numbers), so tasks can run in worker processes.
    """

    ndim = 2

    def __init__(self, shape: tuple, dtype: np.dtype):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)

    def _read_rows(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def __getitem__(self, index) -> np.ndarray:
        if not isinstance(index, tuple):
            index = (index,)
        index = index + (slice(None),) * (2 - len(index))
        rows, cols = index
        if isinstance(rows, slice) and rows.step in (None, 1):
            start, stop, _ = rows.indices(self.shape[0])
            block = self._read_rows(start, max(start, stop))
        else:
            wanted = np.arange(self.shape[0])[rows]
            if wanted.size == 0:
                block = np.empty((0, self.shape[1]), self.dtype)[np.atleast_1d(wanted)]
            else:
                lo, hi = int(wanted.min()), int(wanted.max()) + 1
                block = self._read_rows(lo, hi)[wanted - lo]
        return block[:, cols]


# ------------------------------------------------------------------------------- Zarr


def _open_zarr_node(path: str, array_path: str | None, storage_options: dict | None):
    import zarr

    store, kwargs = (_zarr_target(path, storage_options, read_only=True) if _is_url(path)
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
    out_dtype = _check_dtype(dtype)
    target = _check_target(target_chunk_bytes)
    fs, fs_path = _url_to_fs(path, storage_options)
    if not fs.exists(fs_path):
        raise _missing("Zarr", path)
    z, array_path = _open_zarr_node(path, array_path, storage_options)
    source = f"Zarr array {path!r}" + (f" (array_path={array_path!r})" if array_path else "")
    _check_shape(z.shape, source)
    _check_numeric(z.dtype, source)
    n_rows, n_features = (int(s) for s in z.shape)
    stored_rows = int((z.shards or z.chunks)[0])
    stored_bytes = stored_rows * n_features * max(out_dtype.itemsize, np.dtype(z.dtype).itemsize)
    per_task = max(1, target // max(1, stored_bytes)) * stored_rows
    row_chunks = _even_chunks(n_rows, per_task)
    metadata = z.metadata.to_dict()
    fingerprint = _fingerprint(
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


# ---------------------------------------------------------------------------- Parquet


def _parquet_files(path: str, fs, fs_path: str) -> list[str]:
    if any(ch in fs_path for ch in "*?["):
        files = [f for f in fs.glob(fs_path) if fs.isfile(f)]
        if not files:
            raise DataError(
                f"Parquet source {path!r}: the pattern matches no file. Check the pattern "
                "and the directory it names."
            )
    elif not fs.exists(fs_path):
        raise _missing("Parquet", path)
    elif fs.isdir(fs_path):
        root = fs_path.rstrip("/")
        files = []
        for f in fs.find(root):
            relative = f[len(root) :].lstrip("/")
            # like pyarrow.dataset: skip hidden and metadata files (_metadata, .crc, ...)
            if not any(part.startswith(("_", ".")) for part in relative.split("/")):
                files.append(f)
        if not files:
            raise DataError(
                f"Parquet source {path!r} is a directory with no data files (files whose "
                "names start with '_' or '.' are skipped). Check the directory."
            )
    else:
        files = [fs_path]
    return sorted(files, key=_natural_key)


def _file_metadata(fs, file: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    info = fs.info(file)
    try:
        with fs.open(file, "rb") as handle:
            meta = pq.read_metadata(handle)
    except (OSError, ValueError, pa.ArrowException) as exc:  # not a Parquet file
        raise DataError(
            f"Cannot read the Parquet footer of {fs.unstrip_protocol(file)!r}: {exc}. "
            "Check that every file in the dataset is a complete Parquet file."
        ) from None
    mtime = next(
        (info[key] for key in ("mtime", "LastModified", "last_modified", "created") if key in info),
        None,
    )
    return meta, {"file": file, "size": info.get("size"), "mtime": str(mtime)}


def _numeric_arrow(arrow_type) -> bool:
    import pyarrow as pa

    return (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_boolean(arrow_type)
    )


def _select_columns(schema, columns, path: str) -> list[str]:
    names = list(schema.names)
    numeric = [
        n for n in names if _numeric_arrow(schema.field(n).type) and not n.startswith("__")
    ]
    if columns is None:
        if not numeric:
            raise DataError(
                f"Parquet source {path!r} has no numeric column (columns: {names}). dgmm "
                "reads integer, boolean or floating-point columns."
            )
        return numeric
    if isinstance(columns, str):
        columns = [columns]
    columns = list(columns)
    if not columns:
        raise ConfigError(
            f"columns for Parquet source {path!r} is an empty list; omit it to use all "
            f"numeric columns {numeric}, or list the columns to read."
        )
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(
            f"Parquet source {path!r} has no column {', '.join(map(repr, missing))}; the "
            f"columns available are {names} (numeric: {numeric}). Fix the columns list."
        )
    non_numeric = [c for c in columns if c not in numeric]
    if non_numeric:
        types = ", ".join(f"{c!r} ({schema.field(c).type})" for c in non_numeric)
        raise DataError(
            f"Parquet source {path!r}: column {types} is not numeric; dgmm reads integer, "
            f"boolean or floating-point columns. The numeric columns are {numeric}: "
            "remove the others from the columns list."
        )
    return columns


class ParquetRows(_RowSource):
    """Rows of a Parquet dataset, read whole row groups at a time with pyarrow.

    ``pieces[i]`` is a tuple of ``(file, row_group_indices)`` holding ``piece_rows[i]``
    rows; a task reads one piece. Nulls read as NaN.
    """

    def __init__(self, fs, pieces, piece_rows, columns, dtype, source: str):
        super().__init__((int(sum(piece_rows)), len(columns)), dtype)
        self.fs = fs
        self.pieces = list(pieces)
        self.columns = list(columns)
        self.source = source
        self.starts = np.concatenate([[0], np.cumsum(piece_rows)]).astype(np.int64).tolist()

    def _read_piece(self, index: int) -> np.ndarray:
        import pyarrow.parquet as pq

        expected = self.starts[index + 1] - self.starts[index]
        out = np.empty((expected, len(self.columns)), dtype=self.dtype)
        row = 0
        for file, row_groups in self.pieces[index]:
            with self.fs.open(file, "rb") as handle:
                table = pq.ParquetFile(handle).read_row_groups(
                    list(row_groups), columns=self.columns, use_threads=False
                )
            n = table.num_rows
            if row + n > expected:
                break
            for j, name in enumerate(self.columns):
                column = table.column(name)
                out[row : row + n, j] = column.to_numpy(zero_copy_only=False)
            row += n
        if row != expected:
            raise DataError(
                f"Parquet source {self.source!r} changed after it was opened: piece {index} "
                f"({self.pieces[index]}) now has a different number of rows than its "
                f"footer said ({expected}). Re-open the source."
            )
        return out

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.empty((0, self.shape[1]), self.dtype)
        first = bisect.bisect_right(self.starts, start) - 1
        last = bisect.bisect_left(self.starts, stop)  # pieces first .. last-1 overlap
        if last - first == 1 and self.starts[first] == start and self.starts[last] == stop:
            return self._read_piece(first)
        blocks = [self._read_piece(i) for i in range(first, last)]
        offset = self.starts[first]
        return np.concatenate(blocks)[start - offset : stop - offset]


def _group_row_groups(files, metas, row_bytes: int, target: int):
    """Whole row groups grouped in file order into pieces of about ``target`` bytes."""
    limit = _rows_per_task(row_bytes, target)
    pieces, piece_rows = [], []
    current: list = []
    current_rows = 0

    def flush():
        nonlocal current, current_rows
        if current_rows:
            pieces.append(tuple((f, tuple(rgs)) for f, rgs in current))
            piece_rows.append(current_rows)
        current, current_rows = [], 0

    for file, meta in zip(files, metas, strict=True):
        for rg in range(meta.num_row_groups):
            n = meta.row_group(rg).num_rows
            if n == 0:
                continue
            if current_rows and current_rows + n > limit:
                flush()
            if current and current[-1][0] == file:
                current[-1][1].append(rg)
            else:
                current.append((file, [rg]))
            current_rows += n
    flush()
    return pieces, piece_rows


def open_parquet(
    path: str | os.PathLike,
    *,
    columns: list[str] | None = None,
    dtype: str = "float64",
    target_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    storage_options: dict | None = None,
):
    """Open a Parquet file, a directory of Parquet files, or a glob as a Dask array.

    Parameters
    ----------
    path : local path or fsspec URL of a file, a directory (every file below it whose name
        does not start with '_' or '.', in natural order: part.2 before part.10), or a glob
        pattern (``data/*.parquet``).
    columns : the columns to read, in this order; default: every integer, boolean or
        floating-point column of the first file's schema (pandas index columns
        ``__index_level_*`` excluded).
    dtype : 'float64' or 'float32', the dtype of the returned array; nulls become NaN.
    target_chunk_bytes : about how many bytes of output one task reads; a task reads whole
        row groups (consecutive row groups, also across small files, are grouped up to the
        target; a larger row group is one task).
    storage_options : passed to fsspec.

    Returns
    -------
    X : dask.array.Array (n_samples, n_features) of ``dtype``; its row chunks are known from
        the Parquet footers, no pass over the data is made.
    info : DataInfo (``columns`` lists the columns read)

    Raises
    ------
    DataError : missing path, no files, unreadable footer, a missing or non-numeric column,
        zero rows.
    """
    path = os.fspath(path)
    if not glob.has_magic(path):
        path = resolve(path, storage_options)
    out_dtype = _check_dtype(dtype)
    target = _check_target(target_chunk_bytes)
    fs, fs_path = _url_to_fs(path, storage_options)
    files = _parquet_files(path, fs, fs_path)
    with ThreadPoolExecutor(max_workers=min(8, len(files))) as pool:
        results = list(pool.map(lambda f: _file_metadata(fs, f), files))
    metas = [meta for meta, _ in results]
    columns = _select_columns(metas[0].schema.to_arrow_schema(), columns, path)
    for file, meta in zip(files[1:], metas[1:], strict=True):
        names = meta.schema.to_arrow_schema().names
        absent = [c for c in columns if c not in names]
        if absent:
            raise DataError(
                f"Parquet source {path!r}: file {fs.unstrip_protocol(file)!r} has no column "
                f"{', '.join(map(repr, absent))} (its columns: {names}). All files of a "
                "dataset must hold the columns read; fix the files or the columns list."
            )
    n_rows = int(sum(meta.num_rows for meta in metas))
    _check_shape((n_rows, len(columns)), f"Parquet source {path!r}")
    pieces, piece_rows = _group_row_groups(
        files, metas, len(columns) * out_dtype.itemsize, target
    )
    row_chunks = tuple(int(n) for n in piece_rows)
    fingerprint = _fingerprint(
        {
            "kind": "parquet",
            "url": fs.unstrip_protocol(fs_path),
            "files": [
                dict(stat, row_groups=[m.row_group(i).num_rows for i in range(m.num_row_groups)])
                for m, (_, stat) in zip(metas, results, strict=True)
            ],
            "columns": columns,
            "dtype": out_dtype.name,
            "row_chunks": row_chunks,
        }
    )
    reader = ParquetRows(fs, pieces, piece_rows, columns, out_dtype, path)
    X = da.from_array(
        reader,
        chunks=(row_chunks, (len(columns),)),
        name=f"parquet-{fingerprint}",
        asarray=True,
        fancy=False,
        meta=np.empty((0, 0), out_dtype),
    )
    info = DataInfo(
        kind="parquet",
        path=path,
        shape=(n_rows, len(columns)),
        dtype=out_dtype.name,
        row_chunks=row_chunks,
        columns=list(columns),
        fingerprint=fingerprint,
    )
    log.info("opened %s (%d files)", info.describe(), len(files))
    return X, info


# -------------------------------------------------------------------------------- npy


class NpyRows(_RowSource):
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
    out_dtype = _check_dtype(dtype)
    target = _check_target(target_chunk_bytes)
    if not os.path.isfile(path):
        raise _missing("npy", path, " (or is not a file)")
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
    _check_shape(mm.shape, source)
    _check_numeric(mm.dtype, source)
    n_rows, n_features = (int(s) for s in mm.shape)
    row_chunks = _even_chunks(
        n_rows, _rows_per_task(n_features * out_dtype.itemsize, target)
    )
    stat = os.stat(path)
    fingerprint = _fingerprint(
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

    out_dtype = _check_dtype(dtype)
    target = _check_target(target_chunk_bytes)
    source = "in-memory array"
    if isinstance(X, da.Array):
        _check_shape(X.shape, source)
        if any(np.isnan(c) for c in X.chunks[0]):
            raise DataError(
                f"{source} has unknown row chunk sizes; compute them first "
                "(e.g. X.compute_chunk_sizes()) so that dgmm can align rows."
            )
        _check_numeric(X.dtype, source)
        if len(X.chunks[1]) > 1:
            X = X.rechunk({1: -1})
        array = X
    else:
        X = np.asarray(X)
        _check_shape(X.shape, source)
        _check_numeric(X.dtype, source)
        rows = _rows_per_task(X.shape[1] * out_dtype.itemsize, target)
        array = da.from_array(X, chunks=(_even_chunks(X.shape[0], rows), (X.shape[1],)))
    if array.dtype != out_dtype:
        array = array.astype(out_dtype)
    row_chunks = tuple(int(c) for c in array.chunks[0])
    fingerprint = _fingerprint(
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
    """Open ``path`` with the reader for ``kind`` ('zarr' | 'parquet' | 'npy').

    ``options`` are passed on (``array_path``, ``columns``, ``dtype``,
    ``target_chunk_bytes``, ``storage_options``). Returns ``(X, info)``.
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


# ---------------------------------------------------------------------------- persist


def _workers_memory_limit(client) -> int:
    import psutil

    workers = client.scheduler_info(n_workers=-1)["workers"]
    total = 0
    for worker in workers.values():
        limit = worker.get("memory_limit") or 0
        total += int(limit) if limit else psutil.virtual_memory().total
    return total


def decide_persist(nbytes: int, mode: str | bool = "auto", client=None) -> bool:
    """Whether to keep the data's chunks in memory across EM iterations.

    Rule: ``mode`` True / 'true' -> True; False / 'false' -> False; 'auto' -> True when
    the data are small enough to fit comfortably:

    - with a distributed ``client``: ``nbytes`` < 50% of the sum of the workers'
      ``memory_limit`` (a worker without a limit counts as the machine's total memory);
      the rest leaves room for the tasks' temporaries and Dask's spill thresholds (60%).
    - without a client (local threads): ``nbytes`` < 25% of the machine's currently
      available memory (``psutil.virtual_memory().available``).

    ``nbytes`` is the size of the array as handed out (``DataInfo.nbytes``).
    """
    if isinstance(mode, bool):
        return mode
    text = str(mode).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    if text != "auto":
        raise ConfigError(f"persist must be 'auto', true or false, got {mode!r}.")
    if client is not None:
        budget = _workers_memory_limit(client)
        decision = nbytes < PERSIST_CLUSTER_FRACTION * budget
        log.info(
            "persist=auto: data %d bytes vs %d bytes of worker memory limits: %s",
            nbytes, budget, "persist" if decision else "stream from the source",
        )
        return decision
    import psutil

    available = psutil.virtual_memory().available
    decision = nbytes < PERSIST_LOCAL_FRACTION * available
    log.info(
        "persist=auto: data %d bytes vs %d bytes available: %s",
        nbytes, available, "persist" if decision else "stream from the source",
    )
    return decision
