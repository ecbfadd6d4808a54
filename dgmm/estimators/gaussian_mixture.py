"""``GaussianMixture``: the scikit-learn compatible estimator over the EM engine.

Same constructor parameters, fitted attributes and methods as
``sklearn.mixture.GaussianMixture``, plus ``client`` (a ``distributed.Client``; default the
current client or Dask's threaded scheduler), ``split_every`` (reduction fan-in),
``nonfinite`` ('raise', 'drop' or 'marginalize' NaN entries) and ``fit(X,
sample_weight=..., callback=...)``. Parameters are declared in
``dgmm.core.model_parameters``. Predictions on a Dask array are lazy Dask arrays with its
row chunks; on a NumPy array, NumPy arrays. ``fit`` holds every BLAS pool at one thread
except around the callback. See docs/design.md, "The estimator", and docs/python.md.
"""
from __future__ import annotations

import functools
import math
import warnings

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ..core import criteria, kernels
from ..core.criteria import information_criteria
from ..core.families import family
from ..core.kernels import missing
from ..core.model_parameters import BY_NAME, ENGINE_SETTINGS
from ..core.nonfinite import RULES, nonfinite_rule, row_masks
from ..core.params import GMMParams
from ..engine import em, search
from ..engine import passes as engine
from ..errors import DataError
from . import validation
from .constraints import declared_parameters

__all__ = ["ConvergenceWarning", "GaussianMixture", "information_criteria"]


def _is_dask(X) -> bool:
    return isinstance(X, da.Array)


def _masked(row_fn, fill, gap_fn=None):
    """``row_fn`` on the finite rows of a block; rows with NaN or inf get ``fill``, except
    that with ``gap_fn`` the rows holding NaN (no inf, some entry observed) get ``gap_fn``,
    the marginal density over their observed features."""

    def apply(X: np.ndarray, params: GMMParams) -> np.ndarray:
        finite, gaps = row_masks(X)
        if finite.all():
            return row_fn(X, params)
        result = row_fn(X[finite], params)
        out = np.full((X.shape[0],) + result.shape[1:], fill, dtype=result.dtype)
        out[finite] = result
        if gap_fn is not None and gaps.any():
            out[gaps] = gap_fn(X[gaps], params)
        return out

    apply.__name__ = row_fn.__name__
    return apply


_predict_rows = _masked(kernels.predict, -1)
_predict_proba_rows = _masked(kernels.predict_proba, np.nan)
_score_samples_rows = _masked(kernels.score_samples, np.nan)


def _log_max_rows(X, params):
    return criteria.log_max_responsibility(X, params)


def _log_max_marginal_rows(X, params):
    return criteria.log_max_responsibility(X, params, marginalize=True)


#: the same with nonfinite='marginalize'
_MARGINAL_ROWS = {
    _log_max_rows: _log_max_marginal_rows,
    _predict_rows: _masked(kernels.predict, -1, missing.predict),
    _predict_proba_rows: _masked(kernels.predict_proba, np.nan, missing.predict_proba),
    _score_samples_rows: _masked(kernels.score_samples, np.nan, missing.score_samples),
}


@declared_parameters("GaussianMixture")
class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by out-of-core EM on a Dask cluster.

    Parameters are those of ``sklearn.mixture.GaussianMixture`` (see its documentation),
    with the same defaults and constraints, plus ``client``, ``split_every`` and
    ``nonfinite`` (see the module docstring and ``dgmm.core.model_parameters``).

    Restarts (``n_init``) run in lockstep, every pass serving all of them. Restart i starts
    from the seed ``numpy.random.SeedSequence([root, i])`` (``dgmm.engine.em.restart_seed``)
    where root is ``random_state`` when it is an int.

    Attributes (after ``fit``): ``weights_`` (K,), ``means_`` (K, d), ``covariances_``,
    ``precisions_``, ``precisions_cholesky_`` (shapes per covariance type, see
    ``dgmm.core.families``), ``converged_``, ``n_iter_``, ``lower_bound_``,
    ``lower_bounds_``, ``n_features_in_``, ``params_`` (a ``GMMParams``) and
    ``n_nonfinite_`` (rows skipped).
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
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.init_size = init_size
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.client = client
        self.split_every = split_every
        self.nonfinite = nonfinite

    # -- scikit-learn plumbing -------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        rule = RULES.get(self.nonfinite)  # not validated yet: an unknown name allows none
        tags.input_tags.allow_nan = rule is not None and rule.allows_nan
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "params_")

    def __sklearn_clone__(self):
        # a distributed.Client cannot be deep-copied: the clone shares this one
        client = self.client
        if client is None:
            return super().__sklearn_clone__()
        self.client = None
        try:
            clone = super().__sklearn_clone__()
        finally:
            self.client = client
        clone.client = client
        return clone

    # -- validation ------------------------------------------------------------------
    def _check_X(self, X, *, fitting: bool):
        return validation.check_X(self, X, fitting=fitting)

    def _check_initial_parameters(self, n_features: int) -> None:
        validation.check_initial_parameters(self, n_features)

    @staticmethod
    def _check_sample_weight(sample_weight, n_samples):
        return validation.check_sample_weight(sample_weight, n_samples)

    # -- fitting ---------------------------------------------------------------------
    def _fixed_init(self):
        if self.weights_init is None or self.means_init is None or self.precisions_init is None:
            return None
        prec_chol = family(self.covariance_type).precision_cholesky_from_precisions(
            self.precisions_init)
        params = GMMParams.from_precisions_cholesky(
            self.weights_init, self.means_init, prec_chol, self.covariance_type
        )
        return lambda data, init_index: params

    def _partial_init(self, init_params: GMMParams) -> GMMParams:
        """Override parts of an init by the user-given weights / means / precisions."""
        weights = init_params.weights if self.weights_init is None else self.weights_init
        means = init_params.means if self.means_init is None else self.means_init
        if self.precisions_init is None:
            return GMMParams(weights, means, init_params.covariances,
                             init_params.precisions_cholesky, self.covariance_type)
        prec_chol = family(self.covariance_type).precision_cholesky_from_precisions(
            self.precisions_init)
        return GMMParams.from_precisions_cholesky(weights, means, prec_chol, self.covariance_type)

    def _settings(self) -> em.EMSettings:
        """The engine's input: the declared engine settings, as plain Python values (an
        estimator without one of them, e.g. ``init_size``, gets its declared default)."""
        return em.EMSettings(**{
            name: BY_NAME[name].coerce(getattr(self, name, BY_NAME[name].default))
            for name in ENGINE_SETTINGS})

    def _verbose_callback(self, user_callback):
        if not self.verbose and user_callback is None:
            return None

        def callback(info: em.IterationInfo):
            st = info.state
            if self.verbose and info.phase == "init":
                print(f"Initialization {st.init_index}")
            elif self.verbose and st.iteration % self.verbose_interval == 0:
                if self.verbose >= 2:
                    print(f"  Iteration {st.iteration}\t time lapse {info.seconds:.5f}s\t "
                          f"ll change {info.change:.5f}")
                else:
                    print(f"  Iteration {st.iteration}")
            if user_callback is not None:
                user_callback(info)

        return callback

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None, *, callback=None, resume=None, sample=None,
            search_callback=None):
        """Estimate the parameters by EM.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array.
        y : None
            Ignored (scikit-learn's API).
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative row weights.
        callback : callable, optional
            Called with a ``dgmm.engine.em.IterationInfo`` after initialisation and after
            each iteration.
        resume : dgmm.engine.em.EMState, optional
            A state from a callback to continue from; the fit ends exactly where an
            uninterrupted one ends.
        sample : dgmm.engine.sample.RowSample, optional
            A sample drawn before (from a checkpoint), used instead of the sample pass.
        search_callback : callable, optional
            Called with a ``dgmm.engine.search.SearchEvent`` when the sample is drawn and
            when the search has found the starts.

        Returns
        -------
        GaussianMixture
            self, fitted: ``weights_`` (n_components,), ``means_`` (n_components,
            n_features), ``covariances_`` (full: (n_components, n_features, n_features),
            tied: (n_features, n_features), diag: (n_components, n_features), spherical:
            (n_components,)), ``precisions_`` and ``precisions_cholesky_`` shaped alike.

        Notes
        -----
        Unless ``init_size=0`` or the initial parameters are given, one pass draws a
        sample of rows, the restarts of ``init_params`` run on it in memory, and EM on
        all rows starts from the best of them (``dgmm.engine.search``).
        """
        self._fit(X, sample_weight, callback, resume, sample, search_callback)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_predict(self, X, y=None, sample_weight=None, *, callback=None):
        """Fit, then label the rows of X under the fitted parameters.

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
        self._fit(X, sample_weight, callback, None)
        return self.predict(X)

    def _fit(self, X, sample_weight, callback, resume, sample=None, search_callback=None):
        X = self._check_X(X, fitting=True)
        n_samples, n_features = X.shape
        if n_samples < self.n_components:
            raise DataError(
                f"Expected n_samples >= n_components, got n_components={self.n_components}, "
                f"n_samples={n_samples}. Use fewer components or more data."
            )
        self._check_initial_parameters(n_features)
        if sample_weight is not None:
            sample_weight = self._check_sample_weight(sample_weight, X.shape[0])
        data = engine.prepare(X, sample_weight)
        settings = self._settings()
        seed = resume.seed if resume is not None else em.resolve_seed(self.random_state)
        warm = None
        if self.warm_start and hasattr(self, "converged_"):
            warm = (self.params_, self.lower_bound_)
        fixed_init = self._fixed_init()
        partial = (fixed_init is None and any(
            v is not None for v in (self.weights_init, self.means_init, self.precisions_init)))
        # partial: initialise each restart by init_params, then override what the user gave
        if fixed_init is None and not partial and warm is None and search.needs_search(
                settings, resume):
            starts, sample = search.sample_starts(
                data, [settings], [seed], client=self.client, sample=sample,
                callback=search_callback)
            fixed_init = functools.partial(search.start_of, starts[0])
            self.n_sample_rows_ = sample.rows.shape[0]
        result = em.fit_em(
            data, settings, seed=seed, fixed_init=fixed_init, warm_start=warm,
            init_transform=self._partial_init if partial else None,
            callback=self._verbose_callback(callback), resume=resume, client=self.client,
        )
        self._set_result(result.params, n_features)
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

    def _set_result(self, params: GMMParams, n_features: int):
        self.params_ = params
        self.weights_ = np.array(params.weights)
        self.means_ = np.array(params.means)
        self.covariances_ = np.array(params.covariances)
        self.precisions_cholesky_ = np.array(params.precisions_cholesky)
        self.precisions_ = np.array(params.precisions)
        self.volumes_, self.shapes_, self.orientations_ = params.family.decomposition(
            params.covariances, params.n_components, params.n_features)
        self.n_features_in_ = n_features

    @classmethod
    def from_params(cls, params: GMMParams, **kwargs) -> GaussianMixture:
        """A fitted estimator holding ``params`` (e.g. loaded from a model file).

        Parameters
        ----------
        params : GMMParams
            The mixture's parameters.
        **kwargs
            Constructor parameters (``n_components`` and ``covariance_type`` default to
            those of ``params``).

        Returns
        -------
        GaussianMixture
            An estimator that predicts and scores with ``params``.
        """
        kwargs.setdefault("n_components", params.n_components)
        kwargs.setdefault("covariance_type", params.covariance_type)
        model = cls(**kwargs)
        model._set_result(params, params.n_features)
        model.converged_ = True
        model.n_iter_ = 0
        model.lower_bound_ = -math.inf
        model.lower_bounds_ = []
        model.n_nonfinite_ = 0
        return model

    # -- inference -------------------------------------------------------------------
    def _apply(self, X, row_fn, n_columns, dtype):
        """Rows with NaN or inf: a DataError for NumPy input when ``nonfinite='raise'``;
        otherwise (and always for lazy Dask input) label -1 and NaN values. With
        ``nonfinite='marginalize'`` rows holding NaN get the marginal density over their
        observed features (rows with every entry NaN: -1 and NaN), and +-inf in NumPy input
        is a DataError."""
        X = self._check_X(X, fitting=False)
        rule = nonfinite_rule(self.nonfinite)
        if rule.missing_values:
            row_fn = _MARGINAL_ROWS[row_fn]
        model = self.inference_params()
        if _is_dask(X):
            return engine.map_rows(X, row_fn, model, n_columns=n_columns, dtype=dtype)
        rule.check_predict_rows(X)
        return engine.map_rows_local(X, row_fn, model, n_columns=n_columns, dtype=dtype)

    def inference_params(self):
        """The parameters predict, predict_proba and score_samples evaluate (and written
        predictions).

        Returns
        -------
        GMMParams or VariationalParams
            ``params_``; a variational Bayesian mixture's posterior, whose E-step terms
            carry the expected log-weights and log-determinants.
        """
        return self.params_

    def predict(self, X):
        """The most probable component of each row.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array (a Dask array gives a lazy result).

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples,)
            Component labels in [0, n_components); -1 for a non-finite row.
        """
        return self._apply(X, _predict_rows, None, np.int64)

    def predict_proba(self, X):
        """The posterior probability of each component for each row (responsibilities).

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array (a Dask array gives a lazy result).

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples, n_components)
            Rows summing to 1; NaN for a non-finite row.
        """
        return self._apply(X, _predict_proba_rows, self.n_components, np.float64)

    def score_samples(self, X):
        """The log-density of the mixture at each row, log p(x_i).

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array (a Dask array gives a lazy result).

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples,)
            Log-likelihoods; NaN for a non-finite row.
        """
        return self._apply(X, _score_samples_rows, None, np.float64)

    def score_and_count(self, X) -> tuple[float, int]:
        """The mean log-likelihood per row and the rows it counts (one pass for Dask input).

        Rows with NaN or inf are left out when ``nonfinite='drop'`` and are an error
        otherwise.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array (a Dask array gives a lazy result).

        Returns
        -------
        mean_log_likelihood : float
            NaN when no row counts.
        n_rows : int
            The rows counted.
        """
        scores = self.score_samples(X)
        if _is_dask(scores):
            parts = (da.nansum(scores), da.isfinite(scores).sum())
            total, count = (da.compute(*parts) if self.client is None
                            else self.client.compute(list(parts), sync=True))
        else:
            total, count = np.nansum(scores), np.isfinite(scores).sum()
        count = int(count)
        nonfinite_rule(self.nonfinite).check_scored(scores.shape[0] - count)
        return (float(total) / count if count else float("nan")), count

    def score(self, X, y=None):
        """The mean log-likelihood per row of X (see :meth:`score_and_count`).

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array (a Dask array gives a lazy result).
        y : None
            Ignored (scikit-learn's API).

        Returns
        -------
        float
        """
        return self.score_and_count(X)[0]

    def bic(self, X):
        """The Bayesian information criterion on X (lower is better).

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array (a Dask array gives a lazy result).

        Returns
        -------
        float
            -2 log L + p log n, with p free parameters and n rows counted.
        """
        mean, n = self.score_and_count(X)
        return information_criteria(mean, n, self.params_.n_free_parameters())[0]

    def aic(self, X):
        """The Akaike information criterion on X (lower is better).

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array (a Dask array gives a lazy result).

        Returns
        -------
        float
            -2 log L + 2 p, with p free parameters.
        """
        mean, n = self.score_and_count(X)
        return information_criteria(mean, n, self.params_.n_free_parameters())[1]

    def icl(self, X):
        """The integrated complete-data likelihood criterion on X (lower is better):
        ``bic(X) - 2 sum_i log max_k r_ik`` (mclust's ICL with the opposite sign).

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array.

        Returns
        -------
        float
        """
        mean, n = self.score_and_count(X)
        log_max = self._apply(X, _log_max_rows, None, np.float64)
        term = da.nansum(log_max) if _is_dask(log_max) else np.nansum(log_max)
        if _is_dask(term):
            term = term.compute() if self.client is None else self.client.compute(
                term, sync=True)
        bic = information_criteria(mean, n, self.params_.n_free_parameters())[0]
        return bic - 2.0 * float(term)

    def sample(self, n_samples=1):
        """Draw rows from the fitted mixture, as scikit-learn does with ``random_state``.

        Parameters
        ----------
        n_samples : int, default=1
            Rows to draw.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            The rows, grouped by component.
        y : ndarray of shape (n_samples,)
            The component of each row.
        """
        check_is_fitted(self)
        if n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples}. It must be >= 1.")
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        X = self.params_.family.sample(rng, self.means_, self.covariances_, counts)
        y = np.concatenate([np.full(n, j, dtype=int) for j, n in enumerate(counts)])
        return X, y

