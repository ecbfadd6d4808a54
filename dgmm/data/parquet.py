"""Parquet sources: a file, a directory of files (a dataset) or a glob, local or remote.

A task reads whole row groups (about ``target_chunk_bytes`` of rows, never a split row
group) of the selected numeric columns. Opening reads the files' footers only.
"""
from __future__ import annotations

import bisect
import glob
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import dask.array as da
import numpy as np

from ..engine.passes import DEFAULT_CHUNK_BYTES
from ..errors import ConfigError, DataError
from .files import url_to_fs
from .layout import (
    DataInfo,
    RowSource,
    check_dtype,
    check_shape,
    check_target,
    data_fingerprint,
    missing_source,
    natural_key,
    rows_per_task,
)
from .publish import resolve

log = logging.getLogger(__name__)

__all__ = ["open_parquet", "ParquetRows"]


def _parquet_files(path: str, fs, fs_path: str) -> list[str]:
    if any(ch in fs_path for ch in "*?["):
        files = [f for f in fs.glob(fs_path) if fs.isfile(f)]
        if not files:
            raise DataError(
                f"Parquet source {path!r}: the pattern matches no file. Check the pattern "
                "and the directory it names."
            )
    elif not fs.exists(fs_path):
        raise missing_source("Parquet", path)
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
    return sorted(files, key=natural_key)


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


class ParquetRows(RowSource):
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
    limit = rows_per_task(row_bytes, target)
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
    out_dtype = check_dtype(dtype)
    target = check_target(target_chunk_bytes)
    fs, fs_path = url_to_fs(path, storage_options)
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
    check_shape((n_rows, len(columns)), f"Parquet source {path!r}")
    pieces, piece_rows = _group_row_groups(
        files, metas, len(columns) * out_dtype.itemsize, target
    )
    row_chunks = tuple(int(n) for n in piece_rows)
    fingerprint = data_fingerprint(
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
