"""The model file: save_model / load_model round trips, the on-disk format, failures.

Models are fitted for real (small NumPy data, Dask's local scheduler) and written to
real directories in tmp_path; the files are then read back with plain NumPy and json.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings

import dask.array as da
import numpy as np
import pytest
from helpers import COVARIANCE_TYPES, make_blobs

import dgmm
from dgmm.data import model_io
from dgmm.errors import DataError
from dgmm.estimators.gaussian_mixture import ConvergenceWarning

ARRAY_ATTRIBUTES = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_")


def _fitted(covariance_type="full", *, seed=0, max_iter=20, tol=1e-4):
    """A model fitted on 600 x 3 rows of three blobs, and those rows."""
    X = make_blobs(n_samples=600, n_features=3, n_components=3, seed=seed)
    model = dgmm.GaussianMixture(3, covariance_type=covariance_type, max_iter=max_iter,
                                 random_state=seed, tol=tol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    return model, X


def _flip_byte(path, position=-1):
    with open(path, "r+b") as fh:
        fh.seek(position, os.SEEK_END if position < 0 else os.SEEK_SET)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))


# ----------------------------------------------------------------------- round trip


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_round_trip_is_exact(tmp_path, covariance_type):
    model, X = _fitted(covariance_type)
    path = model_io.save_model(tmp_path / "model.dgmm", model, data_fingerprint="fp-123",
                               settings_hash="sh-456")
    assert path == str(tmp_path / "model.dgmm")

    loaded = dgmm.load_model(path)

    assert isinstance(loaded, dgmm.GaussianMixture)
    for name in ARRAY_ATTRIBUTES:
        original, restored = getattr(model, name), getattr(loaded, name)
        assert restored.dtype == original.dtype and restored.shape == original.shape, name
        assert np.array_equal(restored, original), name
    assert loaded.params_.covariance_type == covariance_type
    assert loaded.covariance_type == covariance_type
    assert loaded.n_components == 3 and loaded.n_features_in_ == 3
    assert loaded.n_iter_ == model.n_iter_ and isinstance(loaded.n_iter_, int)
    assert loaded.converged_ is model.converged_
    assert loaded.lower_bound_ == model.lower_bound_
    assert loaded.lower_bounds_ == model.lower_bounds_
    assert len(loaded.lower_bounds_) == model.n_iter_
    assert loaded.n_nonfinite_ == model.n_nonfinite_ == 0
    assert loaded.data_fingerprint_ == "fp-123"
    # the constructor settings come back too
    for name in ("tol", "reg_covar", "max_iter", "n_init", "init_params", "random_state",
                 "split_every", "nonfinite"):
        assert getattr(loaded, name) == getattr(model, name), name

    # predictions are those of the original model, bit for bit (NumPy and Dask input)
    assert np.array_equal(loaded.predict(X), model.predict(X))
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert np.array_equal(loaded.score_samples(X), model.score_samples(X))
    assert loaded.score(X) == model.score(X)
    Xd = da.from_array(X, chunks=(150, 3))
    assert np.array_equal(loaded.predict(Xd).compute(), model.predict(X))


def test_round_trip_of_model_without_iterations(tmp_path):
    """-inf lower bound and an empty history survive JSON; settings that are not plain
    values (a numpy Generator as random_state) are not restored as strings."""
    model, _ = _fitted("diag")
    params = model.params_
    bare = dgmm.GaussianMixture.from_params(params, random_state=np.random.default_rng(0))
    assert bare.lower_bound_ == -math.inf and bare.lower_bounds_ == []
    model_io.save_model(tmp_path / "m", bare)

    loaded = dgmm.load_model(tmp_path / "m")

    assert loaded.lower_bound_ == -math.inf
    assert loaded.lower_bounds_ == [] and loaded.n_iter_ == 0
    assert loaded.random_state is None
    assert loaded.data_fingerprint_ is None
    assert np.array_equal(loaded.means_, params.means)


def test_load_model_keyword_arguments_override_saved_settings(tmp_path):
    model, X = _fitted("spherical")
    model_io.save_model(tmp_path / "m", model)

    loaded = dgmm.load_model(tmp_path / "m", max_iter=7, tol=0.5)

    assert loaded.max_iter == 7 and loaded.tol == 0.5
    assert np.array_equal(loaded.predict(X), model.predict(X))


def test_load_model_is_exported_at_package_level():
    assert dgmm.load_model is dgmm.estimators.load_model
    assert "load_model" in dgmm.__all__


# ------------------------------------------------------------------------ the format


def test_files_are_standard_npy_and_model_json_is_the_manifest(tmp_path):
    # not converged (tol=0: the sample search's start can converge within 2 iterations at
    # the default tol): converged false in the manifest
    model, _ = _fitted("full", max_iter=2, tol=0.0)
    path = tmp_path / "model.dgmm"
    model_io.save_model(path, model, data_fingerprint="abcdef", settings_hash="0123")

    assert sorted(os.listdir(path)) == sorted(
        ["model.json", "weights.npy", "means.npy", "covariances.npy",
         "precisions_cholesky.npy"]
    )
    with open(path / "model.json") as fh:
        meta = json.load(fh)
    assert meta["format"] == "dgmm-model"
    assert meta["format_version"] == 1
    assert meta["dgmm_version"] == dgmm.__version__
    assert meta["covariance_type"] == "full"
    assert meta["n_components"] == 3 and meta["n_features"] == 3
    assert meta["n_iter"] == 2 and meta["converged"] is False
    assert meta["lower_bounds"] == model.lower_bounds_  # the history
    assert meta["lower_bound"] == model.lower_bound_
    assert meta["data_fingerprint"] == "abcdef"
    assert meta["settings_hash"] == "0123"
    assert meta["settings"]["covariance_type"] == "full"
    assert meta["settings"]["max_iter"] == 2

    for name, attribute in [("weights", "weights_"), ("means", "means_"),
                            ("covariances", "covariances_"),
                            ("precisions_cholesky", "precisions_cholesky_")]:
        file = path / f"{name}.npy"
        array = np.load(file, allow_pickle=False)  # plain NumPy, no dgmm
        assert np.array_equal(array, getattr(model, attribute))
        entry = meta["arrays"][name]
        assert entry["file"] == f"{name}.npy"
        assert entry["shape"] == list(array.shape)
        assert entry["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", model_io.ARRAYS)
def test_corrupted_array_file_is_a_data_error_naming_the_checksum(tmp_path, name):
    model, _ = _fitted("tied")
    path = tmp_path / "m"
    model_io.save_model(path, model)
    _flip_byte(path / f"{name}.npy")  # a byte of the array data (the last one)

    with pytest.raises(DataError) as info:
        dgmm.load_model(path)

    message = str(info.value)
    assert "checksum" in message
    assert str(path / f"{name}.npy") in message


def test_truncated_array_file_is_a_data_error(tmp_path):
    model, _ = _fitted("diag")
    model_io.save_model(tmp_path / "m", model)
    file = tmp_path / "m" / "covariances.npy"
    file.write_bytes(file.read_bytes()[:-8])

    with pytest.raises(DataError, match="checksum"):
        dgmm.load_model(tmp_path / "m")


def test_missing_array_file_is_a_data_error_naming_it(tmp_path):
    model, _ = _fitted("diag")
    model_io.save_model(tmp_path / "m", model)
    os.remove(tmp_path / "m" / "means.npy")

    with pytest.raises(DataError) as info:
        dgmm.load_model(tmp_path / "m")
    assert str(tmp_path / "m" / "means.npy") in str(info.value)


def test_missing_model_directory_is_a_data_error_naming_the_path(tmp_path):
    missing = tmp_path / "no" / "such.dgmm"

    with pytest.raises(DataError) as info:
        dgmm.load_model(missing)

    assert str(missing) in str(info.value)


def test_directory_without_manifest_is_a_data_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="model.json"):
        dgmm.load_model(tmp_path / "empty")


def test_unreadable_or_foreign_manifest_is_a_data_error(tmp_path):
    model, _ = _fitted("spherical")
    path = tmp_path / "m"
    model_io.save_model(path, model)
    manifest = path / "model.json"
    meta = json.loads(manifest.read_text())

    manifest.write_text(manifest.read_text()[:40])  # truncated JSON
    with pytest.raises(DataError, match="cannot be read"):
        dgmm.load_model(path)

    manifest.write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(DataError, match="not a dgmm model"):
        dgmm.load_model(path)

    manifest.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(DataError, match="newer"):
        dgmm.load_model(path)


# ------------------------------------------------------------------ atomic replacement


def _leftovers(parent):
    return [name for name in os.listdir(parent) if ".tmp-" in name]


def test_overwriting_replaces_the_model_and_leaves_no_temporary_directory(tmp_path):
    first, X = _fitted("full", seed=0)
    second, _ = _fitted("diag", seed=1)
    path = tmp_path / "model.dgmm"
    model_io.save_model(path, first, data_fingerprint="first")

    model_io.save_model(path, second, data_fingerprint="second")

    loaded = dgmm.load_model(path)
    assert loaded.covariance_type == "diag"
    assert loaded.data_fingerprint_ == "second"
    assert np.array_equal(loaded.means_, second.means_)
    assert np.array_equal(loaded.predict(X), second.predict(X))
    assert os.listdir(tmp_path) == ["model.dgmm"]
    assert _leftovers(tmp_path) == []


def test_failed_overwrite_keeps_the_previous_model(tmp_path):
    """Writing fails after the new arrays are on disk (the manifest is not JSON-able):
    the previous model stays in place, whole and loadable, and no temporary remains."""
    first, X = _fitted("full", seed=0)
    second, _ = _fitted("diag", seed=1)
    path = tmp_path / "model.dgmm"
    model_io.save_model(path, first, data_fingerprint="first")
    before = {name: (path / name).read_bytes() for name in os.listdir(path)}

    with pytest.raises(TypeError):
        model_io.save_model(path, second, extra={"not_json": object()})

    assert {name: (path / name).read_bytes() for name in os.listdir(path)} == before
    loaded = dgmm.load_model(path)
    assert loaded.data_fingerprint_ == "first"
    assert np.array_equal(loaded.means_, first.means_)
    assert np.array_equal(loaded.predict(X), first.predict(X))
    assert _leftovers(tmp_path) == []


def test_failed_first_write_leaves_nothing_that_looks_like_a_model(tmp_path):
    model, _ = _fitted("tied")
    path = tmp_path / "model.dgmm"

    with pytest.raises(TypeError):
        model_io.save_model(path, model, extra={"not_json": object()})

    assert not path.exists()
    assert os.listdir(tmp_path) == []
    with pytest.raises(DataError, match="model.dgmm"):
        dgmm.load_model(path)


def test_save_creates_missing_parent_directories(tmp_path):
    model, _ = _fitted("spherical")
    path = tmp_path / "a" / "b" / "model.dgmm"

    model_io.save_model(path, model)

    assert np.array_equal(dgmm.load_model(path).means_, model.means_)


def test_a_replacement_killed_between_its_renames_is_undone(tmp_path):
    """A crash after the old model was moved aside and before the new one moved in."""
    model, _ = _fitted("diag")
    path = tmp_path / "model"
    model_io.save_model(path, model)
    os.replace(path, tmp_path / ".model.tmp-deadbeef-old")  # the state such a crash leaves
    loaded = dgmm.load_model(path)
    np.testing.assert_array_equal(loaded.means_, model.means_)
    assert not _leftovers(tmp_path)
    model_io.save_model(path, model)  # and a later save replaces it as usual
    assert dgmm.load_model(path).n_iter_ == model.n_iter_


def test_numpy_integer_random_state_is_kept(tmp_path):
    model, _ = _fitted("spherical")
    model.random_state = np.int64(5)
    model_io.save_model(tmp_path / "m", model)
    assert dgmm.load_model(tmp_path / "m").random_state == 5
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["settings"]["random_state"] == 5
