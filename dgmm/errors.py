"""The errors dgmm raises for a user's mistake, and the ``dgmm`` command's exit codes.

Every message is one paragraph that says what is wrong, where, and how to fix it. The CLI
prints the message (no traceback) and exits with the error's ``exit_code``;
``EXIT_CODE_TABLE`` lists every code the command can return.
"""
from __future__ import annotations

from typing import NamedTuple

EXIT_DONE = 0
EXIT_UNEXPECTED = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class DgmmError(Exception):
    """Base class of every error caused by input, configuration or environment."""

    exit_code = EXIT_UNEXPECTED


class ConfigError(DgmmError, ValueError):
    """A workflow file, an override or an argument is invalid."""

    exit_code = 2


class DataError(DgmmError, ValueError):
    """The data cannot be used: missing, wrong shape or dtype, non-finite."""

    exit_code = 3


class ClusterError(DgmmError, RuntimeError):
    """The Dask cluster could not start, could not be reached, or was lost."""

    exit_code = 4


class NotConvergedError(DgmmError, RuntimeError):
    """EM did not converge within max_iter and convergence was required."""

    exit_code = 5


class CheckpointError(DgmmError, RuntimeError):
    """A checkpoint is corrupt or belongs to other settings or data."""

    exit_code = 6


class LockError(CheckpointError):
    """Another run holds the lock on the checkpoint directory."""

    exit_code = 7


class FitError(DgmmError, ValueError):
    """The fit failed numerically, e.g. a covariance is not positive definite."""

    exit_code = 8


class DriftError(DgmmError, RuntimeError):
    """Scored data drifted from the model's training data past a workflow threshold."""

    exit_code = 9


class ExitCode(NamedTuple):
    """One exit code of ``dgmm``: the code, the error class that gives it, what it means."""

    code: int
    error: type[DgmmError] | None
    meaning: str


EXIT_CODE_TABLE: tuple[ExitCode, ...] = (
    ExitCode(EXIT_DONE, None, "done (or nothing to do: the outputs were up to date)"),
    ExitCode(EXIT_UNEXPECTED, None,
             "anything unexpected (a bug: rerun with --debug for the traceback)"),
    ExitCode(ConfigError.exit_code, ConfigError,
             "bad workflow file, override or command-line arguments"),
    ExitCode(DataError.exit_code, DataError,
             "bad data (missing, wrong shape or dtype, NaN/inf, too few rows; a store that "
             "stays down)"),
    ExitCode(ClusterError.exit_code, ClusterError,
             "the cluster could not start, could not be reached, or was lost"),
    ExitCode(NotConvergedError.exit_code, NotConvergedError,
             "EM did not converge within max_iter and the workflow requires convergence"),
    ExitCode(CheckpointError.exit_code, CheckpointError,
             "a checkpoint is corrupt or belongs to other settings or data"),
    ExitCode(LockError.exit_code, LockError,
             "another run holds the checkpoint directory's lock"),
    ExitCode(FitError.exit_code, FitError,
             "the fit failed numerically (a covariance not positive definite)"),
    ExitCode(DriftError.exit_code, DriftError,
             "the scored data drifted from the training data past a threshold of the "
             "workflow's monitor section (the outputs and the report were written)"),
    ExitCode(EXIT_INTERRUPTED, None, "interrupted (SIGINT, Ctrl-C): the last checkpoint is kept; "
             "rerun to resume"),
    ExitCode(EXIT_TERMINATED, None, "terminated (SIGTERM, e.g. a batch system at walltime): "
             "likewise"),
)  # fmt: skip
"""Every exit code of the ``dgmm`` command, in increasing order (rendered by its --help)."""
