"""Small file helpers shared by the readers and writers: the URL rule, filesystems, Zarr
stores, output formats. Atomic writes are in :mod:`dgmm.data.publish`."""
from __future__ import annotations

import os
import re

from ..errors import DataError

_SCHEME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")


def is_url(path) -> bool:
    """True for fsspec URLs (``scheme://...`` or chained ``a::b://...``), False for
    plain local paths (Windows drive letters included)."""
    text = os.fspath(path) if not isinstance(path, str) else path
    return _SCHEME_RE.match(text) is not None or "::" in text


def url_to_fs(path: str, storage_options: dict | None = None):
    """``(filesystem, path inside it)`` for a local path or URL; ``DataError`` when the
    protocol is unknown or its fsspec backend is not installed."""
    import fsspec

    from .redact import register

    register(storage_options)
    try:
        return fsspec.core.url_to_fs(path, **(storage_options or {}))
    except (ValueError, ImportError) as exc:
        from .redact import redact

        raise DataError(redact(
            f"Cannot open {path!r}: {exc}. Check the URL's protocol and that its fsspec "
            "backend is installed (s3fs for s3://, gcsfs for gs://, adlfs for az://), and "
            "the storage_options.")) from None


def zarr_target(path: str, storage_options: dict | None, read_only: bool = False):
    """(store argument, keyword arguments) to open or write a Zarr node at ``path``.

    Local paths and ``file://`` URLs become plain paths (zarr's LocalStore creates the
    directories it needs). Other URLs become a zarr ``FsspecStore``: an asynchronous
    instance of the filesystem (s3, gcs, http ...) or, for one that has none (memory, or
    dir:// over a local target, which refuses to be made asynchronous), the synchronous
    one wrapped for zarr's asynchronous store API.
    """
    from fsspec.implementations.local import LocalFileSystem

    fs, fs_path = url_to_fs(path, storage_options)
    if isinstance(fs, LocalFileSystem):
        return fs_path, {}
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
    from zarr.storage import FsspecStore

    if fs.async_impl:
        try:
            fs = url_to_fs(path, {"asynchronous": True, **(storage_options or {})})[0]
        except DataError:  # e.g. dir:// over a synchronous target
            fs = AsyncFileSystemWrapper(fs, asynchronous=True)
    else:
        fs = AsyncFileSystemWrapper(fs, asynchronous=True)
    return FsspecStore(fs=fs, path=fs_path, read_only=read_only), {}


#: output formats by path suffix (predictions, synthetic data)
PREDICTION_SUFFIXES = {".zarr": "zarr", ".parquet": "parquet", ".pq": "parquet"}


def format_from_suffix(path: str) -> str | None:
    """'zarr' or 'parquet' from the suffix of ``path`` (a trailing '/' ignored), or None."""
    return PREDICTION_SUFFIXES.get(os.path.splitext(path.rstrip("/"))[1].lower())
