"""Model monitoring: what a model's scores look like on a data set, and drift against the
training data.

``summarize`` makes one pass over the data and returns a ``ScoreSummary``: rows, missing
entries, the mean log-likelihood, each component's share (the mean responsibility) and
hard-label count, the histogram of the uncertainty ``1 - max_k p(k | x)`` and quantiles
of the per-row log-density ``log p(x)``. The fit step keeps the training data's summary in
the saved model (``model.json`` under ``training``); scoring new data against a saved
model compares the two (``compare``): the mean log-likelihood now and at training, each
component's share now and at training, and the share of rows below the training data's 1%
log-density quantile (about 1% when nothing changed: a count of likely anomalies).
``DriftThresholds`` (the workflow's ``monitor`` section) turns drift past a threshold into
``DriftError``, the run's own exit code.

The quantiles come from a mergeable sketch: every chunk keeps ``SKETCH_POINTS`` order
statistics spaced densely in both tails (arcsine spacing), merged pairwise in a fixed
tree, so the 1% quantile is the quantile of a rank within about 2% of 1% of the rows,
whatever the number of rows; the counts and the mean are exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..core.params import GMMParams
from ..data.outputs import predict_block
from ..engine import passes as engine
from ..errors import DriftError

#: order statistics kept per sketch
SKETCH_POINTS = 2048
#: uncertainty histogram: equal bins over [0, 1]
UNCERTAINTY_BINS = 20
#: the probabilities of the log-density quantiles reported
QUANTILES = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
#: the training quantile below which a row counts as a likely anomaly
ANOMALY_QUANTILE = 0.01


def _compress(values: np.ndarray, weights: np.ndarray, size: int = SKETCH_POINTS):
    """At most ``size`` (value, weight) pairs standing for the weighted ``values``: the
    value at the middle of each of ``size`` rank intervals, the intervals narrow in the
    tails (``(1 - cos(pi u)) / 2`` for u evenly spaced)."""
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    if len(values) <= size:
        return values, weights
    cumulative = np.cumsum(weights)
    edges = cumulative[-1] * (1 - np.cos(np.pi * np.linspace(0.0, 1.0, size + 1))) / 2
    middles = (edges[:-1] + edges[1:]) / 2
    picks = np.minimum(np.searchsorted(cumulative, middles), len(values) - 1)
    unique, first = np.unique(picks, return_index=True)
    spans = np.add.reduceat(np.diff(edges), first)
    return values[unique], spans


@dataclass(frozen=True)
class ScoreSummary:
    """Mergeable scores of a data set under a model (one per chunk, merged in a tree).

    n_rows: rows read; n_scored: rows with a log-density (the others are all non-finite,
    or non-finite where the model drops them); n_missing_entries: non-finite entries;
    sum_log_density: the sum of log p(x) over scored rows; responsibility_sums: (K,);
    label_counts: (K,) rows per most probable component; uncertainty_counts:
    (UNCERTAINTY_BINS,); sketch_values, sketch_weights: the log-density sketch;
    n_below: scored rows below ``below`` (the threshold the pass was given, or 0).
    """

    n_rows: int
    n_scored: int
    n_missing_entries: int
    sum_log_density: float
    responsibility_sums: np.ndarray
    label_counts: np.ndarray
    uncertainty_counts: np.ndarray
    sketch_values: np.ndarray
    sketch_weights: np.ndarray
    n_below: int

    def merge(self, other: ScoreSummary) -> ScoreSummary:
        values, weights = _compress(np.concatenate([self.sketch_values, other.sketch_values]),
                                    np.concatenate([self.sketch_weights, other.sketch_weights]))
        return ScoreSummary(
            self.n_rows + other.n_rows, self.n_scored + other.n_scored,
            self.n_missing_entries + other.n_missing_entries,
            self.sum_log_density + other.sum_log_density,
            self.responsibility_sums + other.responsibility_sums,
            self.label_counts + other.label_counts,
            self.uncertainty_counts + other.uncertainty_counts,
            values, weights, self.n_below + other.n_below)

    def quantile(self, q):
        """The log-density quantile(s) at probability ``q`` (NaN with no scored row)."""
        if not len(self.sketch_values):
            return np.full(np.shape(q), np.nan)
        positions = np.cumsum(self.sketch_weights) - self.sketch_weights / 2
        return np.interp(np.asarray(q) * self.sketch_weights.sum(), positions,
                         self.sketch_values)

    def to_json(self) -> dict:
        """The figures the report and the drift section use, JSON-ready."""
        n = max(self.n_scored, 1)
        quantiles = self.quantile(QUANTILES)
        return {
            "n_rows": int(self.n_rows),
            "n_scored": int(self.n_scored),
            "n_missing_entries": int(self.n_missing_entries),
            "mean_log_likelihood": (float(self.sum_log_density / self.n_scored)
                                    if self.n_scored else None),
            "shares": (self.responsibility_sums / n).tolist(),
            "label_counts": self.label_counts.astype(int).tolist(),
            "uncertainty_edges": np.linspace(0, 1, UNCERTAINTY_BINS + 1).tolist(),
            "uncertainty_counts": self.uncertainty_counts.astype(int).tolist(),
            "log_density_quantiles": {f"{q:g}": (float(v) if np.isfinite(v) else None)
                                      for q, v in zip(QUANTILES, quantiles, strict=True)},
            "n_below": int(self.n_below),
        }


def _chunk_summary(block, weights, row_offset, params: GMMParams, marginalize: bool,
                   below: float | None) -> ScoreSummary:
    block = np.asarray(block)
    out = predict_block(block, params, marginalize=marginalize)
    scored = out[:, 0] >= 0
    log_density = out[scored, 1]
    resp = out[scored, 2:]
    k = params.n_components
    uncertainty = 1.0 - resp.max(axis=1) if len(resp) else np.zeros(0)
    bins = np.minimum((uncertainty * UNCERTAINTY_BINS).astype(np.int64), UNCERTAINTY_BINS - 1)
    values, sketch_weights = _compress(log_density, np.ones(len(log_density)))
    return ScoreSummary(
        n_rows=int(block.shape[0]), n_scored=int(scored.sum()),
        n_missing_entries=int((~np.isfinite(block)).sum()),
        sum_log_density=float(log_density.sum()),
        responsibility_sums=resp.sum(axis=0) if len(resp) else np.zeros(k),
        label_counts=np.bincount(out[scored, 0].astype(np.int64), minlength=k),
        uncertainty_counts=np.bincount(bins, minlength=UNCERTAINTY_BINS),
        sketch_values=values, sketch_weights=sketch_weights,
        n_below=int((log_density < below).sum()) if below is not None else 0,
    )


def summarize(X, params: GMMParams, *, client=None, marginalize: bool = False,
              below: float | None = None) -> ScoreSummary:
    """One pass over ``X`` (n_samples, n_features; a Dask or NumPy array): the scores of
    every row under ``params``; ``below``: also count the rows whose log-density is
    below it."""
    data = engine.prepare(X)
    return engine.map_reduce(data, _chunk_summary, params, bool(marginalize), below,
                             client=client)


# ---------------------------------------------------------------------------- drift


def training_record(summary: ScoreSummary, info=None) -> dict:
    """What the saved model keeps of its training data (``model.json`` ``training``)."""
    record = summary.to_json()
    record["anomaly_quantile"] = ANOMALY_QUANTILE
    record["anomaly_threshold"] = float(summary.quantile(ANOMALY_QUANTILE))
    if info is not None:
        record["data"] = {"kind": info.kind, "path": info.path, "shape": list(info.shape),
                          "fingerprint": info.fingerprint}
    return record


def compare(training: dict, current: dict) -> dict:
    """The drift of ``current`` (``ScoreSummary.to_json`` of new data, counted below the
    training threshold) against ``training`` (``training_record``), JSON-ready."""
    shares_then = np.asarray(training["shares"], dtype=float)
    shares_now = np.asarray(current["shares"], dtype=float)
    n = max(current["n_scored"], 1)
    then, now = training["mean_log_likelihood"], current["mean_log_likelihood"]
    return {
        "mean_log_likelihood_training": then,
        "mean_log_likelihood_now": now,
        "log_likelihood_drop": (then - now) if then is not None and now is not None else None,
        "shares_training": shares_then.tolist(),
        "shares_now": shares_now.tolist(),
        "max_share_change": float(np.abs(shares_now - shares_then).max()),
        "anomaly_threshold": training["anomaly_threshold"],
        "anomaly_quantile": training["anomaly_quantile"],
        "n_anomalies": int(current["n_below"]),
        "anomaly_share": current["n_below"] / n,
    }


class DriftThresholds(BaseModel):
    """The workflow's ``monitor`` section: when scoring against a saved model, the run
    fails with ``DriftError`` (exit code 9) once the report is written if any threshold
    given is passed; a threshold left out is not checked."""

    model_config = ConfigDict(extra="forbid")

    max_log_likelihood_drop: float | None = Field(
        None, ge=0, description="largest fall of the mean log-likelihood per row (nats) "
        "from the training data's to the new data's")
    max_share_change: float | None = Field(
        None, gt=0, le=1, description="largest change of any component's share "
        "(0.05 = five percentage points)")
    max_anomaly_share: float | None = Field(
        None, gt=0, le=1, description="largest share of new rows below the training "
        "data's 1% log-density quantile (about 0.01 when nothing changed)")


def breaches(drift: dict, thresholds: DriftThresholds | None) -> list[str]:
    """One sentence per threshold that ``drift`` passes (empty: none)."""
    if thresholds is None or drift is None:
        return []
    found = []
    limit = thresholds.max_log_likelihood_drop
    drop = drift["log_likelihood_drop"]
    if limit is not None and drop is not None and drop > limit:
        found.append(f"the mean log-likelihood fell by {drop:.4g} per row (from "
                     f"{drift['mean_log_likelihood_training']:.6g} at training to "
                     f"{drift['mean_log_likelihood_now']:.6g}), more than "
                     f"monitor.max_log_likelihood_drop={limit:g}")
    limit = thresholds.max_share_change
    if limit is not None and drift["max_share_change"] > limit:
        k = int(np.argmax(np.abs(np.subtract(drift["shares_now"], drift["shares_training"]))))
        found.append(f"component {k}'s share moved from {drift['shares_training'][k]:.3f} to "
                     f"{drift['shares_now'][k]:.3f}, more than monitor.max_share_change="
                     f"{limit:g}")
    limit = thresholds.max_anomaly_share
    if limit is not None and drift["anomaly_share"] > limit:
        found.append(f"{drift['anomaly_share']:.2%} of the rows ({drift['n_anomalies']:,}) lie "
                     f"below the training data's {drift['anomaly_quantile']:.0%} log-density "
                     f"quantile, more than monitor.max_anomaly_share={limit:g}")
    return found


def check(drift: dict, thresholds: DriftThresholds | None, where: str) -> None:
    """Raise ``DriftError`` naming every threshold passed; ``where``: the report's place."""
    found = breaches(drift, thresholds)
    if found:
        raise DriftError(
            "The data drifted from the model's training data: " + "; ".join(found)
            + f". The predictions and the report ({where}) were written. Look at the "
            "report's drift section; refit the model on recent data, or raise the "
            "thresholds in the workflow's monitor section.")
