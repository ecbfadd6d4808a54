"""``GaussianMixtureSelection``: choose K and the covariance type by BIC, AIC or ICL,
fitting every candidate and restart in the same data passes."""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, replace
from numbers import Integral

import numpy as np
import pandas as pd
from dask.utils import format_bytes, parse_bytes
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted

from ..core.criteria import ClassificationSum, classification_chunk
from ..core.families import COVARIANCE_TYPES, MCLUST_MODELS, family
from ..engine import em, models, search
from ..engine import passes as engine
from ..engine.waves import candidate_bytes, waves
from ..errors import ConfigError, DataError
from . import seeding
from .constraints import declared_parameters
from .gaussian_mixture import ConvergenceWarning, GaussianMixture, information_criteria

log = logging.getLogger(__name__)

#: parameters of ``GaussianMixture`` that every candidate shares
_SHARED = ("tol", "reg_covar", "max_iter", "n_init", "init_params", "init_size",
           "weights_init", "means_init", "precisions_init", "random_state", "warm_start",
           "verbose", "verbose_interval", "client", "split_every", "nonfinite")

RESULT_COLUMNS = ["n_components", "covariance_type", "restart", "converged", "n_iter",
                  "lower_bound", "n_parameters", "bic", "aic", "icl"]


@dataclass(frozen=True)
class SelectionState:
    """Where a grid fit stands after a round of requests: what a callback receives and
    what ``fit(..., resume=state)`` continues from.

    seed: the root seed; candidates: (k, covariance type) of each fitted candidate;
    states: per candidate its latest ``em.EMState`` (None while none of its restarts
    is initialised); live: per candidate whether it still runs; passes: data passes
    made so far; events: the round's ((k, c), ``em.IterationInfo``) events.
    """

    seed: int
    candidates: tuple[tuple[int, str], ...]
    states: tuple
    live: tuple[bool, ...]
    passes: int
    events: tuple = ()

    @property
    def n_live(self) -> int:
        return sum(self.live)

    def to_record(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, JSON-able metadata) that ``from_record`` turns back into this state."""
        arrays, entries = {}, []
        for index, ((k, c), state, live) in enumerate(zip(self.candidates, self.states,
                                                          self.live, strict=True)):
            entry = {"n_components": k, "covariance_type": c, "live": live, "state": None}
            if state is not None:
                state_arrays, entry["state"] = state.to_record()
                arrays.update({f"candidate{index}.{name}": value
                               for name, value in state_arrays.items()})
            entries.append(entry)
        return arrays, {"kind": "selection", "seed": self.seed, "passes": self.passes,
                        "candidates": entries}

    @classmethod
    def from_record(cls, arrays: dict[str, np.ndarray], meta: dict) -> SelectionState:
        candidates, states, live = [], [], []
        for index, entry in enumerate(meta["candidates"]):
            candidates.append((int(entry["n_components"]), str(entry["covariance_type"])))
            live.append(bool(entry["live"]))
            state = None
            if entry["state"] is not None:
                prefix = f"candidate{index}."
                state = em.EMState.from_record(
                    {name[len(prefix):]: value for name, value in arrays.items()
                     if name.startswith(prefix)}, entry["state"])
            states.append(state)
        return cls(int(meta["seed"]), tuple(candidates), tuple(states), tuple(live),
                   int(meta["passes"]))


@declared_parameters("GaussianMixtureSelection")
class GaussianMixtureSelection(DensityMixin, BaseEstimator):
    """Gaussian mixtures for a grid of K and covariance types, the best by BIC, AIC or ICL.

    Every candidate (K, covariance type) and every restart runs in the same data passes:
    one read of each chunk per pass serves every live model, and a model that has
    converged leaves the set. The passes made are the most any candidate needs alone.

    The parameters (listed below, from ``dgmm.core.model_parameters``) are the grid
    (``n_components``, ``covariance_type``), ``criterion``, ``memory_budget`` and
    ``seed_from_other_types``; every other one is ``dgmm.GaussianMixture``'s and applies to
    every candidate.

    ``seed_from_other_types=n`` adds one round (one more set of passes) in which each
    candidate runs from the n best other types' solutions at its K, as R's mclust starts
    every model of a K from one partition; ``results_`` lists those runs too.

    Seeds: the root seed is ``random_state`` when it is an int (otherwise an int drawn
    from it, or from fresh entropy when None; kept as ``random_seed_``). Restart i of every
    candidate starts from ``numpy.random.SeedSequence([root, i])`` (``dgmm.engine.em.
    restart_seed``), exactly as ``GaussianMixture(random_state=root)`` does, so the
    candidate (k, c) equals ``GaussianMixture(n_components=k, covariance_type=c,
    random_state=random_seed_, ...)`` fitted alone.

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per candidate and restart: n_components, covariance_type, restart,
        converged, n_iter, lower_bound, n_parameters, bic, aic, icl (with
        ``criterion='icl'``, on the row of each candidate's best restart; NaN elsewhere).
    best_params_ : dict
        {'n_components': k, 'covariance_type': c} of the best candidate.
    best_estimator_ : dgmm.GaussianMixture
        The best candidate, fitted (its best restart).
    n_passes_ : int
        Data passes made (over all waves), the sample pass included.
    n_waves_ : int
        Waves of candidates the memory budget asked for.
    refused_ : dict
        Candidates not fitted, (k, c) -> why (K larger than the usable rows).
    random_seed_ : int
        The root seed.
    """

    def __init__(
        self,
        n_components=(1, 2, 3, 4, 5, 6, 7, 8),
        *,
        covariance_type="full",
        criterion="bic",
        memory_budget="1GiB",
        seed_from_other_types=0,
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
        self.criterion = criterion
        self.memory_budget = memory_budget
        self.seed_from_other_types = seed_from_other_types
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

    # -- the grid --------------------------------------------------------------------
    def _grid(self) -> list[tuple[int, str]]:
        """(k, covariance type) per candidate, K varying fastest within each type."""
        ks = self.n_components
        if isinstance(ks, (Integral, np.integer)):
            ks = [ks]
        ks = np.asarray(ks).ravel().tolist() if isinstance(ks, np.ndarray) else list(ks)
        if not ks:
            raise ConfigError(
                "GaussianMixtureSelection got an empty n_components grid. Give at least one "
                "number of components, e.g. n_components=range(1, 9)."
            )
        bad = [k for k in ks if not isinstance(k, (Integral, np.integer)) or
               isinstance(k, bool) or k < 1]
        if bad:
            raise ConfigError(
                f"GaussianMixtureSelection n_components holds {bad!r}: every K must be an "
                "integer >= 1. Remove those values from the grid."
            )
        types = ([self.covariance_type] if isinstance(self.covariance_type, str)
                 else list(self.covariance_type))
        types = [c for name in types for c in (MCLUST_MODELS if name == "all" else [name])]
        if not types:
            raise ConfigError(
                "GaussianMixtureSelection got an empty covariance_type list. Give at least "
                f"one of {', '.join(COVARIANCE_TYPES)}."
            )
        unknown = [c for c in types if c not in COVARIANCE_TYPES]
        if unknown:
            raise ConfigError(
                f"GaussianMixtureSelection covariance_type holds {unknown!r}. Allowed: "
                f"{', '.join(COVARIANCE_TYPES)}."
            )
        ks = list(dict.fromkeys(int(k) for k in ks))
        types = list(dict.fromkeys(types))
        return [(k, c) for c in types for k in ks]

    def _candidate(self, k: int, covariance_type: str) -> GaussianMixture:
        shared = {name: getattr(self, name) for name in _SHARED}
        return GaussianMixture(n_components=k, covariance_type=covariance_type, **shared)

    # -- fitting ---------------------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None, *, callback=None, resume=None, sample=None,
            search_callback=None):
        """Fit every candidate and keep the best by ``criterion``.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array.
        y : None
            Ignored (scikit-learn's API).
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative row weights.
        callback : callable, optional
            Called with a ``SelectionState`` after every round of requests (every pass,
            and the row fetches of initialisations).
        resume : SelectionState, optional
            A state from a callback to continue from (its seed is used; each candidate
            found in it continues from its state, and ends exactly where an
            uninterrupted fit ends).
        sample, search_callback : optional
            As ``GaussianMixture.fit``'s; one sample pass serves the whole grid.

        Returns
        -------
        GaussianMixtureSelection
            self, with ``results_``, ``best_params_`` and ``best_estimator_``.
        """
        self._validate_params()
        grid = self._grid()
        if self.warm_start:
            raise ConfigError("GaussianMixtureSelection does not warm-start: set "
                              "warm_start=False (each candidate starts from its own init).")
        X = GaussianMixture(n_components=1)._check_X(X, fitting=True)
        n_samples, n_features = X.shape
        self.refused_ = {}
        for k, c in grid:
            if k > n_samples:
                self.refused_[(k, c)] = (f"n_components={k} is larger than the {n_samples} "
                                         "rows of the data")
        if self.refused_:
            names = ", ".join(f"(n_components={k}, covariance_type={c!r})"
                              for k, c in self.refused_)
            if len(self.refused_) == len(grid):
                raise DataError(
                    f"Every candidate has more components than the {n_samples} rows of the "
                    f"data: {names}. Use smaller values of n_components or more data."
                )
            log.warning("candidates refused (more components than rows): %s", names)
        grid = [kc for kc in grid if kc not in self.refused_]
        estimators = [self._candidate(k, c) for k, c in grid]
        for estimator in estimators:
            estimator._check_initial_parameters(n_features)
        if sample_weight is not None:
            sample_weight = GaussianMixture._check_sample_weight(sample_weight, n_samples)
        data = engine.prepare(X, sample_weight)
        self.random_seed_ = (resume.seed if resume is not None
                             else em.resolve_seed(self.random_state))
        specs = [em.ModelSpec(est._settings(), self.random_seed_, *self._init_hooks(est))
                 for est in estimators]
        saved = {} if resume is None else {
            kc: state for kc, state in zip(resume.candidates, resume.states, strict=True)}
        specs, sample_passes, self.n_sample_rows_ = search.with_searched_starts(
            data, specs, [saved.get(kc) for kc in grid], seed=self.random_seed_,
            client=self.client, sample=sample, callback=search_callback)

        try:
            budget = parse_bytes(self.memory_budget) if isinstance(self.memory_budget, str) \
                else int(self.memory_budget)
        except ValueError:
            raise ConfigError(f"GaussianMixtureSelection memory_budget={self.memory_budget!r} "
                              "is not a size: give bytes or a string like '512MiB'.") from None
        chunk_rows = max(data.array.chunks[0])
        sizes = [candidate_bytes(k, c, n_features, chunk_rows, int(self.n_init))
                 for k, c in grid]
        groups = waves(sizes, budget)
        if len(groups) > 1:
            log.info("the grid of %d candidates needs %s per chunk, above the memory budget "
                     "of %s: it runs in %d waves of candidates", len(grid),
                     format_bytes(sum(sizes)), format_bytes(budget), len(groups))
        results = [None] * len(grid)
        states = [saved.get(kc) for kc in grid]
        live = [True] * len(grid)
        self.n_passes_ = (0 if resume is None else resume.passes) + sample_passes
        for number, group in enumerate(groups, 1):
            if len(groups) > 1:
                log.info("wave %d of %d: %s", number, len(groups),
                         ", ".join(f"K={grid[i][0]} {grid[i][1]}" for i in group))
            events = []

            def on_event(position, info, group=group, events=events):
                states[group[position]] = info.state
                events.append((grid[group[position]], info))

            def after_round(passes, group_live, group=group, events=events):
                for i, is_live in zip(group, group_live, strict=True):
                    live[i] = is_live
                if callback is not None:
                    callback(SelectionState(self.random_seed_, tuple(grid), tuple(states),
                                            tuple(live), self.n_passes_ + passes,
                                            tuple(events)))
                events.clear()

            found, passes = em.fit_models(
                data, [specs[i] for i in group], client=self.client,
                resume=[states[i] for i in group],
                callback=on_event if callback is not None else None,
                after_round=after_round)
            self.n_passes_ += passes
            for i, result in zip(group, found, strict=True):
                results[i] = result
        self.n_waves_ = len(groups)
        seeded = self._seed_from_other_types(data, grid, estimators, results, n_features)
        chosen = [None if outcome.refused is not None else
                  max([outcome.fit] + [run for _, run in runs], key=lambda r: r.lower_bound)
                  for outcome, runs in zip(results, seeded, strict=True)]
        classification = None
        if self.criterion == "icl":
            classification = self._classification_terms(data, chosen)
            self.n_passes_ += 1
        self._collect(grid, estimators, results, n_features, classification, seeded, chosen)
        return self

    def _seed_from_other_types(self, data, grid, estimators, results, n_features) -> list:
        """The round of ``seed_from_other_types`` (``dgmm.estimators.seeding``): per
        candidate, the (where its start came from, ``em.FitResult``) of its extra runs."""
        seeded = [[] for _ in grid]
        if not self.seed_from_other_types:
            return seeded
        fits = [outcome.fit if outcome.refused is None else None for outcome in results]
        starts = seeding.seeded_starts(grid, fits, n_features, self.seed_from_other_types)
        specs = [em.ModelSpec(replace(estimators[i]._settings(), n_init=1), self.random_seed_,
                              lambda data, index, start=start: start)
                 for i, _, start in starts]
        if not specs:
            return seeded
        found, passes = em.fit_models(data, specs, client=self.client)
        self.n_passes_ += passes
        for (i, source, _), outcome in zip(starts, found, strict=True):
            if outcome.refused is None:
                seeded[i].append((source, outcome.fit))
        return seeded

    def _classification_terms(self, data, chosen) -> list:
        """sum_i w_i log max_k r_ik of every fitted candidate's chosen ``em.FitResult``,
        in one pass (None for the refused ones)."""
        fitted = [i for i, fit in enumerate(chosen) if fit is not None]
        requests = [models.Pass(classification_chunk, (chosen[i].params, self.nonfinite))
                    for i in fitted]
        values = models.multi_pass(data, requests, client=self.client) if requests else []
        terms: list[ClassificationSum | None] = [None] * len(chosen)
        for i, value in zip(fitted, values, strict=True):
            terms[i] = value
        return terms

    def _init_hooks(self, estimator: GaussianMixture):
        """(fixed_init, init_transform) as ``GaussianMixture.fit`` uses them."""
        fixed = estimator._fixed_init()
        partial = fixed is None and any(
            v is not None for v in (self.weights_init, self.means_init, self.precisions_init))
        return fixed, (estimator._partial_init if partial else None)

    def _collect(self, grid, estimators, results, n_features, classification=None,
                 seeded=None, chosen=None):
        """The table, the scores and the best candidate. results: per candidate the grid's
        ``em.ModelOutcome``; seeded: its runs from other types' solutions; chosen: the
        better end of both (default: the grid's)."""
        rows, scores = [], []
        classification = classification or [None] * len(grid)
        seeded = seeded or [[] for _ in grid]
        chosen = chosen or [outcome.fit for outcome in results]
        for (k, c), outcome, term, extra, result in zip(
                grid, results, classification, seeded, chosen, strict=True):
            if outcome.refused is not None:
                self.refused_[(k, c)] = outcome.refused
                log.warning("candidate (n_components=%d, covariance_type=%r) refused: %s",
                            k, c, outcome.refused)
                scores.append(math.inf)
                continue
            grid_fit = outcome.fit
            n_parameters = family(c).n_parameters(k, n_features)
            bic, aic = information_criteria(result.lower_bound, result.n_rows, n_parameters)
            icl = math.nan if term is None else bic - 2.0 * term.total
            best_restart = next((r.index for r in grid_fit.final_state.restarts
                                 if result is grid_fit
                                 and r.lower_bound == result.lower_bound), None)
            for restart in grid_fit.final_state.restarts:
                r_bic, r_aic = information_criteria(restart.lower_bound, result.n_rows,
                                                    n_parameters)
                rows.append({"n_components": k, "covariance_type": c,
                             "restart": restart.index, "converged": restart.converged,
                             "n_iter": restart.iteration, "lower_bound": restart.lower_bound,
                             "n_parameters": n_parameters, "bic": r_bic, "aic": r_aic,
                             "icl": icl if restart.index == best_restart else math.nan})
            first = len(grid_fit.final_state.restarts)
            for number, (_, run) in enumerate(extra, start=first):
                r_bic, r_aic = information_criteria(run.lower_bound, run.n_rows,
                                                    n_parameters)
                rows.append({"n_components": k, "covariance_type": c, "restart": number,
                             "converged": run.converged, "n_iter": run.n_iter,
                             "lower_bound": run.lower_bound, "n_parameters": n_parameters,
                             "bic": r_bic, "aic": r_aic,
                             "icl": icl if run is result else math.nan})
            scores.append({"bic": bic, "aic": aic, "icl": icl}[self.criterion])
        if all(outcome.refused is not None for outcome in results):
            raise DataError(
                "Every candidate has more components than the usable rows: "
                + "; ".join(f"(n_components={k}, covariance_type={c!r}): {why}"
                            for (k, c), why in self.refused_.items())
            )
        self.results_ = pd.DataFrame(rows, columns=RESULT_COLUMNS)
        best = int(np.argmin(scores))
        k, c = grid[best]
        self.best_params_ = {"n_components": k, "covariance_type": c}
        self.best_estimator_ = _fitted(estimators[best], chosen[best], n_features)
        self.n_features_in_ = n_features
        if not self.best_estimator_.converged_ and self.max_iter > 0:
            warnings.warn(
                f"The best candidate (n_components={k}, covariance_type={c!r}) did not "
                "converge. Increase max_iter or tol.", ConvergenceWarning, stacklevel=2,
            )

    # -- the best model ----------------------------------------------------------------
    def _best(self) -> GaussianMixture:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_

    def predict(self, X):
        """Labels under the best model (``GaussianMixture.predict``).

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array.

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples,)
            Component labels; -1 for a non-finite row.
        """
        return self._best().predict(X)

    def predict_proba(self, X):
        """Responsibilities under the best model (``GaussianMixture.predict_proba``).

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array.

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples, n_components)
            n_components of the best model; NaN for a non-finite row.
        """
        return self._best().predict_proba(X)

    def score_samples(self, X):
        """log p(x_i) under the best model (``GaussianMixture.score_samples``).

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array.

        Returns
        -------
        ndarray or dask.array.Array of shape (n_samples,)
            Log-likelihoods; NaN for a non-finite row.
        """
        return self._best().score_samples(X)

    def score(self, X, y=None):
        """Mean log-likelihood per row under the best model.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array.
        y : None
            Ignored (scikit-learn's API).

        Returns
        -------
        float
        """
        return self._best().score(X)

    def bic(self, X):
        """BIC of the best model on X (lower is better).

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array.

        Returns
        -------
        float
        """
        return self._best().bic(X)

    def aic(self, X):
        """AIC of the best model on X (lower is better).

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array.

        Returns
        -------
        float
        """
        return self._best().aic(X)

    def icl(self, X):
        """ICL of the best model on X (lower is better; ``GaussianMixture.icl``).

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The rows, a NumPy or Dask array.

        Returns
        -------
        float
        """
        return self._best().icl(X)


def _fitted(estimator: GaussianMixture, result: em.FitResult, n_features: int):
    """``estimator`` holding ``result`` as ``GaussianMixture.fit`` would leave it."""
    estimator._set_result(result.params, n_features)
    estimator.converged_ = result.converged
    estimator.n_iter_ = result.n_iter
    estimator.lower_bound_ = result.lower_bound
    estimator.lower_bounds_ = list(result.history)
    estimator.n_nonfinite_ = result.n_nonfinite
    estimator.fit_state_ = result.final_state
    return estimator
