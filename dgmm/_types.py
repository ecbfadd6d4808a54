"""Small shared types."""
from __future__ import annotations

from typing import Literal, get_args

CovarianceType = Literal["full", "tied", "diag", "spherical"]
COVARIANCE_TYPES: tuple[str, ...] = get_args(CovarianceType)

InitParams = Literal["kmeans", "k-means++", "random", "random_from_data"]
INIT_PARAMS: tuple[str, ...] = get_args(InitParams)

NonFinitePolicy = Literal["raise", "drop"]
