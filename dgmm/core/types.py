"""Small shared types."""
from __future__ import annotations

from typing import Literal, get_args

CovarianceType = Literal["full", "tied", "diag", "spherical"]
COVARIANCE_TYPES: tuple[str, ...] = get_args(CovarianceType)

InitParams = Literal["kmeans", "k-means++", "random", "random_from_data"]
INIT_PARAMS: tuple[str, ...] = get_args(InitParams)

NonFinitePolicy = Literal["raise", "drop"]

#: output formats by path suffix (predictions, synthetic data)
PREDICTION_SUFFIXES = {".zarr": "zarr", ".parquet": "parquet", ".pq": "parquet"}


def format_from_suffix(path: str) -> str | None:
    """'zarr' or 'parquet' from the suffix of ``path`` (a trailing '/' ignored), or None."""
    import os

    return PREDICTION_SUFFIXES.get(os.path.splitext(path.rstrip("/"))[1].lower())
