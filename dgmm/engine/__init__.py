"""The Dask layer: one pass over the data as a map over row chunks and a fixed tree of
merges (``passes``), many models per pass (``models``), initialisation at scale
(``init``), the EM loop (``em``) and stepwise EM (``minibatch``)."""
