"""Many models in one pass under a memory budget: the bytes one model holds per chunk task,
and the grouping of models into waves whose bytes fit the budget."""
from __future__ import annotations

import numpy as np

from ..core.families import family


def candidate_bytes(n_components: int, covariance_type: str, n_features: int,
                    chunk_rows: int, n_init: int) -> int:
    """Bytes one candidate's restarts hold per chunk task: log-probabilities and
    responsibilities (chunk_rows x K each) plus the statistics, per restart."""
    stats = n_components * (1 + n_features) + int(
        np.prod(family(covariance_type).s2_shape(n_components, n_features)))
    return 8 * n_init * (2 * chunk_rows * n_components + stats)


def waves(sizes: list[int], budget: int) -> list[list[int]]:
    """Indices of consecutive candidates grouped so each group's bytes fit ``budget``
    (a candidate larger than the budget runs alone)."""
    groups, current, used = [], [], 0
    for index, size in enumerate(sizes):
        if current and used + size > budget:
            groups.append(current)
            current, used = [], 0
        current.append(index)
        used += size
    if current:
        groups.append(current)
    return groups
