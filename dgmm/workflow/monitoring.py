"""What a workflow run records for its report and for model monitoring: the seconds and
reads of the data of each step (``StepClock``), the training data's summary kept in the
saved model (``ensure_training_record``), and the fit's passes over the data."""
from __future__ import annotations

import time

from ..data.model_io import amend_model_meta, read_model_meta
from ..errors import DataError
from . import drift


class StepClock:
    """Seconds and reads of each step, in the order they ran; ``done`` closes the step
    that started at the previous ``done`` (or at construction)."""

    def __init__(self):
        self.rows: list[dict] = []
        self._start = time.perf_counter()

    def done(self, step: str, status: str, reads: int = 0) -> None:
        now = time.perf_counter()
        self.rows.append({"step": step, "status": status, "seconds": now - self._start,
                          "reads": reads})
        self._start = now

    def add_reads(self, step: str, reads: int) -> None:
        """Count ``reads`` more for ``step`` (already closed)."""
        for row in self.rows:
            if row["step"] == step:
                row["reads"] += reads

    def current(self, step: str) -> list[dict]:
        """The rows so far and ``step`` still running (for the page that step writes)."""
        return self.rows + [{"step": step, "status": "writing this page", "seconds": None,
                             "reads": None}]


def fit_passes(model, selection=None) -> int | None:
    """The passes over the data the fit made (None when the estimator does not say)."""
    if selection is not None:
        return int(selection.n_passes_)
    passes = getattr(model, "n_passes_", None)
    if passes is None:
        passes = getattr(getattr(model, "fit_state_", None), "passes", None)
    return None if passes is None else int(passes)


def training_of(path: str | None, storage_options: dict) -> dict | None:
    """The training record kept in the saved model at ``path``, or None."""
    if path is None:
        return None
    try:
        return read_model_meta(path, storage_options).get("training")
    except DataError:
        return None


def ensure_training_record(path: str | None, model, X, info, client, storage_options: dict,
                           marginalize: bool) -> tuple[dict | None, int]:
    """The training record of the model at ``path``, computed from ``X`` (one pass) and
    added to its ``model.json`` when missing; returns (record, reads made)."""
    record = training_of(path, storage_options)
    if record is not None and (record.get("data") or {}).get("fingerprint") == info.fingerprint:
        return record, 0
    # what predictions evaluate (a variational fit: its posterior's E-step terms)
    summary = drift.summarize(X, model.inference_params(), client=client,
                              marginalize=marginalize)
    record = drift.training_record(summary, info)
    if path is not None:
        amend_model_meta(path, {"training": record}, storage_options)
    return record, 1
