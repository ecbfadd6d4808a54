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

from ..core import kernels
from ..core import search as core_search
from ..core import variational as vb
from ..core.model_parameters import DEFAULTS
from ..core.nonfinite import nonfinite_rule
from ..core.types import POINT_INIT_PARAMS
from ..engine import em, search
from ..engine import minibatch as stepwise
from ..engine import passes as engine
from ..engine.models import Pass, multi_pass
from ..engine.sample import sample_request
from ..errors import DataError
from .bayesian import BayesianGaussianMixture
from .constraints import declared_parameters
from .gaussian_mixture import ConvergenceWarning
from .minibatch import continuation, verbose_stepwise

#: the sample's restarts start from these too (besides ``init_params``), the best bound
#: kept: from a 'kmeans' start (N_k = n pi_k) the prior switches few components off, from
#: single rows it can
SAMPLE_INITS = ("k-means++",)


@declared_parameters("MiniBatchBayesianGaussianMixture")
class MiniBatchBayesianGaussianMixture(BayesianGaussianMixture):
    """Variational Bayesian Gaussian mixture fitted by stochastic variational inference on
    mini-batches, out of core (see the module docstring).

    The constructor is ``dgmm.BayesianGaussianMixture``'s plus ``init_size``; ``max_iter``
    counts passes and ``n_init`` must be 1.

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
            batch_size=batch_size, step_power=step_power, wave_width=wave_width)
        self.init_size = init_size

    def _online_start(self, data: engine.ChunkedData):
        """The kind and theta_0 of a new fit (or of the first ``partial_fit``): by default
        one pass for the moments and the sample together, batch variational inference on
        the sample in memory (the prior from all rows; restarts on a prefix of it as in
        the search of ``dgmm.GaussianMixture``, the best polished on all of it), and the
        state of a step of size 1 on the sample scaled to the data
        (``dgmm.core.variational.online_start``): the components the prior switched off
        on the sample start switched off."""
        settings = self._settings()
        if not search.uses_sample(settings):
            return super()._online_start(data)
        seed = em.resolve_seed(self.random_state)
        size = search.model_sample_rows(replace(settings, tol=DEFAULTS["tol"]),
                                        data.n_features)
        moments, sample = multi_pass(
            data, [Pass(vb.data_moments_chunk, (self.covariance_type,)),
                   sample_request(data, size, seed, settings.nonfinite)],
            split_every=settings.split_every, client=self.client)
        kind = self.kind_from_moments(moments, weighted=data.weights is not None)
        rows = sample.rows
        # restarts in lockstep on a prefix of the sample (a uniform subsample: rows are
        # sorted by key), the best bound kept (variational inference from one start often
        # ends with a cluster split in two, which the steps do not merge), then that
        # posterior polished on the whole sample; the tolerances per row are the search's
        prefix = rows[:core_search.search_rows(self.n_components, data.n_features)]
        restarts = core_search.n_restarts(prefix.shape[0], 1)
        found = []
        for init_params in dict.fromkeys((settings.init_params, *SAMPLE_INITS)):
            point_start = init_params in POINT_INIT_PARAMS
            found.append(em.fit_em(
                engine.prepare(prefix),
                replace(settings, init_params=init_params, n_init=restarts,
                        tol=DEFAULTS["tol"] * prefix.shape[0],
                        max_iter=search.SEARCH_MAX_ITER),
                seed=seed, kind=replace(kind, n=float(prefix.shape[0]),
                                        point_start=point_start)))
        best = max(found, key=lambda result: result.lower_bound).params
        best = em.fit_em(
            engine.prepare(rows),
            replace(settings, n_init=1, max_iter=search.SEARCH_MAX_ITER,
                    tol=DEFAULTS["tol"] * core_search.POLISH_TOL * rows.shape[0]),
            seed=seed, kind=replace(kind, n=float(rows.shape[0])),
            warm_start=(best, -math.inf)).params
        stats = kernels.chunk_stats(rows, best, None,
                                    nonfinite=nonfinite_rule(settings.nonfinite))
        posterior, running = vb.online_start(kind, stats, best)
        return kind, stepwise.StepwiseState(seed=seed, params=posterior, running=running)

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
