"""The NumPy core: covariance families, parameters, mergeable statistics, the per-chunk
kernels and the M-step. Imports nothing of Dask (``tests/test_layers.py`` checks it)."""

# registers mclust's fourteen covariance models in families.FAMILIES (importing them from
# families.py would make the two modules import each other)
from . import mclust_families  # noqa: F401, E402
