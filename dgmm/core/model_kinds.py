"""Model kinds: what differs between the kinds of mixture the engine fits, one object each.

A kind answers four questions, and nothing else in the engine depends on which kind it
fits (the pass, the reduction tree, the EM loop, lockstep restarts and grids, checkpoints):

(a) which statistics the E-step collects: ``SuffStats`` (per-component weight, sums and
    scatter about the means) in the layout of the family named by its terms'
    ``covariance_type``;
(b) the per-component terms of the E-step's log-density: ``estep_terms(params)``, a
    ``GaussianTerms`` (a Gaussian with a mean and a precision factor plus two additive
    terms, see ``dgmm.core.terms``);
(c) the M-step, pure: ``m_step(stats, previous)`` -> ``MStepResult`` (new parameters, and
    the components found empty); its settings (``reg_covar``, priors ...) are the kind's
    own fields;
(d) the objective of an iteration: ``objective(stats, previous, params)`` from the
    statistics gathered under ``previous`` and the parameters the M-step made of them.

Besides, a kind turns the initialisation's Gaussian mixture into its parameters
(``initial_params``) and rebuilds its parameters from a checkpoint's arrays
(``params_from_arrays``; its parameters give them back with ``to_arrays()``).
``MaximumLikelihood`` is the first kind. How to add one: docs/design.md, "Model kinds".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .model_parameters import DEFAULTS
from .mstep import MStepResult, m_step, mean_log_likelihood
from .params import GMMParams
from .stats import SuffStats
from .terms import GaussianTerms


class ModelKind(Protocol):
    """The interface of a model kind (see the module docstring)."""

    #: a short name, written into checkpoints
    name: str

    def estep_terms(self, params: Any) -> GaussianTerms:
        """(b) The Gaussians and additive terms the E-step evaluates under ``params``."""

    def m_step(self, stats: SuffStats, previous: Any | None) -> MStepResult:
        """(c) New parameters from statistics merged over all rows (pure)."""

    def objective(self, stats: SuffStats, previous: Any, params: Any) -> float:
        """(d) The iteration's objective; convergence compares two successive values."""

    def initial_params(self, start: GMMParams) -> Any:
        """The kind's parameters from the initialisation's mixture theta_0."""

    def params_from_arrays(self, arrays: dict[str, np.ndarray]) -> Any:
        """Parameters from the arrays their ``to_arrays()`` gave (checkpoints)."""


@dataclass(frozen=True)
class MaximumLikelihood:
    """Maximum-likelihood EM for a Gaussian mixture of one covariance family.

    covariance_type: the family; reg_covar: non-negative, added to the covariances'
    diagonals by the M-step. The objective is the mean log-likelihood per row of the
    parameters the E-step ran under (the lower bound scikit-learn reports).
    """

    covariance_type: str = DEFAULTS["covariance_type"]
    reg_covar: float = DEFAULTS["reg_covar"]
    name: str = "maximum_likelihood"

    def estep_terms(self, params: GMMParams) -> GaussianTerms:
        return params.gaussian_terms()

    def m_step(self, stats: SuffStats, previous: GMMParams | None) -> MStepResult:
        return m_step(stats, self.reg_covar, previous=previous)

    def objective(self, stats: SuffStats, previous: GMMParams, params: GMMParams) -> float:
        return mean_log_likelihood(stats)

    def initial_params(self, start: GMMParams) -> GMMParams:
        return start

    def params_from_arrays(self, arrays: dict[str, np.ndarray]) -> GMMParams:
        return GMMParams(**{k: arrays[k] for k in
                            ("weights", "means", "covariances", "precisions_cholesky")},
                         covariance_type=self.covariance_type)
