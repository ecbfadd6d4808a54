"""Initial parameters from one read of the data: the sample pass, then the in-memory search.

``sample_starts`` draws one sample for every model of a fit (the largest any of them
needs; each model uses a prefix of it), checks the rows counted on the way, and runs
``dgmm.core.search.search`` per model: restart i of a model starts from the i-th best
parameter set found. ``uses_sample`` says when a fit starts this way. See docs/design.md,
"A few reads per good model".
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ..core import search as core_search
from ..core.families import family
from ..core.model_parameters import DEFAULTS
from ..core.params import GMMParams
from ..core.threads import caller_blas_threads, single_blas_thread
from ..errors import DataError
from . import passes as engine
from .sample import RowSample, sample_pass

log = logging.getLogger(__name__)

#: EM iterations a restart of the search may run (scikit-learn's max_iter)
SEARCH_MAX_ITER = 100


def uses_sample(settings) -> bool:
    """True when a fit with these ``EMSettings`` starts from the sample search (the
    default), False when ``init_size=0`` asks for the initialisation on all rows."""
    return settings.init_size != 0


def model_sample_rows(settings, n_features: int) -> int:
    """Rows of the sample one model asks for: ``init_size``, else the rule of
    ``dgmm.core.search.sample_rows``."""
    if settings.init_size:
        return int(settings.init_size)
    return core_search.sample_rows(settings.n_components, n_features,
                                   settings.covariance_type, search_tol(settings))


def search_tol(settings) -> float:
    """The tolerance the search works to: the fit's ``tol``, or scikit-learn's default
    when it is 0 (a fit asked to run all its iterations still wants a start in finite
    time, and a sample no larger than the rule's for that tolerance)."""
    return float(settings.tol) if settings.tol > 0 else float(DEFAULTS["tol"])


def search_settings(settings) -> core_search.SearchSettings:
    """What the search takes of a model's settings; its EM runs up to
    ``SEARCH_MAX_ITER`` iterations to ``search_tol``, whatever ``max_iter`` and ``tol``
    say of the fit on all rows (the passes of mini-batch EM, or a fit's budget of
    iterations, which continues from the start)."""
    return core_search.SearchSettings(
        settings.n_components, settings.covariance_type, settings.init_params,
        settings.reg_covar, search_tol(settings), SEARCH_MAX_ITER, settings.nonfinite)


@dataclass(frozen=True)
class SearchEvent:
    """What a callback hears of the sample pass and the search.

    phase: 'sample' (the sample is drawn: ``sample`` is set) or 'search' (one model's
    starts are found: ``model`` its index, ``starts`` its parameter sets, best first);
    seconds: wall time of that phase."""

    phase: str
    seconds: float
    sample: RowSample | None = None
    model: int = -1
    starts: tuple[GMMParams, ...] = ()
    logliks: tuple[float, ...] = ()


def check_sample(sample: RowSample, settings, weighted: bool, refuse: bool = False) -> None:
    """The checks the first pass of a fit makes: non-finite rows under
    ``nonfinite='raise'``, enough rows (``refuse``: too few raise ``TooFewRows``), a
    positive total weight."""
    from .iteration import check_rows

    check_rows(sample.n_rows, sample.n_nonfinite, sample.first_nonfinite, settings,
                weighted, refuse=refuse)
    if weighted and not sample.total_weight > 0:
        raise DataError("sample_weight sums to 0 over the usable rows: at least one row "
                        "needs a positive weight.")


@single_blas_thread()
def sample_starts(
    data: engine.ChunkedData,
    settings_list: list,
    seeds: list[int],
    *,
    client=None,
    sample: RowSample | None = None,
    callback: Callable[[SearchEvent], None] | None = None,
    refuse_small: bool = False,
) -> tuple[list, RowSample]:
    """Per model, its restarts' initial parameters (a list of ``n_init`` ``GMMParams``),
    or for a model refused for having more components than usable rows, the reason (a
    str, only with ``refuse_small``); and the sample.

    settings_list: ``EMSettings`` per model (they share ``nonfinite`` and
    ``split_every``); seeds: per model its root seed (the sample is drawn with the
    first); sample: a sample drawn before (from a checkpoint) instead of a new pass.
    """
    from .iteration import TooFewRows

    first = settings_list[0]
    weighted = data.weights is not None
    if sample is None:
        size = max(model_sample_rows(s, data.n_features) for s in settings_list)
        t0 = time.perf_counter()
        sample = sample_pass(data, size, seeds[0], nonfinite=first.nonfinite,
                             split_every=first.split_every, client=client)
        seconds = time.perf_counter() - t0
        log.info("sample pass: %d of %d usable rows drawn in %.2f s", sample.rows.shape[0],
                 sample.n_rows, seconds)
        if callback is not None:
            with caller_blas_threads():
                callback(SearchEvent("sample", seconds, sample=sample))
    results = []
    for index, (settings, seed) in enumerate(zip(settings_list, seeds, strict=True)):
        try:
            check_sample(sample, settings, weighted, refuse=refuse_small)
        except TooFewRows as exc:
            results.append(str(exc))
            continue
        rows = sample.rows[: model_sample_rows(settings, data.n_features)]
        t0 = time.perf_counter()
        starts = core_search.search(rows, search_settings(settings), seed, settings.n_init)
        seconds = time.perf_counter() - t0
        results.append([s.params for s in starts])
        if callback is not None:
            with caller_blas_threads():
                callback(SearchEvent("search", seconds, model=index,
                                     starts=tuple(s.params for s in starts),
                                     logliks=tuple(s.loglik for s in starts)))
    return results, sample


def sample_from_record(arrays: dict[str, np.ndarray], meta: dict) -> RowSample:
    """A ``RowSample`` saved by ``sample_record``."""
    return RowSample(int(meta["size"]), arrays["sample.rows"], arrays["sample.keys"],
                     int(meta["n_rows"]), int(meta["n_nonfinite"]),
                     int(meta["first_nonfinite"]), float(meta["total_weight"]))


def sample_record(sample: RowSample) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, JSON-able metadata) of a sample, for a checkpoint."""
    return ({"sample.rows": sample.rows, "sample.keys": sample.keys},
            {"size": sample.size, "n_rows": sample.n_rows, "n_nonfinite": sample.n_nonfinite,
             "first_nonfinite": sample.first_nonfinite, "total_weight": sample.total_weight})


def needs_search(settings, resume) -> bool:
    """True when a fit's restarts start from the sample search: ``init_size`` is not 0
    and some restart is not initialised yet (a resumed fit whose restarts all are
    continues without it)."""
    if not uses_sample(settings):
        return False
    return resume is None or len(resume.restarts) < settings.n_init or any(
        r.params is None for r in resume.restarts)


def start_of(starts, data, init_index):
    """theta_0 of restart ``init_index``: the search's ``init_index``-th best."""
    return starts[init_index % len(starts)]


def with_searched_starts(data: engine.ChunkedData, specs: list, resumed: list, *, seed: int,
                         client=None, sample: RowSample | None = None,
                         callback=None) -> tuple[list, int, int]:
    """``specs`` (``em.ModelSpec`` of a grid) with the models that start from the sample
    search given their starts as ``fixed_init``: one sample pass for all of them (each
    model uses the prefix it needs), then each model's search in memory.

    resumed: per model its ``EMState`` to resume from, or None; a model whose restarts
    are all initialised needs no search, and one refused for too many components gets
    placeholder parameters (its first pass refuses it). Returns (specs, data passes made:
    1 or 0, rows of the sample or 0).
    """
    wanted = [i for i, spec in enumerate(specs)
              if spec.fixed_init is None and spec.init_transform is None
              and needs_search(spec.settings, resumed[i])]
    if not wanted:
        return specs, 0, 0
    passes = int(sample is None)
    found, sample = sample_starts(data, [specs[i].settings for i in wanted],
                                  [seed] * len(wanted), client=client, sample=sample,
                                  callback=callback, refuse_small=True)
    specs = list(specs)
    for i, starts in zip(wanted, found, strict=True):
        if isinstance(starts, str):
            k, c = specs[i].settings.n_components, specs[i].settings.covariance_type
            kind = family(c)
            starts = [GMMParams.from_covariances(
                np.full(k, 1.0 / k), np.zeros((k, data.n_features)),
                kind.point_covariances(k, data.n_features, 1.0), c)]
        specs[i] = replace(specs[i], fixed_init=functools.partial(start_of, starts))
    return specs, passes, int(sample.rows.shape[0])
