"""Names of the choices a model takes (the covariance types are in ``families``)."""
from __future__ import annotations

from typing import Literal, get_args

from .families import COVARIANCE_TYPES, CovarianceType

InitParams = Literal["kmeans", "k-means++", "random", "random_from_data"]
INIT_PARAMS: tuple[str, ...] = get_args(InitParams)
#: the methods whose theta_0 is K rows of the data with covariance reg_covar * I
POINT_INIT_PARAMS: tuple[str, ...] = ("k-means++", "random_from_data")

NonFinitePolicy = Literal["raise", "drop", "marginalize"]
NONFINITE_POLICIES: tuple[str, ...] = get_args(NonFinitePolicy)

#: the prior on the mixing weights of a variational Bayesian mixture
WeightPriorType = Literal["dirichlet_process", "dirichlet_distribution"]
WEIGHT_PRIOR_TYPES: tuple[str, ...] = get_args(WeightPriorType)

#: what a model's fit estimates: maximum-likelihood parameters (EM), or the variational
#: posterior of a Bayesian mixture
ModelKindName = Literal["maximum_likelihood", "variational_bayes"]
MODEL_KINDS: tuple[str, ...] = get_args(ModelKindName)

__all__ = ["COVARIANCE_TYPES", "CovarianceType", "INIT_PARAMS", "InitParams", "MODEL_KINDS",
           "ModelKindName", "NONFINITE_POLICIES", "NonFinitePolicy", "POINT_INIT_PARAMS",
           "WEIGHT_PRIOR_TYPES", "WeightPriorType"]
