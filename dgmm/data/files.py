"""Small file helpers shared by the readers and writers: atomic JSON, output formats."""
from __future__ import annotations

import json
import os
import uuid


def atomic_write_json(path: str, payload: dict) -> None:
    """Write JSON to ``path`` via a temporary sibling, fsync, and rename into place."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "w") as fh:
            json.dump(payload, fh, indent=2, allow_nan=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_json(path: str) -> dict | None:
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


#: output formats by path suffix (predictions, synthetic data)
PREDICTION_SUFFIXES = {".zarr": "zarr", ".parquet": "parquet", ".pq": "parquet"}


def format_from_suffix(path: str) -> str | None:
    """'zarr' or 'parquet' from the suffix of ``path`` (a trailing '/' ignored), or None."""
    return PREDICTION_SUFFIXES.get(os.path.splitext(path.rstrip("/"))[1].lower())
