"""The NumPy core: covariance families, parameters, mergeable statistics, the per-chunk
kernels and the M-step. Imports nothing of Dask (``tests/test_layers.py`` checks it)."""
