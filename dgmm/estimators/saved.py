"""Reading a saved model back as the estimator that fitted it."""
from __future__ import annotations

from ..core.variational import VariationalBayes
from ..data import model_io
from ..engine.minibatch import StepwiseState
from .bayesian import BayesianGaussianMixture
from .gaussian_mixture import GaussianMixture
from .minibatch import MiniBatchGaussianMixture
from .minibatch_bayesian import MiniBatchBayesianGaussianMixture

__all__ = ["load_model"]


def load_model(path, *, storage_options: dict | None = None, **kwargs):
    """A fitted estimator from a model directory.

    A model saved from a ``dgmm.MiniBatchGaussianMixture`` comes back as one, with its
    ``state_`` (running statistics, step counter), so ``partial_fit`` continues it; one
    saved from a ``dgmm.BayesianGaussianMixture`` or ``dgmm.MiniBatchBayesianGaussianMixture``
    as one, with its posterior and prior (and, after stochastic variational inference, its
    ``state_`` and ``kind_``).

    Parameters
    ----------
    path : str or os.PathLike
        The model directory: a local path or an fsspec URL.
    storage_options : dict, optional
        fsspec options for a URL (credentials, endpoint ...).
    **kwargs
        Constructor parameters that override the saved ones (e.g. ``client=``).

    Returns
    -------
    GaussianMixture, MiniBatchGaussianMixture, BayesianGaussianMixture or
    MiniBatchBayesianGaussianMixture
        Fitted: ``weights_`` (n_components,), ``means_`` (n_components, n_features),
        ``covariances_`` shaped per covariance type (full: (n_components, n_features,
        n_features), tied: (n_features, n_features), diag: (n_components, n_features),
        spherical: (n_components,)).
    """
    params, meta = model_io.load_params(path, storage_options)
    record = model_io.load_state_record(path, meta, storage_options)
    variational = model_io.load_variational(path, meta, storage_options)
    cls = GaussianMixture
    if variational is not None:  # with a state: its partial_fit continues
        cls = (MiniBatchBayesianGaussianMixture
               if meta.get("estimator") == MiniBatchBayesianGaussianMixture.__name__
               else BayesianGaussianMixture)
    elif record is not None:
        cls = MiniBatchGaussianMixture
    accepted = set(cls._parameter_constraints)
    # arrays are saved as their repr: the prior's arrays come back with the posterior
    settings = {k: v for k, v in meta.get("settings", {}).items()
                if k in model_io.SETTINGS and k in accepted
                and not (isinstance(v, str) and k in ("random_state", "mean_prior",
                                                       "covariance_prior"))}
    if variational is not None:
        model = cls.from_posterior(*variational, **{**settings, **kwargs})
    else:
        model = cls.from_params(params, **{**settings, **kwargs})
    model.n_iter_ = meta["n_iter"]
    model.converged_ = meta["converged"]
    lower_bound = meta["lower_bound"]
    model.lower_bound_ = -float("inf") if lower_bound is None else float(lower_bound)
    model.lower_bounds_ = list(meta["lower_bounds"])
    model.n_nonfinite_ = meta.get("n_nonfinite", 0)
    model.data_fingerprint_ = meta.get("data_fingerprint")
    if variational is not None and record is not None:
        posterior, prior = variational
        kind = VariationalBayes(prior, float(model.reg_covar),
                                float(meta["variational"]["n"]))
        model._set_stepwise(StepwiseState.from_record(*record, kind), kind)
    elif record is not None:
        model._set_state(StepwiseState.from_record(*record), params.n_features)
    return model
