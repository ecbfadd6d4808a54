"""Data in and out: one reader per format, predictions, synthetic mixtures, saved models.

``open_source(kind, path, **options)`` returns a row-chunked Dask array and a ``DataInfo``;
``make_gmm_data`` writes a known mixture; ``save_model`` / ``load_params`` store parameters.
"""
from .layout import DataInfo
from .model_io import load_params, read_model_meta, save_model
from .parquet import open_parquet
from .readers import from_array, open_npy, open_source, open_zarr
from .synthetic import load_true_params, make_gmm_data

__all__ = ["DataInfo", "from_array", "open_npy", "open_parquet", "open_source", "open_zarr",
           "load_true_params", "make_gmm_data", "load_params", "read_model_meta", "save_model"]
