"""Per-chunk kernels: the E-step and the scatter of one chunk of rows, NumPy/SciPy only.

Every function takes one chunk ``X`` of shape (n_samples, n_features) and returns arrays
or a ``SuffStats``. Rows are processed in cache-sized blocks; the flops go to BLAS-3 calls
covering all components at once. Each covariance family names its kernel kind
(``CovarianceFamily.kernel``): ``KERNELS`` maps it to the classes that build the block's
design matrix, its log-probabilities and its moments. Work arrays are allocated once per
chunk (``blas.Workspace``); statistics skip (row, component) pairs that provably cannot
count (``FLUSH_LOG_RATIO``, ``pruning.PrunedLogProb``). The layouts, the pruning bound and
why the blocks are allocation-free are explained in docs/design.md.

One module per job:

- ``blas``: block sizing, the per-chunk work arrays, the accumulating BLAS products;
- ``responsibilities``: the normaliser (log-probabilities to responsibilities, the flush)
  and the finiteness test of a chunk's rows;
- ``logprob``: per kernel kind, the block's design matrix and its log-probabilities;
- ``pruning``: the bound that skips negligible (row, component) pairs ('full', d >= 32);
- ``moments``: per kernel kind, the weighted moments of the blocks;
- ``kinds``: which of those classes each kernel kind uses (``KERNELS``);
- ``estep``: a chunk's statistics under parameters, labels or responsibilities;
- ``inference``: per-row log-probabilities, scores, responsibilities and labels;
- ``missing``: rows with missing entries (NaN), marginalised.

The tuning constants re-exported here are for reading; a change must be made on the
module that declares them.
"""
from . import missing
from .blas import BLOCK_BYTES, TRIANGULAR_MIN_FEATURES, Workspace, block_rows, compute_dtype
from .estep import chunk_stats, chunk_stats_from_labels, chunk_stats_from_resp
from .inference import (
    estimate_weighted_log_prob,
    log_prob_resp,
    predict,
    predict_proba,
    score_samples,
)
from .kinds import KERNELS
from .logprob import LOG_2PI
from .moments import GATHER_MAX_SHARE
from .pruning import (
    PRUNE_BLOCK_FACTOR,
    PRUNE_DIRECTIONS,
    PRUNE_MAX_SHARE,
    PRUNE_MIN_FEATURES,
    PRUNE_SLACK_NATS,
)
from .responsibilities import FLUSH_LOG_RATIO, split_finite

__all__ = [
    "BLOCK_BYTES", "FLUSH_LOG_RATIO", "GATHER_MAX_SHARE", "KERNELS", "LOG_2PI",
    "PRUNE_BLOCK_FACTOR", "PRUNE_DIRECTIONS", "PRUNE_MAX_SHARE", "PRUNE_MIN_FEATURES",
    "PRUNE_SLACK_NATS", "TRIANGULAR_MIN_FEATURES", "Workspace", "block_rows", "chunk_stats",
    "chunk_stats_from_labels", "chunk_stats_from_resp", "compute_dtype",
    "estimate_weighted_log_prob", "log_prob_resp", "missing", "predict", "predict_proba",
    "score_samples", "split_finite",
]
