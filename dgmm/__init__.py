"""dgmm: Gaussian mixture models fitted by EM on chunked Dask arrays, out of core.

Layers: ``dgmm.core`` (NumPy), ``dgmm.engine`` (the Dask pass and the EM loop),
``dgmm.data`` (readers and writers), ``dgmm.estimators`` (scikit-learn API),
``dgmm.workflow`` (YAML workflows) and ``dgmm.cli``.
"""
from ._version import __version__
from .core.params import GMMParams
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

_LAZY = {
    # importing these pulls in Dask and scikit-learn: done on first use
    "GaussianMixture": ("estimators", "GaussianMixture"),
    "BayesianGaussianMixture": ("estimators", "BayesianGaussianMixture"),
    "MiniBatchGaussianMixture": ("estimators", "MiniBatchGaussianMixture"),
    "MiniBatchBayesianGaussianMixture": ("estimators", "MiniBatchBayesianGaussianMixture"),
    "GaussianMixtureSelection": ("estimators", "GaussianMixtureSelection"),
    "load_model": ("estimators", "load_model"),
    "open_source": ("data", "open_source"),
    "make_gmm_data": ("data", "make_gmm_data"),
    "data": ("data", None),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        module = importlib.import_module(f".{module_name}", __name__)
        return module if attribute is None else getattr(module, attribute)
    raise AttributeError(f"module 'dgmm' has no attribute {name!r}")


__all__ = [
    "GaussianMixture",
    "BayesianGaussianMixture",
    "MiniBatchGaussianMixture",
    "MiniBatchBayesianGaussianMixture",
    "GaussianMixtureSelection",
    "GMMParams",
    "load_model",
    "open_source",
    "make_gmm_data",
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
