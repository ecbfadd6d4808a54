"""What a data source is, without its data, and how its rows are cut into tasks.

``DataInfo`` (shape, dtype, chunking, fingerprint), the checks every reader makes of the
dtype, shape and task size, and ``RowSource``, the lazily read array that a reader hands
to :func:`dask.array.from_array`. The readers are in :mod:`dgmm.data.readers` (Zarr,
``.npy``, in-memory arrays) and :mod:`dgmm.data.parquet`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass

import numpy as np
from dask.utils import format_bytes

from ..engine.passes import DEFAULT_CHUNK_BYTES
from ..errors import ConfigError, DataError

__all__ = ["DataInfo", "RowSource", "SOURCE_KINDS", "FLOAT_DTYPES", "data_fingerprint",
           "check_dtype", "check_target", "check_shape", "check_numeric", "rows_per_task",
           "even_chunks", "missing_source", "natural_key"]

SOURCE_KINDS = ("zarr", "parquet", "npy")
FLOAT_DTYPES = ("float64", "float32")
#: dtype kinds accepted as numeric input: bool, signed and unsigned int, float
NUMERIC_KINDS = "biuf"




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


def data_fingerprint(description: dict) -> str:
    """A short sha256 (hex) of a JSON description of the data."""
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def check_dtype(dtype) -> np.dtype:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in FLOAT_DTYPES:
        raise ConfigError(
            f"dtype must be one of {FLOAT_DTYPES}, got {dtype!r}. dgmm computes in float64 "
            "or float32; pass dtype='float64' (the default) or dtype='float32'."
        )
    return np.dtype(name)


def check_target(target_chunk_bytes: int) -> int:
    if not isinstance(target_chunk_bytes, (int, np.integer)) or target_chunk_bytes <= 0:
        raise ConfigError(
            f"target_chunk_bytes must be a positive integer (bytes per task), got "
            f"{target_chunk_bytes!r}; the default is {DEFAULT_CHUNK_BYTES} "
            f"({format_bytes(DEFAULT_CHUNK_BYTES)})."
        )
    return int(target_chunk_bytes)


def check_shape(shape: tuple, source: str) -> None:
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


def check_numeric(dtype, source: str) -> None:
    if np.dtype(dtype).kind not in NUMERIC_KINDS:
        raise DataError(
            f"{source} has dtype {np.dtype(dtype)}, which is not numeric; dgmm reads "
            "integer, boolean or floating-point data. Convert the array to a numeric dtype."
        )


def rows_per_task(row_bytes: int, target_chunk_bytes: int) -> int:
    return max(1, target_chunk_bytes // max(1, row_bytes))


def even_chunks(n_rows: int, step: int) -> tuple:
    step = max(1, min(step, n_rows))
    full, rest = divmod(n_rows, step)
    return (step,) * full + ((rest,) if rest else ())


def missing_source(kind: str, path: str, what: str = "") -> DataError:
    return DataError(
        f"{kind} source {path!r} does not exist{what}. Check the path (relative paths are "
        f"taken from the current directory {os.getcwd()!r}) or the URL and its "
        "storage_options."
    )


def natural_key(text: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


class RowSource:
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
