"""Small file helpers shared by the readers and writers: the URL rule, filesystems,
output formats. Atomic writes are in :mod:`dgmm.data.publish`."""
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


def atomic_write_json(path: str, payload: dict, storage_options: dict | None = None) -> None:
    """Write JSON to a local path or URL atomically (:func:`dgmm.data.publish.write_json`)."""
    from .publish import write_json

    write_json(path, payload, storage_options)


def read_json(path: str, storage_options: dict | None = None) -> dict | None:
    """The JSON object at ``path``, or None when it is missing or not JSON."""
    from .publish import read_json as _read_json

    return _read_json(path, storage_options)


#: output formats by path suffix (predictions, synthetic data)
PREDICTION_SUFFIXES = {".zarr": "zarr", ".parquet": "parquet", ".pq": "parquet"}


def format_from_suffix(path: str) -> str | None:
    """'zarr' or 'parquet' from the suffix of ``path`` (a trailing '/' ignored), or None."""
    return PREDICTION_SUFFIXES.get(os.path.splitext(path.rstrip("/"))[1].lower())
