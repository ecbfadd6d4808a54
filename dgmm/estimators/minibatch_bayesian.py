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

Reads: one pass for the data's moments (the prior's defaults and n), the initialisation's
passes (``init_params``), then one pass per ``max_iter``. ``tol`` applies to the change of
the pass's mean log of the E-step's normaliser per row, which is what ``lower_bound_`` and
``lower_bounds_`` hold (per pass): the evidence lower bound needs a batch pass of its own
(``BayesianGaussianMixture(max_iter=1, warm_start=True)`` from the posterior gives it).
``warm_start=True`` continues the fitted posterior, its running statistics and step counter
for ``max_iter`` more passes on the rows given, with the prior and n of the first fit (a
model update on new data).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import replace

from sklearn.base import _fit_context

from ..engine import em
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

    The constructor is ``dgmm.BayesianGaussianMixture``'s; ``max_iter`` counts passes and
    ``n_init`` must be 1.

    Attributes (after ``fit`` or ``partial_fit``): those of BayesianGaussianMixture, with
    ``lower_bound_`` and ``lower_bounds_`` the passes' mean log normaliser per row, plus
    ``n_steps_``, ``n_passes_``, ``state_`` (a ``dgmm.engine.minibatch.StepwiseState``:
    posterior, running averages, step counter) and ``kind_`` (the resolved prior and the
    data's weight n the running averages are scaled to).
    """

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
        # a continued fit keeps the prior and the scale n of the first one
        kind = self.kind_ if continuing else self.model_kind(data)
        settings = replace(self._stepwise_settings(kind), max_iter=int(self.max_iter),
                           tol=float(self.tol))
        callback = verbose_stepwise(self, callback)
        if continuing:
            settings = replace(settings, max_iter=self.state_.n_passes + settings.max_iter)
        if resume is not None:
            state = resume
        elif continuing:
            state = continuation(self.state_)
        else:
            state = stepwise.initial_state(data, settings, em.resolve_seed(self.random_state),
                                           client=self.client)
            if callback is not None:
                callback(stepwise.StepwiseInfo(state, "init", math.nan))
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
