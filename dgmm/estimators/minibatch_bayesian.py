"""``MiniBatchBayesianGaussianMixture``: variational Bayesian mixtures fitted online.

``fit`` runs stochastic variational inference (Hoffman, Blei, Wang and Paisley 2013) for up
to ``max_iter`` passes over the data: every step takes the E-step statistics of a batch of
``batch_size`` rows, blends their averages into the running averages with step size
eta_t = (t + 2)^-step_power, and sets the posterior to the update of the running averages
scaled to the data's total weight n (``dgmm.core.variational.VariationalBayes``). The
steps run on the machinery of ``dgmm.MiniBatchGaussianMixture`` (``dgmm.engine.minibatch``):
waves of ``wave_width`` chunks stepped side by side on as many workers, checkpoints in
mid-pass, the same numbers on any cluster. ``partial_fit`` (one pass over the rows given)
and every inference method are ``dgmm.BayesianGaussianMixture``'s.

Reads: one pass takes the data's moments (the prior's defaults and n) and draws a sample
of ``init_size`` rows, on which batch variational inference in memory (restarts by
``init_params``) gives theta_0; then one pass per ``max_iter``: two reads for one pass of
steps. With ``init_size=0`` the initialisation reads all rows instead
(``init_params`` as in scikit-learn: k-means|| and Lloyd passes for 'kmeans'). ``tol``
applies to the change of the pass's mean log of the E-step's normaliser per row, which is
what ``lower_bound_`` and ``lower_bounds_`` hold (per pass): the evidence lower bound
needs a batch pass of its own (``BayesianGaussianMixture(max_iter=1, warm_start=True)``
from the posterior gives it). ``warm_start=True`` continues the fitted posterior, its
running statistics and step counter for ``max_iter`` more passes on the rows given, with
the prior and n of the first fit (a model update on new data).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import replace

from sklearn.base import _fit_context

from ..engine import minibatch as stepwise
from ..engine import passes as engine
from ..errors import DataError
from .bayesian import BayesianGaussianMixture
from .constraints import declared_parameters
from .gaussian_mixture import ConvergenceWarning
from .minibatch import continuation, verbose_stepwise


@declared_parameters("MiniBatchBayesianGaussianMixture")
class MiniBatchBayesianGaussianMixture(BayesianGaussianMixture):
    """Variational Bayesian Gaussian mixture fitted by stochastic variational inference on
    mini-batches, out of core (see the module docstring).

    The constructor is ``dgmm.BayesianGaussianMixture``'s, with ``init_size=None`` by
    default (the start from a sample); ``max_iter`` counts passes and ``n_init`` must be 1.

    Attributes (after ``fit`` or ``partial_fit``): those of BayesianGaussianMixture, with
    ``lower_bound_`` and ``lower_bounds_`` the passes' mean log normaliser per row, plus
    ``n_steps_``, ``n_passes_``, ``state_`` (a ``dgmm.engine.minibatch.StepwiseState``:
    posterior, running averages, step counter) and ``kind_`` (the resolved prior and the
    data's weight n the running averages are scaled to).
    """

    def __init__(
        self,
        *,
        n_components=1,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        init_size=None,
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        client=None,
        split_every=8,
        nonfinite="raise",
        batch_size=32768,
        step_power=0.6,
        wave_width=8,
    ):
        super().__init__(
            n_components=n_components, covariance_type=covariance_type, tol=tol,
            reg_covar=reg_covar, max_iter=max_iter, n_init=n_init, init_params=init_params,
            weight_concentration_prior_type=weight_concentration_prior_type,
            weight_concentration_prior=weight_concentration_prior,
            mean_precision_prior=mean_precision_prior, mean_prior=mean_prior,
            degrees_of_freedom_prior=degrees_of_freedom_prior,
            covariance_prior=covariance_prior, random_state=random_state,
            warm_start=warm_start, verbose=verbose, verbose_interval=verbose_interval,
            client=client, split_every=split_every, nonfinite=nonfinite,
            batch_size=batch_size, step_power=step_power, wave_width=wave_width,
            init_size=init_size)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None, *, callback=None, resume=None):
        """Estimate the variational posterior by stochastic variational inference.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            NumPy or Dask array.
        y : None
            Ignored.
        sample_weight : array of shape (n_samples,), optional
            Non-negative row weights, counted as frequencies.
        callback : callable, optional
            Called with a ``dgmm.engine.minibatch.StepwiseInfo`` after initialisation,
            after waves of chunks and after every pass.
        resume : dgmm.engine.minibatch.StepwiseState, optional
            A state from the callback, to continue an interrupted fit (same data,
            chunking and settings).

        Returns
        -------
        self : MiniBatchBayesianGaussianMixture
        """
        continuing = self.warm_start and hasattr(self, "state_")
        X = self._check_X(X, fitting=not continuing)
        if continuing and X.shape[1] != self.n_features_in_:
            raise DataError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input: warm_start continues the fitted "
                "model. Pass rows with the same features, or set warm_start=False.")
        if X.shape[0] < self.n_components and not continuing:
            raise DataError(
                f"Expected n_samples >= n_components, got n_components={self.n_components}, "
                f"n_samples={X.shape[0]}. Use fewer components or more data.")
        if sample_weight is not None:
            sample_weight = self._check_sample_weight(sample_weight, X.shape[0])
        data = engine.prepare(X, sample_weight)
        callback = verbose_stepwise(self, callback)
        if continuing:  # the prior and the scale n of the first fit
            kind, state = self.kind_, resume or continuation(self.state_)
        elif resume is not None:
            kind, state = self.model_kind(data), resume
        else:
            kind, state = self._online_start(data)
            if callback is not None:
                callback(stepwise.StepwiseInfo(state, "init", math.nan))
        settings = replace(self._stepwise_settings(kind), max_iter=int(self.max_iter),
                           tol=float(self.tol))
        if continuing:
            settings = replace(settings, max_iter=self.state_.n_passes + settings.max_iter)
        state = stepwise.fit_stepwise(data, settings, state, callback=callback,
                                      client=self.client)
        self._set_stepwise(state, kind)
        self.converged_ = state.converged
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Stochastic variational inference stopped at max_iter passes before the "
                "pass's mean log normaliser settled. Increase max_iter or tol.",
                ConvergenceWarning, stacklevel=3)
        return self
