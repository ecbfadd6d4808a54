"""Per-row predictions of a fitted mixture, streamed to Zarr or Parquet, written atomically.

For every input row: ``labels`` (int64, -1 for a row holding NaN or inf),
``probabilities`` (float64, K columns) and ``log_likelihood`` (float64), NaN for such a
row, all from one kernel evaluation per input chunk, written by that chunk's task. A
``*.zarr`` output is a group of those three arrays (rechunked to regular chunks when the
input's are unequal); a ``*.parquet`` output is one part file per input chunk, columns
``label``, ``prob_0`` .. ``prob_{K-1}``, ``log_likelihood``. Published atomically by
:mod:`dgmm.data.publish`. Layouts: docs/workflows.md, "Predictions on disk".
"""
from __future__ import annotations

import logging
import os

import dask
import dask.array as da
import numpy as np

from ..core import kernels
from ..core.kernels import missing
from ..core.nonfinite import row_masks
from ..core.params import GMMParams
from ..engine import passes as engine
from ..errors import ConfigError, DataError
from .files import format_from_suffix, url_to_fs, zarr_target
from .publish import publish_directory

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("labels", "probabilities", "log_likelihood")
#: Dask task retries of a chunk writer on a distributed cluster
WRITE_TASK_RETRIES = 2
FORMATS = ("zarr", "parquet")


# --------------------------------------------------------------------------- kernels


def predict_block(X: np.ndarray, params: GMMParams, marginalize: bool = False) -> np.ndarray:
    """Labels, log-likelihoods and responsibilities of one chunk, tolerating bad rows.

    With ``marginalize``, rows holding NaN (no inf, some entry observed) get the values of
    the marginal density over their observed features (``dgmm.core.kernels.missing``);
    the masks are ``dgmm.core.nonfinite.row_masks``.

    Parameters
    ----------
    X : (n_samples, n_features) one chunk of rows; rows holding NaN or inf are allowed.
    params : the fitted parameters.

    Returns
    -------
    (n_samples, 2 + K) float64: column 0 the label (-1.0 for a non-finite row), column 1
    log p(x) and columns 2.. the responsibilities (NaN for a non-finite row).
    """
    X = np.asarray(X, dtype=np.float64)
    n_components = params.n_components
    out = np.full((X.shape[0], 2 + n_components), np.nan)
    out[:, 0] = -1.0
    finite, gaps = row_masks(X)
    if finite.any():
        all_finite = bool(finite.all())
        rows = X if all_finite else X[finite]
        log_norm, resp = kernels.log_prob_resp(rows, params)
        # argmax of the responsibilities = argmax of log pi_k + log N(x | k) (kernels.predict)
        labels = resp.argmax(axis=1)
        if all_finite:
            out[:, 0], out[:, 1], out[:, 2:] = labels, log_norm, resp
        else:
            out[finite, 0], out[finite, 1], out[finite, 2:] = labels, log_norm, resp
    if marginalize and gaps.any():
        log_norm, resp = missing.log_prob_resp(X[gaps], params)
        out[gaps, 0], out[gaps, 1], out[gaps, 2:] = resp.argmax(axis=1), log_norm, resp
    return out


def _predict_block_marginal(X: np.ndarray, params: GMMParams) -> np.ndarray:
    return predict_block(X, params, marginalize=True)


def prediction_arrays(X, params: GMMParams, outputs=OUTPUT_NAMES,
                      marginalize: bool = False) -> dict[str, da.Array]:
    """Lazy Dask arrays of the requested outputs, row-aligned with ``X``, sharing one
    evaluation of the kernels per chunk.

    Returns a dict with the keys of ``outputs``: ``labels`` (N,) int64, ``probabilities``
    (N, K) float64, ``log_likelihood`` (N,) float64.
    """
    outputs = _check_outputs(outputs)
    X = engine.as_row_chunked(X)
    _check_features(X, params)
    combined = engine.map_rows(
        X, _predict_block_marginal if marginalize else predict_block, params,
        n_columns=2 + params.n_components, dtype=np.float64,
    )
    return _split(combined, outputs)


def _split(combined: da.Array, outputs) -> dict[str, da.Array]:
    arrays = {}
    if "labels" in outputs:
        arrays["labels"] = combined[:, 0].astype(np.int64)
    if "probabilities" in outputs:
        arrays["probabilities"] = combined[:, 2:]
    if "log_likelihood" in outputs:
        arrays["log_likelihood"] = combined[:, 1]
    return arrays


# ------------------------------------------------------------------------ validation


def _check_outputs(outputs) -> tuple[str, ...]:
    if isinstance(outputs, str):
        outputs = (outputs,)
    outputs = tuple(outputs)
    unknown = [o for o in outputs if o not in OUTPUT_NAMES]
    if unknown or not outputs:
        raise ConfigError(
            f"outputs must be a non-empty selection of {OUTPUT_NAMES}, got {outputs!r}"
            f"{' (unknown: ' + ', '.join(map(repr, unknown)) + ')' if unknown else ''}."
        )
    return tuple(o for o in OUTPUT_NAMES if o in outputs)


def _check_features(X: da.Array, params: GMMParams) -> None:
    if X.ndim != 2 or X.shape[1] != params.n_features:
        raise DataError(
            f"The data to predict have shape {X.shape}, but the model was fitted on "
            f"{params.n_features} features. Use the same columns as for the fit."
        )


def infer_format(out_path: str, format: str | None = None) -> str:
    """'zarr' or 'parquet' from ``format``, or else from the suffix of ``out_path``."""
    if format is not None:
        if format not in FORMATS:
            raise ConfigError(f"format must be one of {FORMATS}, got {format!r}.")
        return format
    fmt = format_from_suffix(out_path)
    if fmt is None:
        raise ConfigError(
            f"Cannot tell the output format of {out_path!r} from its suffix; name it "
            "*.zarr or *.parquet, or pass format='zarr' or format='parquet'."
        )
    return fmt


# ------------------------------------------------------------------- atomic directory


def _distributed_client(client):
    """``client``, or the distributed Client Dask would use by default, or None."""
    if client is not None:
        return client
    get = dask.base.get_scheduler()
    owner = getattr(get, "__self__", None)
    if owner is not None and "Client" in type(owner).__name__ and hasattr(owner, "compute"):
        return owner
    return None


def compute_all(parts: list, client=None) -> list:
    """Compute a list of Delayed tasks that write; return their values in order.

    Unlike ``dask.compute``, a failure is raised only once no task of ``parts`` is still
    running, so that the caller may delete what they wrote without racing a late writer:
    on a distributed cluster every future is awaited (finished or failed) before the first
    error is raised; with the local threaded scheduler a private thread pool is drained
    (tasks not started are cancelled, running ones finish). The synchronous scheduler runs
    one task at a time anyway.
    """
    client = _distributed_client(client)
    if client is not None:
        # each task writes its own chunk or file, so running it again is harmless: a
        # transient storage error that outlives the storage client's own retries gets
        # another chance on the cluster
        futures = client.compute(parts, retries=WRITE_TASK_RETRIES)
        client.gather(futures, errors="skip")  # returns once every future is done or failed
        return client.gather(futures)  # raises the first error, if any
    from dask.local import get_sync

    if dask.base.get_scheduler() is get_sync:
        return list(dask.compute(*parts))
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(dask.config.get("num_workers", None) or os.cpu_count() or 1)
    try:
        return list(dask.compute(*parts, scheduler=pool))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


#: a temporary directory to write into, published as ``out_path`` once complete
atomic_directory = publish_directory


# ---------------------------------------------------------------------------- writers


def _regular_rows(row_chunks: tuple) -> int | None:
    """The chunk length if the chunks are regular (equal, the last one possibly shorter)."""
    first = row_chunks[0]
    if all(c == first for c in row_chunks[:-1]) and row_chunks[-1] <= first:
        return first
    return None


def _row_starts(row_chunks) -> list[int]:
    return np.concatenate([[0], np.cumsum(row_chunks)[:-1]]).astype(int).tolist()


def _write_zarr_block(block: np.ndarray, targets: dict, start: int) -> int:
    """Write one chunk of predictions (see ``predict_block``) into the Zarr arrays."""
    stop = start + block.shape[0]
    if "labels" in targets:
        targets["labels"][start:stop] = block[:, 0].astype(np.int64)
    if "probabilities" in targets:
        targets["probabilities"][start:stop] = block[:, 2:]
    if "log_likelihood" in targets:
        targets["log_likelihood"][start:stop] = block[:, 1]
    return int(block.shape[0])


def _write_zarr(combined, outputs, tmp, params, storage_options, client) -> None:
    import zarr

    n_rows, n_components = combined.shape[0], params.n_components
    rows = _regular_rows(combined.chunks[0])
    if rows is None:
        rows = max(combined.chunks[0])
        log.info("input row chunks are unequal: Zarr output chunked by %d rows", rows)
        combined = combined.rechunk({0: rows})
    store, kwargs = zarr_target(tmp, storage_options)
    group = zarr.open_group(store, mode="w", **kwargs)
    group.attrs.update(
        {
            "dgmm_outputs": list(outputs),
            "n_components": n_components,
            "covariance_type": params.covariance_type,
            "n_samples": int(n_rows),
        }
    )
    shapes = {
        "labels": ((n_rows,), (rows,), np.int64, -1),
        "probabilities": ((n_rows, n_components), (rows, n_components), np.float64, np.nan),
        "log_likelihood": ((n_rows,), (rows,), np.float64, np.nan),
    }
    targets = {}
    for name in outputs:
        shape, chunks, dtype, fill = shapes[name]
        targets[name] = group.create_array(
            name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill
        )
    write = dask.delayed(_write_zarr_block, pure=False)
    blocks = combined.to_delayed().ravel()
    parts = [
        write(block, targets, start)
        for block, start in zip(blocks, _row_starts(combined.chunks[0]), strict=True)
    ]
    _check_written(compute_all(parts, client), n_rows)


def _check_written(counts, n_rows) -> None:
    if sum(counts) != n_rows:  # pragma: no cover - a broken writer
        raise DataError(f"wrote {sum(counts)} rows instead of {n_rows}")


def _write_part(block: np.ndarray, fs, path: str, outputs, n_components: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {}
    if "labels" in outputs:
        columns["label"] = pa.array(block[:, 0].astype(np.int64))
    if "probabilities" in outputs:
        for k in range(n_components):
            columns[f"prob_{k}"] = pa.array(np.ascontiguousarray(block[:, 2 + k]))
    if "log_likelihood" in outputs:
        columns["log_likelihood"] = pa.array(np.ascontiguousarray(block[:, 1]))
    with fs.open(path, "wb") as handle:
        pq.write_table(pa.table(columns), handle)
    return int(block.shape[0])


def _write_parquet(combined, outputs, tmp, params, storage_options, client) -> None:
    fs, root = url_to_fs(tmp, storage_options)
    fs.makedirs(root, exist_ok=True)
    blocks = combined.to_delayed().ravel()
    width = max(5, len(str(len(blocks) - 1)))
    write = dask.delayed(_write_part, pure=False)
    parts = [
        write(block, fs, f"{root}/part-{i:0{width}d}.parquet", outputs, params.n_components)
        for i, block in enumerate(blocks)
    ]
    _check_written(compute_all(parts, client), combined.shape[0])


def write_predictions(
    X,
    params: GMMParams,
    out_path: str | os.PathLike,
    *,
    format: str | None = None,
    outputs=OUTPUT_NAMES,
    client=None,
    storage_options: dict | None = None,
    marginalize: bool = False,
) -> str:
    """Write per-row predictions of ``params`` for ``X`` to Zarr or Parquet, atomically.

    Parameters
    ----------
    X : (n_samples, n_features) Dask or NumPy array; rows with NaN/inf get label -1 and
        NaN probabilities and log-likelihood.
    params : fitted GMMParams.
    out_path : local path or fsspec URL; ``*.zarr`` or ``*.parquet`` unless ``format``.
    format : 'zarr' | 'parquet' | None (from the suffix).
    outputs : any of 'labels', 'probabilities', 'log_likelihood'.
    client : distributed.Client to compute on (default: the current Dask scheduler).
    storage_options : passed to fsspec for URLs.
    marginalize : rows holding NaN (no inf) get the predictions of the marginal density
        over their observed features instead of -1 and NaN (``predict_block``).

    Returns
    -------
    str : ``out_path``, now holding the complete output (see the module docstring for the
    layout and the atomic replacement).
    """
    out_path = os.fspath(out_path).rstrip("/")
    fmt = infer_format(out_path, format)
    outputs = _check_outputs(outputs)
    X = engine.as_row_chunked(X)
    _check_features(X, params)
    combined = engine.map_rows(
        X, _predict_block_marginal if marginalize else predict_block, params,
        n_columns=2 + params.n_components, dtype=np.float64,
    )
    writer = _write_zarr if fmt == "zarr" else _write_parquet
    with atomic_directory(out_path, storage_options) as tmp:
        writer(combined, outputs, tmp, params, storage_options, client)
    return out_path
