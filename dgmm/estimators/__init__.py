"""The scikit-learn estimators over the EM engine."""
from .gaussian_mixture import ConvergenceWarning, GaussianMixture, information_criteria, load_model
from .selection import GaussianMixtureSelection

__all__ = ["GaussianMixture", "GaussianMixtureSelection", "ConvergenceWarning",
           "information_criteria", "load_model"]
