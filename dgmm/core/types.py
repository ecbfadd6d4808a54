"""Names of the choices a model takes (the covariance types are in ``families``)."""
from __future__ import annotations

from typing import Literal, get_args

from .families import COVARIANCE_TYPES, CovarianceType

InitParams = Literal["kmeans", "k-means++", "random", "random_from_data"]
INIT_PARAMS: tuple[str, ...] = get_args(InitParams)

NonFinitePolicy = Literal["raise", "drop", "marginalize"]
NONFINITE_POLICIES: tuple[str, ...] = get_args(NonFinitePolicy)

__all__ = ["COVARIANCE_TYPES", "CovarianceType", "INIT_PARAMS", "InitParams", "NONFINITE_POLICIES",
           "NonFinitePolicy"]
