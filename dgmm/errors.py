"""The errors dgmm raises for a user's mistake, each with its CLI exit code.

Every message is one paragraph that says what is wrong, where, and how to fix it.
The CLI prints the message (no traceback) and exits with ``exit_code``.
"""
from __future__ import annotations


class DgmmError(Exception):
    """Base class of every error caused by input, configuration or environment."""

    exit_code = 1


class ConfigError(DgmmError, ValueError):
    """A workflow file, an override or an argument is invalid (exit code 2)."""

    exit_code = 2


class DataError(DgmmError, ValueError):
    """The data cannot be used: missing, wrong shape or dtype, non-finite (exit code 3)."""

    exit_code = 3


class ClusterError(DgmmError, RuntimeError):
    """The Dask cluster could not start, could not be reached, or was lost (exit code 4)."""

    exit_code = 4


class NotConvergedError(DgmmError, RuntimeError):
    """EM did not converge within max_iter and convergence was required (exit code 5)."""

    exit_code = 5


class CheckpointError(DgmmError, RuntimeError):
    """A checkpoint is corrupt or belongs to other settings or data (exit code 6)."""

    exit_code = 6


class LockError(CheckpointError):
    """Another run holds the lock on the checkpoint directory (exit code 7)."""

    exit_code = 7


class FitError(DgmmError, ValueError):
    """The fit failed numerically, e.g. a covariance is not positive definite (exit code 8)."""

    exit_code = 8


EXIT_CODES: dict[str, int] = {
    "done": 0,
    "unexpected": 1,
    ConfigError.__name__: ConfigError.exit_code,
    DataError.__name__: DataError.exit_code,
    ClusterError.__name__: ClusterError.exit_code,
    NotConvergedError.__name__: NotConvergedError.exit_code,
    CheckpointError.__name__: CheckpointError.exit_code,
    LockError.__name__: LockError.exit_code,
    FitError.__name__: FitError.exit_code,
}
