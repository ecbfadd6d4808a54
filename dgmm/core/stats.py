"""Sufficient statistics of one E-step pass: a small value that merges by addition.

``SuffStats`` holds the row count and total weight, the log-likelihood, ``nk`` (K,),
``s1`` (K, d) and ``s2`` (in the family's form, ``CovarianceFamily.s2_shape``), all about
a fixed shift c_k (the means the pass started with), plus the count and first index of
rows skipped as non-finite. Merging is addition, so a fixed reduction tree makes it exact.
Definitions: docs/design.md, "Sufficient statistics and the M-step".
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .families import CovarianceType, family


def _min_index(a: int, b: int) -> int:
    if a < 0:
        return b
    if b < 0:
        return a
    return min(a, b)


@dataclass(frozen=True, eq=False)
class SuffStats:
    """Additive sufficient statistics of a set of rows (see the module docstring)."""

    covariance_type: CovarianceType
    shift: np.ndarray
    n: float
    loglik: float
    nk: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    n_rows: int = 0
    n_nonfinite: int = 0
    first_nonfinite: int = field(default=-1)

    @classmethod
    def zeros(cls, covariance_type: str, shift: np.ndarray) -> SuffStats:
        """The neutral element for ``merge``: statistics of no rows."""
        n_components, n_features = shift.shape
        return cls(
            covariance_type=covariance_type,
            shift=shift,
            n=0.0,
            loglik=0.0,
            nk=np.zeros(n_components),
            s1=np.zeros((n_components, n_features)),
            s2=np.zeros(family(covariance_type).s2_shape(n_components, n_features)),
        )

    def s2_unpacked(self) -> np.ndarray:
        """``s2`` as matrices (full (K, d, d), tied (d, d)) or diagonals (K, d)."""
        return family(self.covariance_type).unpack_s2(self.s2, self.shift.shape[1])

    def merge(self, other: SuffStats) -> SuffStats:
        """Statistics of the union of both row sets (both must share the same shift)."""
        return SuffStats(
            covariance_type=self.covariance_type,
            shift=self.shift,
            n=self.n + other.n,
            loglik=self.loglik + other.loglik,
            nk=self.nk + other.nk,
            s1=self.s1 + other.s1,
            s2=self.s2 + other.s2,
            n_rows=self.n_rows + other.n_rows,
            n_nonfinite=self.n_nonfinite + other.n_nonfinite,
            first_nonfinite=_min_index(self.first_nonfinite, other.first_nonfinite),
        )


def merge_all(parts):
    """Merge a non-empty sequence of mergeable values left to right (a fixed order)."""
    parts = list(parts)
    total = parts[0]
    for part in parts[1:]:
        total = total.merge(part)
    return total
