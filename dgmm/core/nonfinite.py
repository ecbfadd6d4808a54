"""The non-finite policy: what a fit and a prediction do with rows holding NaN or inf.

One object per policy (``RAISE``, ``DROP``, ``MARGINALIZE``), found by name with
``nonfinite_rule(name)``, like the covariance families: code outside this module asks the
rule and never compares the policy's name.

- ``raise``: such rows are an error (a ``DataError`` naming the first of them);
- ``drop``: they are skipped (counted); predictions give them label -1 and NaN;
- ``marginalize``: a NaN entry is a missing value, and a row with some observed entries
  counts through the marginal density over them (``dgmm.core.kernels.missing``); a row with
  every entry NaN is skipped, and +-inf is an error.

``row_masks`` is the one home of the bad-row mask that predictions use.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError
from .kernels import missing


def row_masks(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(complete, with_gaps), each (n_samples,) bool: rows without NaN or inf, and rows
    holding NaN but no inf with at least one observed entry."""
    complete = np.isfinite(X).all(axis=1)
    if complete.all():
        return complete, ~complete
    with_gaps = ~complete & ~np.isinf(X).any(axis=1) & ~np.isnan(X).all(axis=1)
    return complete, with_gaps


class NonFiniteRule:
    """The behaviour of one non-finite policy (see the module docstring)."""

    name: str
    #: NaN entries are missing values (marginal densities, imputed initialisation)
    missing_values: bool = False
    #: bad rows may be given to fit and predict (scikit-learn's ``allow_nan`` tag)
    allows_nan: bool = True
    #: how the rows a fit skips are described in messages
    skipped_rows: str = "non-finite"

    def __reduce__(self):
        return (nonfinite_rule, (self.name,))  # unpickles to the registry's one object

    def __dask_tokenize__(self):
        return (type(self).__name__, self.name)

    def __repr__(self):
        return f"<non-finite policy {self.name!r}>"

    def check_skipped(self, n_skipped: int, first: int, weighted: bool = False) -> None:
        """After a pass counted ``n_skipped`` bad rows (the first at global row ``first``):
        a ``DataError`` when they are not allowed."""

    def split_missing(self, X: np.ndarray, sample_weight: np.ndarray | None,
                      row_offset: int = 0):
        """(X, sample_weight, gaps) of one chunk: the rows the complete-data kernels take
        and the rows with missing entries (a ``missing.Gaps``, or None)."""
        return X, sample_weight, None

    def usable_rows(self, X: np.ndarray, weights: np.ndarray | None, row_offset: int = 0):
        """(X, weights, n_skipped): the rows of a chunk a mini-batch step uses."""
        finite = np.isfinite(X).all(axis=1)
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64)
            finite &= np.isfinite(weights)
        if finite.all():
            return X, weights, 0
        bad = np.flatnonzero(~finite)
        self.check_skipped(int(bad.size), row_offset + int(bad[0]))
        return X[finite], (None if weights is None else weights[finite]), int(bad.size)

    def row_masks(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(rows the complete-data kernels take, rows that get the marginal density or
        None) of an array to predict on."""
        return np.isfinite(X).all(axis=1), None

    def check_predict_rows(self, X: np.ndarray) -> None:
        """A ``DataError`` for the rows of an in-memory array that prediction refuses."""

    def check_scored(self, n_left_out: int) -> None:
        """A ``DataError`` when a score left out rows it may not leave out."""


class _Raise(NonFiniteRule):
    name = "raise"
    allows_nan = False

    def check_skipped(self, n_skipped, first, weighted=False):
        if n_skipped:
            where = "The data or their sample_weight" if weighted else "The data"
            raise DataError(
                f"{where} hold {n_skipped} row(s) with NaN or inf values (the first at row "
                f"{first}). Clean them, skip those rows with nonfinite='drop' (in a "
                "workflow: data.nonfinite: drop), or treat NaN entries as missing values "
                "with nonfinite='marginalize'."
            )

    def check_predict_rows(self, X):
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        if bad.size:
            raise DataError(
                f"X holds {bad.size} row(s) with NaN or inf values (the first at row "
                f"{bad[0]}). Clean them, or set nonfinite='drop' to get label -1 and NaN "
                "for those rows."
            )

    def check_scored(self, n_left_out):
        if n_left_out:
            raise DataError(
                f"X holds {n_left_out} row(s) with NaN or inf values. Clean them, or set "
                "nonfinite='drop' to leave them out of the score."
            )


class _Drop(NonFiniteRule):
    name = "drop"


class _Marginalize(NonFiniteRule):
    name = "marginalize"
    missing_values = True
    skipped_rows = "empty (all-NaN)"

    def split_missing(self, X, sample_weight, row_offset=0):
        return missing.split_gaps(X, sample_weight, row_offset)

    def usable_rows(self, X, weights, row_offset=0):
        missing.split_gaps(X, weights, row_offset)  # DataError on +-inf or a bad weight
        usable = ~np.isnan(X).all(axis=1)
        if usable.all():
            return X, weights, 0
        return (X[usable], None if weights is None else np.asarray(weights)[usable],
                int((~usable).sum()))

    def row_masks(self, X):
        return row_masks(X)

    def check_predict_rows(self, X):
        infinite = np.isinf(X).any(axis=1)
        if infinite.any():
            bad = np.flatnonzero(infinite)
            raise DataError(
                f"X holds {bad.size} row(s) with infinite values (the first at row "
                f"{bad[0]}). NaN entries are missing values, but +-inf is bad data: "
                "clean those rows, or set nonfinite='drop' to get label -1 and NaN.")


RAISE, DROP, MARGINALIZE = _Raise(), _Drop(), _Marginalize()
RULES: dict[str, NonFiniteRule] = {rule.name: rule for rule in (RAISE, DROP, MARGINALIZE)}


def nonfinite_rule(name: str | NonFiniteRule) -> NonFiniteRule:
    """The rule of a policy name ('raise', 'drop', 'marginalize'); a rule is returned as
    it is."""
    if isinstance(name, NonFiniteRule):
        return name
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown nonfinite policy {name!r}; expected one of "
                         f"{sorted(RULES)}") from None
