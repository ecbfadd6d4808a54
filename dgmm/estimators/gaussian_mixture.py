"""``GaussianMixture``: the scikit-learn compatible estimator over the EM engine.

Same constructor parameters, fitted attributes and methods as
``sklearn.mixture.GaussianMixture``, plus:

- ``client``: a ``distributed.Client`` to run on (default: the current default client,
  or Dask's local threaded scheduler when there is none);
- ``split_every``: fan-in of the reduction tree;
- ``nonfinite``: 'raise' (default) or 'drop' rows holding NaN or inf;
- ``fit(X, sample_weight=..., callback=...)``: per-row weights and a per-iteration hook.

``X`` may be a NumPy array or a Dask array. For a Dask array, ``predict``,
``predict_proba`` and ``score_samples`` return lazy Dask arrays with the input's row
chunks, so predictions on larger-than-memory data stream. For a NumPy array they return
NumPy arrays, computed in blocks on every core of this process.

Threads: the kernels run on one BLAS thread each, and while ``fit`` runs every BLAS pool
of the process is held at one thread (``dgmm.threads``), apart from the callback, which
runs with the caller's setting (unless dgmm kernels still run in other threads of the
process); the setting is restored when ``fit`` returns.
"""
from __future__ import annotations

import inspect
import math
import warnings

import dask.array as da
import numpy as np

from ..engine import em
from ..engine import passes as engine
from ..core import kernels
from ..core.types import COVARIANCE_TYPES, INIT_PARAMS
from ..errors import ConfigError, DataError
from ..core.families import family
from ..core.params import GMMParams
from ..data import model_io


def information_criteria(mean_log_likelihood: float, n_rows: int, n_parameters: int):
    """(BIC, AIC) of a model with ``n_parameters`` free parameters on ``n_rows`` rows."""
    total = -2.0 * mean_log_likelihood * n_rows
    return total + n_parameters * math.log(n_rows), total + 2.0 * n_parameters


class ConvergenceWarning(UserWarning):
    """EM stopped at max_iter before the lower bound settled."""


def _is_dask(X) -> bool:
    return isinstance(X, da.Array)


def _masked(row_fn, fill):
    """``row_fn`` on the finite rows of a block; rows with NaN or inf get ``fill``."""

    def apply(X: np.ndarray, params: GMMParams) -> np.ndarray:
        finite = np.isfinite(X).all(axis=1)
        if finite.all():
            return row_fn(X, params)
        result = row_fn(X[finite], params)
        out = np.full((X.shape[0],) + result.shape[1:], fill, dtype=result.dtype)
        out[finite] = result
        return out

    apply.__name__ = row_fn.__name__
    return apply


_predict_rows = _masked(kernels.predict, -1)
_predict_proba_rows = _masked(kernels.predict_proba, np.nan)
_score_samples_rows = _masked(kernels.score_samples, np.nan)


class GaussianMixture:
    """Gaussian mixture fitted by out-of-core EM on a Dask cluster.

    Parameters are those of ``sklearn.mixture.GaussianMixture`` (see its documentation),
    with the same defaults, plus ``client``, ``split_every`` and ``nonfinite`` (see the
    module docstring).

    Restarts (``n_init``) run in lockstep, every pass serving all of them. Restart i starts
    from the seed ``numpy.random.SeedSequence([root, i])`` (``dgmm.engine.em.restart_seed``)
    where root is ``random_state`` when it is an int.

    Attributes (after ``fit``): ``weights_`` (K,), ``means_`` (K, d), ``covariances_``,
    ``precisions_``, ``precisions_cholesky_`` (shapes per covariance type, see
    ``dgmm.params``), ``converged_``, ``n_iter_``, ``lower_bound_``, ``lower_bounds_``,
    ``n_features_in_``, and ``params_`` (a ``GMMParams``), ``n_nonfinite_`` (rows skipped).
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
    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.name != "self")

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(
                    f"Invalid parameter {key!r} for estimator {type(self).__name__}. "
                    f"Valid parameters are: {valid}."
                )
            setattr(self, key, value)
        return self

    def __repr__(self):
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
        }
        changed = []
        for name, value in self.get_params().items():
            default = defaults[name]
            if value is default or (isinstance(value, (int, float, str)) and value == default):
                continue
            changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    # -- validation ------------------------------------------------------------------
    def _check_parameters(self, n_features: int) -> None:
        def bad(name, allowed):
            raise ConfigError(
                f"Invalid value for GaussianMixture parameter {name}: "
                f"{getattr(self, name)!r}. {allowed}"
            )

        if not isinstance(self.n_components, (int, np.integer)) or self.n_components < 1:
            bad("n_components", "It must be an integer >= 1.")
        if self.covariance_type not in COVARIANCE_TYPES:
            bad("covariance_type", f"Allowed: {', '.join(COVARIANCE_TYPES)}.")
        if self.init_params not in INIT_PARAMS:
            bad("init_params", f"Allowed: {', '.join(INIT_PARAMS)}.")
        if not (isinstance(self.tol, (int, float)) and self.tol >= 0):
            bad("tol", "It must be a number >= 0.")
        if not (isinstance(self.reg_covar, (int, float)) and self.reg_covar >= 0):
            bad("reg_covar", "It must be a number >= 0.")
        if not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 0:
            bad("max_iter", "It must be an integer >= 0.")
        if not isinstance(self.n_init, (int, np.integer)) or self.n_init < 1:
            bad("n_init", "It must be an integer >= 1.")
        if not isinstance(self.split_every, (int, np.integer)) or self.split_every < 2:
            bad("split_every", "It must be an integer >= 2.")
        if self.nonfinite not in ("raise", "drop"):
            bad("nonfinite", "Allowed: raise, drop.")
        k, d = self.n_components, n_features
        if self.weights_init is not None:
            w = np.asarray(self.weights_init, dtype=np.float64)
            if w.shape != (k,):
                bad("weights_init", f"It must have shape ({k},), got {w.shape}.")
            if np.any(w < 0) or np.any(w > 1) or not np.isclose(w.sum(), 1.0, rtol=0, atol=1e-6):
                bad("weights_init", "Weights must lie in [0, 1] and sum to 1.")
        if self.means_init is not None:
            m = np.asarray(self.means_init, dtype=np.float64)
            if m.shape != (k, d):
                bad("means_init", f"It must have shape ({k}, {d}), got {m.shape}.")
        if self.precisions_init is not None:
            p = np.asarray(self.precisions_init, dtype=np.float64)
            shape = family(self.covariance_type).covariance_shape(k, d)
            if p.shape != shape:
                bad("precisions_init", f"For covariance_type={self.covariance_type!r} it "
                    f"must have shape {shape}, got {p.shape}.")
            problem = family(self.covariance_type).precisions_problem(p)
            if problem:
                bad("precisions_init", problem)

    def _check_X(self, X, *, fitting: bool):
        if not _is_dask(X):
            X = np.asarray(X)
        if X.ndim != 2:
            raise DataError(
                f"Expected a 2-D array of shape (n_samples, n_features), got {X.ndim}-D "
                f"shape {X.shape}. Reshape it, e.g. X.reshape(-1, 1) for a single feature."
            )
        if X.dtype.kind not in "fiub":
            raise DataError(f"Expected numeric data, got dtype {X.dtype}.")
        if X.dtype.kind != "f":
            X = X.astype(np.float64)
        n_samples, n_features = X.shape
        if fitting:
            if n_samples < max(2, self.n_components):
                raise DataError(
                    f"Expected n_samples >= n_components (and at least 2), got "
                    f"n_components={self.n_components}, n_samples={n_samples}. Use fewer "
                    "components or more data."
                )
        else:
            self._check_fitted()
            if n_features != self.n_features_in_:
                raise DataError(
                    f"X has {n_features} features, but this model was fitted with "
                    f"{self.n_features_in_}."
                )
        return X

    def _check_fitted(self):
        if not hasattr(self, "params_"):
            raise AttributeError(
                "This GaussianMixture instance is not fitted yet. Call 'fit' first."
            )

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
        return em.EMSettings(
            n_components=int(self.n_components),
            covariance_type=self.covariance_type,
            tol=float(self.tol),
            reg_covar=float(self.reg_covar),
            max_iter=int(self.max_iter),
            n_init=int(self.n_init),
            init_params=self.init_params,
            nonfinite=self.nonfinite,
            split_every=int(self.split_every),
        )

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

    def fit(self, X, y=None, sample_weight=None, *, callback=None, resume=None):
        """Estimate the parameters by EM; returns self.

        X: (n_samples, n_features) NumPy or Dask array; sample_weight: (n_samples,)
        non-negative row weights or None; callback: called with an ``em.IterationInfo``
        after initialisation and each iteration; resume: an ``em.EMState`` to continue.
        """
        self._fit(X, sample_weight, callback, resume)
        return self

    def fit_predict(self, X, y=None, sample_weight=None, *, callback=None):
        """Fit, then return the labels of X under the fitted parameters."""
        self._fit(X, sample_weight, callback, None)
        return self.predict(X)

    def _fit(self, X, sample_weight, callback, resume):
        X = self._check_X(X, fitting=True)
        n_features = X.shape[1]
        self._check_parameters(n_features)
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
            )

    @staticmethod
    def _check_sample_weight(sample_weight, n_samples):
        if _is_dask(sample_weight):
            if sample_weight.shape != (n_samples,):
                raise DataError(f"sample_weight must have shape ({n_samples},), got "
                                f"{sample_weight.shape}.")
            return sample_weight
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.shape != (n_samples,):
            raise DataError(f"sample_weight must have shape ({n_samples},), got {w.shape}.")
        if np.any(w < 0) or not np.isfinite(w).all():
            raise DataError("sample_weight must be finite and non-negative.")
        if w.sum() <= 0:
            raise DataError("sample_weight sums to 0: at least one row needs a positive weight.")
        return w

    def _set_result(self, params: GMMParams, n_features: int):
        self.params_ = params
        self.weights_ = np.array(params.weights)
        self.means_ = np.array(params.means)
        self.covariances_ = np.array(params.covariances)
        self.precisions_cholesky_ = np.array(params.precisions_cholesky)
        self.precisions_ = np.array(params.precisions)
        self.n_features_in_ = n_features

    @classmethod
    def from_params(cls, params: GMMParams, **kwargs) -> "GaussianMixture":
        """A fitted estimator holding ``params`` (e.g. loaded from a model file)."""
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
        otherwise (and always for lazy Dask input) label -1 and NaN values."""
        X = self._check_X(X, fitting=False)
        if _is_dask(X):
            return engine.map_rows(X, row_fn, self.params_, n_columns=n_columns, dtype=dtype)
        if self.nonfinite == "raise" and not np.isfinite(X).all():
            bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
            raise DataError(
                f"X holds {bad.size} row(s) with NaN or inf values (the first at row "
                f"{bad[0]}). Clean them, or set nonfinite='drop' to get label -1 and NaN "
                "for those rows."
            )
        return engine.map_rows_local(X, row_fn, self.params_, n_columns=n_columns, dtype=dtype)

    def predict(self, X):
        """Most probable component per row, shape (n_samples,); -1 for non-finite rows."""
        return self._apply(X, _predict_rows, None, np.int64)

    def predict_proba(self, X):
        """Responsibilities, shape (n_samples, n_components); NaN for non-finite rows."""
        return self._apply(X, _predict_proba_rows, self.n_components, np.float64)

    def score_samples(self, X):
        """Log-likelihood log p(x_i) per row, shape (n_samples,); NaN for non-finite rows."""
        return self._apply(X, _score_samples_rows, None, np.float64)

    def score_and_count(self, X) -> tuple[float, int]:
        """(mean log-likelihood per row, rows counted): rows with NaN or inf are left out
        when ``nonfinite='drop'`` and are an error otherwise (one pass for Dask input)."""
        scores = self.score_samples(X)
        if _is_dask(scores):
            parts = (da.nansum(scores), da.isfinite(scores).sum())
            total, count = (da.compute(*parts) if self.client is None
                            else self.client.compute(list(parts), sync=True))
        else:
            total, count = np.nansum(scores), np.isfinite(scores).sum()
        count = int(count)
        if count < scores.shape[0] and self.nonfinite == "raise":
            raise DataError(
                f"X holds {scores.shape[0] - count} row(s) with NaN or inf values. Clean "
                "them, or set nonfinite='drop' to leave them out of the score."
            )
        return (float(total) / count if count else float("nan")), count

    def score(self, X, y=None):
        """Mean log-likelihood per row (a float)."""
        return self.score_and_count(X)[0]

    def bic(self, X):
        """Bayesian information criterion on X (lower is better)."""
        mean, n = self.score_and_count(X)
        return information_criteria(mean, n, self.params_.n_free_parameters())[0]

    def aic(self, X):
        """Akaike information criterion on X (lower is better)."""
        mean, n = self.score_and_count(X)
        return information_criteria(mean, n, self.params_.n_free_parameters())[1]

    def sample(self, n_samples=1):
        """Draw (X, y) from the fitted mixture, as scikit-learn does with ``random_state``."""
        self._check_fitted()
        if n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples}. It must be >= 1.")
        rng = self.random_state
        if rng is None or isinstance(rng, (int, np.integer)):
            rng = np.random.mtrand._rand if rng is None else np.random.RandomState(rng)
        counts = rng.multinomial(n_samples, self.weights_)
        X = self.params_.family.sample(rng, self.means_, self.covariances_, counts)
        y = np.concatenate([np.full(n, j, dtype=int) for j, n in enumerate(counts)])
        return X, y


def load_model(path, **kwargs):
    """A fitted ``dgmm.GaussianMixture`` from a model directory.

    ``kwargs`` override constructor parameters (e.g. ``client=``).
    """
    params, meta = model_io.load_params(path)
    settings = {k: v for k, v in meta.get("settings", {}).items()
                if k in model_io.SETTINGS and not (isinstance(v, str) and k == "random_state")}
    model = GaussianMixture.from_params(params, **{**settings, **kwargs})
    model.n_iter_ = meta["n_iter"]
    model.converged_ = meta["converged"]
    lower_bound = meta["lower_bound"]
    model.lower_bound_ = -float("inf") if lower_bound is None else float(lower_bound)
    model.lower_bounds_ = list(meta["lower_bounds"])
    model.n_nonfinite_ = meta.get("n_nonfinite", 0)
    model.data_fingerprint_ = meta.get("data_fingerprint")
    return model
