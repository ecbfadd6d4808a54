"""The scikit-learn estimators over the EM engine.

``ConvergenceWarning`` is ``sklearn.exceptions.ConvergenceWarning``.
"""
from .bayesian import BayesianGaussianMixture
from .gaussian_mixture import ConvergenceWarning, GaussianMixture, information_criteria
from .minibatch import MiniBatchGaussianMixture
from .minibatch_bayesian import MiniBatchBayesianGaussianMixture
from .saved import load_model
from .selection import GaussianMixtureSelection

__all__ = ["BayesianGaussianMixture", "GaussianMixture", "GaussianMixtureSelection",
           "MiniBatchBayesianGaussianMixture", "MiniBatchGaussianMixture",
           "ConvergenceWarning",
           "information_criteria", "load_model"]
