import pickle

import dask.array as da
import numpy as np
import pytest
from helpers import COVARIANCE_TYPES, assert_stats_close, make_blobs, params_for

from dgmm.core import kernels
from dgmm.core.params import GMMParams
from dgmm.engine import passes as engine


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 500])
def test_pass_equals_one_chunk(covariance_type, chunk_rows):
    X = make_blobs(500, 3, 3, seed=11)
    params = params_for(covariance_type, X)
    data = engine.prepare(X, chunk_rows=chunk_rows)
    assert data.n_chunks == -(-500 // chunk_rows)
    assert_stats_close(engine.estep_pass(data, params, split_every=3),
                       kernels.chunk_stats(X, params), rtol=1e-11)


def test_pass_on_cluster_is_deterministic_and_matches_local(cluster_client):
    X = make_blobs(2000, 4, 3, seed=12)
    params = params_for("full", X)
    data = engine.prepare(da.from_array(X, chunks=(97, 4)))
    local = engine.estep_pass(data, params)
    runs = [engine.estep_pass(data, params, client=cluster_client) for _ in range(3)]
    for run in runs:
        # a fixed reduction tree: bit-identical whatever worker ran which chunk
        assert run.loglik == local.loglik
        np.testing.assert_array_equal(run.s2, local.s2)
        np.testing.assert_array_equal(run.s1, local.s1)


def test_parameters_enter_the_graph_once():
    X = make_blobs(1000, 3, 3)
    params = params_for("full", X)
    data = engine.prepare(X, chunk_rows=50)
    terms = params.gaussian_terms()
    graph = dict(engine.pass_graph(data, engine.estep_chunk, terms).__dask_graph__())
    marker = params.precisions_cholesky.tobytes()
    holding = [key for key, task in graph.items() if marker in pickle.dumps(task)]
    assert len(holding) == 1, holding
    assert str(holding[0]).startswith("GaussianTerms")
    # new parameters -> new keys: a pass never reuses the previous pass's results
    moved = GMMParams(params.weights, params.means + 1.0, params.covariances,
                      params.precisions_cholesky, "full")
    graph2 = dict(engine.pass_graph(data, engine.estep_chunk,
                                    moved.gaussian_terms()).__dask_graph__())
    chunk_keys = {k for k in graph if "estep_chunk" in str(k)}
    assert chunk_keys and not chunk_keys & set(graph2)


def test_reduction_is_a_tree():
    X = make_blobs(640, 2, 2)
    data = engine.prepare(X, chunk_rows=10)  # 64 chunks
    graph = dict(engine.pass_graph(data, engine.estep_chunk, params_for("diag", X, k=2),
                                   split_every=4).__dask_graph__())
    merges = [k for k in graph if "merge_all" in str(k)]
    assert len(merges) == 16 + 4 + 1  # 64 -> 16 -> 4 -> 1


def test_sample_weight_chunks_follow_the_data():
    X = make_blobs(300, 2, 2)
    w = np.random.default_rng(0).uniform(size=300)
    params = params_for("full", X, k=2)
    data = engine.prepare(da.from_array(X, chunks=(70, 2)), da.from_array(w, chunks=33))
    assert_stats_close(engine.estep_pass(data, params), kernels.chunk_stats(X, params, w))


def test_map_rows_keeps_row_chunks():
    X = da.from_array(make_blobs(300, 2, 2), chunks=(70, 2))
    params = params_for("tied", X.compute(), k=2)
    proba = engine.map_rows(X, kernels.predict_proba, params, n_columns=2, dtype=np.float64)
    labels = engine.map_rows(X, kernels.predict, params, n_columns=None, dtype=np.int64)
    assert proba.chunks == (X.chunks[0], (2,)) and labels.chunks == (X.chunks[0],)
    np.testing.assert_array_equal(labels.compute(), kernels.predict(X.compute(), params))


def test_columns_are_merged_into_one_chunk():
    X = da.from_array(make_blobs(100, 4, 2), chunks=(30, 2))
    assert engine.as_row_chunked(X).chunks[1] == (4,)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("n_samples", [50, 1000, 1003])
def test_map_rows_local_equals_one_call(monkeypatch, covariance_type, n_samples):
    """An in-memory array in blocks on the threaded scheduler gives the one-call result,
    row for row (each block is centred on its own mean: equal to rounding)."""
    monkeypatch.setattr(engine, "LOCAL_TASK_ROWS", 100)
    X = make_blobs(n_samples, 3, 3, seed=13)
    params = params_for(covariance_type, X)
    proba = engine.map_rows_local(X, kernels.predict_proba, params, n_columns=3,
                                  dtype=np.float64)
    assert isinstance(proba, np.ndarray) and proba.shape == (n_samples, 3)
    np.testing.assert_allclose(proba, kernels.predict_proba(X, params), rtol=1e-10,
                               atol=1e-14)
    labels = engine.map_rows_local(X, kernels.predict, params, n_columns=None,
                                   dtype=np.int64)
    np.testing.assert_array_equal(labels, kernels.predict(X, params))
