"""``MiniBatchGaussianMixture``: stepwise (mini-batch) EM with scikit-learn's conventions.

GaussianMixture's parameters plus, as in ``sklearn.cluster.MiniBatchKMeans``:
``batch_size`` (rows per step), ``step_power`` (alpha in eta_t = (t + 2)^(-alpha)),
``max_iter`` counted in passes over the data, ``tol`` on the change of the pass's mean
log-likelihood, ``polish_iter`` (batch EM iterations run from the stepwise result) and
``wave_width`` (chunks stepped side by side from one state, their running statistics
averaged after each wave: the chains of a wave run on as many workers; a setting, so that
the result never depends on the cluster).
``fit`` starts over (or continues the current model with ``warm_start=True``);
``partial_fit`` runs one pass over the rows it is given from the current model, its
running statistics and step counter (the first call initialises). Inference (predict,
predict_proba, score_samples, score, bic, aic, sample) is GaussianMixture's.

Initialisation is GaussianMixture's: by default one pass draws a sample and the search
on it gives theta_0 (``dgmm.engine.search``); with ``init_size=0`` the initialisation
reads all rows (``init_params='kmeans'``: k-means|| and Lloyd passes), and user-given
parameters read none. ``n_init`` must be 1.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import replace

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin

from ..core.model_parameters import DEFAULTS
from ..engine import em, search
from ..engine import minibatch as stepwise
from ..engine import passes as engine
from ..errors import ConfigError, DataError
from .constraints import declared_parameters
from .gaussian_mixture import ConvergenceWarning, GaussianMixture


@declared_parameters("MiniBatchGaussianMixture")
class MiniBatchGaussianMixture(GaussianMixture, DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by stepwise EM on mini-batches (see the module docstring).

    Attributes (after ``fit`` or ``partial_fit``): those of GaussianMixture, plus
    ``n_steps_`` (steps done), ``n_passes_`` (complete passes), ``lower_bound_`` (the last
    pass's mean log-likelihood, or the polish's last lower bound), ``lower_bounds_`` (per
    pass, then per polish iteration) and ``state_`` (a
    ``dgmm.engine.minibatch.StepwiseState``: parameters, running statistics, step
    counter; ``state_.to_record()`` saves it).
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        init_size=None,
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        client=None,
        split_every=8,
        nonfinite="raise",
        batch_size=32768,
        step_power=0.6,
        polish_iter=0,
        wave_width=8,
    ):
        super().__init__(
            n_components, covariance_type=covariance_type, tol=tol, reg_covar=reg_covar,
            max_iter=max_iter, n_init=n_init, init_params=init_params, init_size=init_size,
            weights_init=weights_init, means_init=means_init,
            precisions_init=precisions_init, random_state=random_state,
            warm_start=warm_start, verbose=verbose, verbose_interval=verbose_interval,
            client=client, split_every=split_every, nonfinite=nonfinite,
        )
        self.batch_size = batch_size
        self.step_power = step_power
        self.polish_iter = polish_iter
        self.wave_width = wave_width

    # -- validation ------------------------------------------------------------------
    def _check_all(self, X, sample_weight):
        self._validate_params()
        X = self._check_X(X, fitting=True)
        if X.shape[0] < self.n_components:
            raise DataError(
                f"Expected n_samples >= n_components, got n_components={self.n_components}, "
                f"n_samples={X.shape[0]}. Use fewer components or more data."
            )
        self._check_initial_parameters(X.shape[1])
        if sample_weight is not None:
            sample_weight = self._check_sample_weight(sample_weight, X.shape[0])
        return X, sample_weight

    def _stepwise_settings(self) -> stepwise.StepwiseSettings:
        return stepwise.StepwiseSettings(
            n_components=int(self.n_components), covariance_type=self.covariance_type,
            batch_size=int(self.batch_size), step_power=float(self.step_power),
            max_iter=int(self.max_iter), tol=float(self.tol),
            reg_covar=float(self.reg_covar), polish_iter=int(self.polish_iter),
            wave_width=int(self.wave_width),
            init_params=self.init_params, nonfinite=self.nonfinite,
            split_every=int(self.split_every),
        )

    def _initial_state(self, data, settings, seed) -> stepwise.StepwiseState:
        fixed = self._fixed_init()
        partial = fixed is None and any(
            v is not None for v in (self.weights_init, self.means_init, self.precisions_init))
        fixed_init = None
        if fixed is not None:
            fixed_init = lambda data: fixed(data, 0)  # noqa: E731
        elif partial:
            def fixed_init(data):
                first = stepwise.initial_state(data, settings, seed, client=self.client)
                return self._partial_init(first.params)
        elif search.uses_sample(self._settings()):
            # one pass draws a sample; the search on it gives theta_0 (dgmm.engine.search),
            # with batch EM's tol: this estimator's tol is on the change between passes
            found = replace(self._settings(), tol=DEFAULTS["tol"])
            starts, _ = search.sample_starts(data, [found], [seed], client=self.client)
            fixed_init = functools.partial(search.start_of, starts[0], init_index=0)
        return stepwise.initial_state(data, settings, seed, fixed_init=fixed_init,
                                      client=self.client)

    # -- fitting ---------------------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None, *, callback=None, resume=None):
        """Estimate the parameters by stepwise EM.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array.
        y : None
            Ignored (scikit-learn's API).
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative row weights.
        callback : callable, optional
            Called with a ``dgmm.engine.minibatch.StepwiseInfo`` after initialisation,
            every chunk, every pass and every polish iteration.
        resume : dgmm.engine.minibatch.StepwiseState, optional
            A state from a callback, to continue an interrupted fit (same data, chunking
            and settings).

        Returns
        -------
        MiniBatchGaussianMixture
            self, fitted; the parameters' shapes per covariance type are those of
            :meth:`GaussianMixture.fit`.
        """
        X, sample_weight = self._check_all(X, sample_weight)
        data = engine.prepare(X, sample_weight)
        settings = self._stepwise_settings()
        callback = verbose_stepwise(self, callback)
        if resume is not None:
            state = resume
        elif self.warm_start and hasattr(self, "state_"):
            state = continuation(self.state_)
            settings = replace(settings, max_iter=state.n_passes + settings.max_iter)
        else:
            state = self._initial_state(data, settings, em.resolve_seed(self.random_state))
            if callback is not None:
                callback(stepwise.StepwiseInfo(state, "init", math.nan))
        state = stepwise.fit_stepwise(data, settings, state, callback=callback,
                                      client=self.client)
        self._set_state(state, X.shape[1])
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Mini-batch EM stopped at max_iter passes before the mean log-likelihood "
                "settled. Increase max_iter or tol, or add polish_iter.", ConvergenceWarning,
                stacklevel=2)
        return self

    def fit_predict(self, X, y=None, sample_weight=None, *, callback=None):
        """Fit by stepwise EM, then label the rows of X under the fitted parameters.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array.
        y : None
            Ignored (scikit-learn's API).
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative row weights.
        callback : callable, optional
            As in :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_samples,)
            The most probable component of each row (-1 for a non-finite row).
        """
        return self.fit(X, sample_weight=sample_weight, callback=callback).predict(X)

    def partial_fit(self, X, y=None, sample_weight=None, *, callback=None):
        """One pass of steps over the rows of X from the current model, its running
        statistics and step counter (the first call initialises from X). Convergence is
        not judged.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array.
            Same features as the rows seen before.
        y : None
            Ignored (scikit-learn's API).
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative row weights.
        callback : callable, optional
            Called with a ``dgmm.engine.minibatch.StepwiseInfo`` after every chunk.

        Returns
        -------
        MiniBatchGaussianMixture
            self, updated.
        """
        n_features = np.shape(X)[1] if len(np.shape(X)) == 2 else None
        if hasattr(self, "state_") and n_features != self.n_features_in_:
            raise ConfigError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input. partial_fit continues the same "
                "model: pass rows with the same features, or call fit to start over.")
        X, sample_weight = self._check_all(X, sample_weight)
        data = engine.prepare(X, sample_weight)
        settings = self._stepwise_settings()
        if hasattr(self, "state_"):
            state = continuation(self.state_)
        else:
            state = self._initial_state(data, settings, em.resolve_seed(self.random_state))
        state = stepwise.run_pass(data, state, settings, callback=callback,
                                  client=self.client, tol=None)
        self._set_state(state, X.shape[1])
        return self

    def _set_state(self, state: stepwise.StepwiseState, n_features: int):
        self.state_ = state
        self._set_result(state.params, n_features)
        self.n_steps_ = state.n_steps
        self.n_passes_ = state.n_passes
        self.n_iter_ = state.n_passes
        history = list(state.history)
        lower_bound = state.lower_bound
        converged = state.converged
        if state.polish is not None:
            history += list(state.polish.history)
            lower_bound = state.polish.lower_bound
            converged = state.polish.converged
        self.lower_bound_ = lower_bound
        self.lower_bounds_ = history
        self.converged_ = converged
        self.n_nonfinite_ = state.n_nonfinite


def continuation(state: stepwise.StepwiseState) -> stepwise.StepwiseState:
    """A fitted state ready for more passes: the pass accumulators reset, the polish (if
    any) left in the parameters it produced, and the convergence flag cleared."""
    return replace(state, position=0, pass_start=state.n_steps, pass_loglik=0.0,
                   pass_weight=0.0, pass_rows=0, pass_nonfinite=0, converged=False,
                   polish=None)


def verbose_stepwise(estimator, user_callback):
    """The stepwise callback of ``estimator``: a progress line every ``verbose_interval``
    passes when ``verbose``, then ``user_callback`` (None when neither is wanted)."""
    if not estimator.verbose and user_callback is None:
        return None

    def callback(info: stepwise.StepwiseInfo):
        st = info.state
        if (estimator.verbose and info.phase == "pass"
                and st.n_passes % estimator.verbose_interval == 0):
            print(f"  Pass {st.n_passes}\t steps {st.n_steps}\t "
                  f"mean log-likelihood {st.lower_bound:.5f}")
        if user_callback is not None:
            user_callback(info)

    return callback
