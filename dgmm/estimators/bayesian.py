"""``BayesianGaussianMixture``: variational Bayesian mixtures, out of core, over the EM engine.

Same constructor parameters, fitted attributes and methods as
``sklearn.mixture.BayesianGaussianMixture``, plus dgmm's ``client``, ``split_every``,
``nonfinite`` and ``fit(X, sample_weight=..., callback=...)``. The parameters are declared
in ``dgmm.core.model_parameters`` (``BAYESIAN_PARAMETERS``); the mathematics is in
``dgmm.core.variational``.

``partial_fit(X)`` runs one pass of stochastic variational inference (Hoffman et al.
2013) over X's rows from the current posterior, on the mini-batch machinery
(``dgmm.engine.minibatch``: ``batch_size`` rows per step, step size (t + 2)^-step_power,
``wave_width`` chunks side by side); the first call resolves the prior and the data's
weight n (the running statistics are scaled to it) from that X and initialises by
``init_params`` (from a sample when ``init_size`` is not 0).

A fit makes one pass for the data's moments (the prior's defaults, as scikit-learn
computes them from X: the mean, the covariance), then the initialisation's passes, then
one pass per iteration for every restart in lockstep. With ``init_size`` not 0 (dgmm's
own; 0 by default, scikit-learn's start) the first pass also draws a sample, batch
variational inference on it in memory gives the start (``_sample_start``, the start of
``MiniBatchBayesianGaussianMixture``) and the fit on all rows continues from there: one
read instead of the initialisation's passes, and a start the prior has already pruned. As
in scikit-learn, ``lower_bound_`` is the evidence lower bound up to a constant, summed
over the rows (not per row), and ``tol`` applies to its change. With
``nonfinite='marginalize'`` the prior's defaults come from the rows without missing
entries.
"""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
from sklearn.base import _fit_context

from ..core import kernels
from ..core import search as core_search
from ..core import variational as vb
from ..core.model_parameters import BAYESIAN_PARAMETERS, DEFAULTS
from ..core.nonfinite import nonfinite_rule
from ..core.params import GMMParams
from ..core.types import POINT_INIT_PARAMS
from ..engine import em, search
from ..engine import minibatch as stepwise
from ..engine import passes as engine
from ..engine.models import Pass, multi_pass
from ..engine.sample import sample_request
from ..errors import DataError
from .constraints import declared_parameters
from .gaussian_mixture import ConvergenceWarning, GaussianMixture
from .minibatch import continuation

#: the sample's restarts start from these too (besides ``init_params``), the best bound
#: kept: from a 'kmeans' start (N_k = n pi_k) the prior switches few components off, from
#: single rows it can
SAMPLE_INITS = ("k-means++",)
#: the constructor parameters that set the prior
PRIOR_PARAMETERS = tuple(p.name for p in BAYESIAN_PARAMETERS if p.model_kind is not None)
#: the fitted attributes that name the resolved prior, as scikit-learn names them
_PRIOR_ATTRIBUTES = {
    "weight_concentration_prior_": "weight_concentration",
    "mean_precision_prior_": "mean_precision",
    "mean_prior_": "mean",
    "degrees_of_freedom_prior_": "degrees_of_freedom",
    "covariance_prior_": "covariance",
}


@declared_parameters("BayesianGaussianMixture")
class BayesianGaussianMixture(GaussianMixture):
    """Variational Bayesian Gaussian mixture fitted out of core on a Dask cluster.

    Parameters are those of ``sklearn.mixture.BayesianGaussianMixture`` (see its
    documentation), with the same defaults and constraints, plus ``client``,
    ``split_every`` and ``nonfinite`` (see ``dgmm.GaussianMixture``).

    Attributes (after ``fit``): scikit-learn's ``weights_``, ``means_``, ``covariances_``,
    ``precisions_``, ``precisions_cholesky_``, ``converged_``, ``n_iter_``,
    ``lower_bound_``, ``lower_bounds_``, ``weight_concentration_prior_``,
    ``weight_concentration_`` (a tuple of two (K,) arrays for a Dirichlet process),
    ``mean_precision_prior_``, ``mean_precision_``, ``mean_prior_``,
    ``degrees_of_freedom_prior_``, ``degrees_of_freedom_``, ``covariance_prior_``,
    ``n_features_in_``; and dgmm's ``posterior_`` (a ``VariationalParams``), ``prior_`` (a
    ``VariationalPrior``), ``params_`` (the mixture of the posterior's expected weights,
    means and covariances, a ``GMMParams``) and ``n_nonfinite_``.
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
        init_size=0,
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
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.init_size = init_size
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.client = client
        self.split_every = split_every
        self.nonfinite = nonfinite
        self.batch_size = batch_size
        self.step_power = step_power
        self.wave_width = wave_width

    # scikit-learn's BayesianGaussianMixture has no information criteria
    @property
    def bic(self):
        raise AttributeError("BayesianGaussianMixture has no bic: compare lower_bound_ "
                             "or score on held-out data instead")

    @property
    def aic(self):
        raise AttributeError("BayesianGaussianMixture has no aic: compare lower_bound_ "
                             "or score on held-out data instead")

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None, *, callback=None, resume=None):
        """Estimate the variational posterior by batch variational inference.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            NumPy or Dask array.
        y : None
            Ignored.
        sample_weight : array of shape (n_samples,), optional
            Non-negative row weights, counted as frequencies.
        callback : callable, optional
            Called with an ``em.IterationInfo`` after initialisation and each iteration.
        resume : em.EMState, optional
            A state from the callback to continue (the prior comes again from the data).

        Returns
        -------
        self : BayesianGaussianMixture
        """
        self._fit(X, sample_weight, callback, resume)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_predict(self, X, y=None, sample_weight=None, *, callback=None):
        """Fit (as ``fit`` does), then return the labels of X under the fitted posterior.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
        y : None
            Ignored.
        sample_weight : array of shape (n_samples,), optional
        callback : callable, optional
            As in ``fit``.

        Returns
        -------
        labels : array of shape (n_samples,)
        """
        return self.fit(X, sample_weight=sample_weight, callback=callback).predict(X)

    def model_kind(self, data: engine.ChunkedData) -> vb.VariationalBayes:
        """The engine's model kind for ``data``: the prior resolved from the data's moments
        (one pass), scikit-learn's way of starting from the initial partition.

        Parameters
        ----------
        data : dgmm.engine.passes.ChunkedData
            The rows (and weights) the fit will read.

        Returns
        -------
        dgmm.core.variational.VariationalBayes
        """
        moments = engine.map_reduce(data, vb.data_moments_chunk, self.covariance_type,
                                    split_every=int(self.split_every), client=self.client)
        return self.kind_from_moments(moments, weighted=data.weights is not None)

    def kind_from_moments(self, moments: vb.DataMoments, *,
                          weighted: bool) -> vb.VariationalBayes:
        """The model kind whose prior's defaults come from the data's ``moments`` (the
        rows checked against the non-finite policy first).

        Parameters
        ----------
        moments : dgmm.core.variational.DataMoments
            The merged moments of every chunk.
        weighted : bool
            The rows have sample weights (for the messages).

        Returns
        -------
        dgmm.core.variational.VariationalBayes
        """
        settings = self._settings()
        em.check_rows(moments.n_rows, moments.n_nonfinite, moments.first_nonfinite,
                      settings, weighted=weighted)
        if not moments.n > 0:
            raise DataError("sample_weight sums to 0 over the usable rows: at least one row "
                            "needs a positive weight.")
        prior = vb.resolve_prior(
            settings.covariance_type, settings.n_components, moments.mean,
            moments.covariance() if moments.n > 1 else None,
            **{name: getattr(self, name) for name in PRIOR_PARAMETERS})
        return vb.VariationalBayes(prior, settings.reg_covar, moments.n,
                                   point_start=settings.init_params in POINT_INIT_PARAMS)

    def _fit(self, X, sample_weight, callback, resume):
        X = self._check_X(X, fitting=True)
        n_samples, n_features = X.shape
        if n_samples < self.n_components:
            raise DataError(
                f"Expected n_samples >= n_components, got n_components={self.n_components}, "
                f"n_samples={n_samples}. Use fewer components or more data."
            )
        if sample_weight is not None:
            sample_weight = self._check_sample_weight(sample_weight, X.shape[0])
        data = engine.prepare(X, sample_weight)
        seed = resume.seed if resume is not None else em.resolve_seed(self.random_state)
        warm = None
        if self.warm_start and hasattr(self, "converged_"):
            warm = (self.posterior_, self.lower_bound_)
        if resume is None and warm is None and search.uses_sample(self._settings()):
            kind, posterior, _ = self._sample_start(data, seed)
            warm = (posterior, -np.inf)
        else:
            kind = self.model_kind(data)
        result = em.fit_em(data, self._settings(), seed=seed, warm_start=warm, kind=kind,
                           callback=self._verbose_callback(callback), resume=resume,
                           client=self.client)
        self._set_posterior(result.params, kind.prior)
        for online in ("state_", "kind_", "n_steps_", "n_passes_"):  # fit starts over
            self.__dict__.pop(online, None)
        self.converged_ = result.converged
        self.n_iter_ = result.n_iter
        self.lower_bound_ = result.lower_bound
        self.lower_bounds_ = list(result.history)
        self.n_nonfinite_ = result.n_nonfinite
        self.fit_state_ = result.final_state
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=2,
            )

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None, sample_weight=None, *, callback=None):
        """One pass of stochastic variational inference over the rows of X from the current
        posterior (the first call resolves the prior and initialises from X).

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            NumPy or Dask array.
        y : None
            Ignored.
        sample_weight : array of shape (n_samples,), optional
            Non-negative row weights.
        callback : callable, optional
            Called with a ``dgmm.engine.minibatch.StepwiseInfo`` after waves and the pass.

        Returns
        -------
        self : BayesianGaussianMixture
            ``state_`` holds the running statistics and the step counter.
        """
        first = not hasattr(self, "state_")
        X = self._check_X(X, fitting=first)
        if not first and X.shape[1] != self.n_features_in_:
            raise DataError(f"X has {X.shape[1]} features, but BayesianGaussianMixture is "
                            f"expecting {self.n_features_in_} features as input.")
        if sample_weight is not None:
            sample_weight = self._check_sample_weight(sample_weight, X.shape[0])
        data = engine.prepare(X, sample_weight)
        if first:
            kind, state = self._online_start(data)
            settings = self._stepwise_settings(kind)
        else:
            kind = self.kind_
            settings = self._stepwise_settings(kind)
            state = continuation(self.state_)
        state = stepwise.run_pass(data, state, settings, callback=callback,
                                  client=self.client, tol=None)
        self._set_stepwise(state, kind)
        return self

    def _sample_start(self, data: engine.ChunkedData, seed: int):
        """(kind, posterior, running averages) from a sample: one pass takes the data's
        moments and the sample together; batch variational inference on the sample in
        memory (restarts on a prefix of it as in the search of ``dgmm.GaussianMixture``,
        from ``init_params`` and from single rows, the best bound polished on all of it);
        its statistics scaled to the data as a step of size 1 on the sample
        (``dgmm.core.variational.online_start``): the components the prior switched off
        on the sample start switched off."""
        settings = self._settings()
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
        # ends with a cluster split in two, which later steps do not merge), then that
        # posterior polished on the whole sample; the tolerances per row are the search's
        prefix = rows[:core_search.search_rows(self.n_components, data.n_features)]
        restarts = core_search.n_restarts(prefix.shape[0], 1)
        found = []
        for init_params in dict.fromkeys((settings.init_params, *SAMPLE_INITS)):
            found.append(em.fit_em(
                engine.prepare(prefix),
                replace(settings, init_params=init_params, n_init=restarts,
                        tol=DEFAULTS["tol"] * prefix.shape[0],
                        max_iter=search.SEARCH_MAX_ITER),
                seed=seed, kind=replace(kind, n=float(prefix.shape[0]),
                                        point_start=init_params in POINT_INIT_PARAMS)))
        best = max(found, key=lambda result: result.lower_bound).params
        best = em.fit_em(
            engine.prepare(rows),
            replace(settings, n_init=1, max_iter=search.SEARCH_MAX_ITER,
                    tol=DEFAULTS["tol"] * core_search.POLISH_TOL * rows.shape[0]),
            seed=seed, kind=replace(kind, n=float(rows.shape[0])),
            warm_start=(best, -np.inf)).params
        stats = kernels.chunk_stats(rows, best, None,
                                    nonfinite=nonfinite_rule(settings.nonfinite))
        return (kind, *vb.online_start(kind, stats, best))

    def _online_start(self, data: engine.ChunkedData):
        """The kind (prior and scale from the data's moments) and the initial state of
        stochastic variational inference on ``data``: from a sample
        (``_sample_start``) unless ``init_size`` is 0, then theta_0 by ``init_params``
        on all rows."""
        seed = em.resolve_seed(self.random_state)
        if search.uses_sample(self._settings()):
            kind, posterior, running = self._sample_start(data, seed)
            return kind, stepwise.StepwiseState(seed=seed, params=posterior, running=running)
        kind = self.model_kind(data)
        state = stepwise.initial_state(data, self._stepwise_settings(kind), seed,
                                       client=self.client)
        return kind, state

    def _set_stepwise(self, state: stepwise.StepwiseState, kind: vb.VariationalBayes):
        self.kind_, self.state_ = kind, state
        self._set_posterior(state.params, kind.prior)
        self.n_steps_, self.n_passes_ = state.n_steps, state.n_passes
        self.n_iter_, self.converged_ = state.n_passes, False
        # the pass's mean log of the E-step's normaliser (the steps' own objective)
        self.lower_bound_, self.lower_bounds_ = state.lower_bound, list(state.history)
        self.n_nonfinite_ = state.n_nonfinite

    def _stepwise_settings(self, kind: vb.VariationalBayes) -> stepwise.StepwiseSettings:
        settings = self._settings()
        return stepwise.StepwiseSettings(
            settings.n_components, covariance_type=settings.covariance_type,
            batch_size=int(self.batch_size), step_power=float(self.step_power),
            wave_width=int(self.wave_width), max_iter=1, tol=0.0,
            reg_covar=settings.reg_covar, init_params=settings.init_params,
            nonfinite=settings.nonfinite, split_every=settings.split_every, kind=kind)

    def _set_posterior(self, posterior: vb.VariationalParams, prior: vb.VariationalPrior):
        self.posterior_ = posterior
        self.prior_ = prior
        for attribute, name in _PRIOR_ATTRIBUTES.items():
            value = getattr(prior, name)
            setattr(self, attribute, value if np.ndim(value) else float(value))
        concentration = np.array(posterior.weight_concentration)
        self.weight_concentration_ = (tuple(concentration) if posterior.is_process
                                      else concentration)
        self.mean_precision_ = np.array(posterior.mean_precision)
        self.degrees_of_freedom_ = (np.array(posterior.degrees_of_freedom)
                                    if np.ndim(posterior.degrees_of_freedom)
                                    else float(posterior.degrees_of_freedom))
        params = GMMParams(vb.expected_weights(posterior), posterior.means,
                           posterior.covariances, posterior.precisions_cholesky,
                           posterior.covariance_type)
        self._set_result(params, posterior.n_features)

    def inference_params(self):
        """What predict, predict_proba and score_samples evaluate: the E-step's terms of
        the posterior (scikit-learn's ``_estimate_weighted_log_prob``).

        Returns
        -------
        VariationalParams
        """
        return self.posterior_

    @classmethod
    def from_posterior(cls, posterior: vb.VariationalParams, prior: vb.VariationalPrior,
                       **kwargs) -> BayesianGaussianMixture:
        """A fitted estimator holding ``posterior`` (e.g. loaded from a model file).

        Parameters
        ----------
        posterior : VariationalParams
        prior : VariationalPrior
        **kwargs
            Constructor parameters.

        Returns
        -------
        BayesianGaussianMixture
        """
        kwargs.setdefault("n_components", posterior.n_components)
        kwargs.setdefault("covariance_type", posterior.covariance_type)
        kwargs.setdefault("weight_concentration_prior_type",
                          posterior.weight_concentration_prior_type)
        model = cls(**kwargs)
        model._set_posterior(posterior, prior)
        model.converged_ = True
        model.n_iter_ = 0
        model.lower_bound_ = -np.inf
        model.lower_bounds_ = []
        model.n_nonfinite_ = 0
        return model
