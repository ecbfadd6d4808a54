"""dgmm: Gaussian mixture models fitted by EM on chunked Dask arrays, out of core."""
from .errors import (
    CheckpointError,
    ClusterError,
    ConfigError,
    DataError,
    DgmmError,
    FitError,
    LockError,
    NotConvergedError,
)
from .params import GMMParams

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: importing dgmm.GaussianMixture pulls in Dask.
    if name == "GaussianMixture":
        from .estimator import GaussianMixture

        return GaussianMixture
    if name == "load_model":
        from .model_io import load_model

        return load_model
    raise AttributeError(f"module 'dgmm' has no attribute {name!r}")


__all__ = [
    "GaussianMixture",
    "GMMParams",
    "load_model",
    "DgmmError",
    "ConfigError",
    "DataError",
    "ClusterError",
    "NotConvergedError",
    "CheckpointError",
    "LockError",
    "FitError",
    "__version__",
]
