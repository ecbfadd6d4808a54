"""The model file: a fitted mixture saved as plain arrays plus JSON metadata.

A model is a directory::

    model/                       (any name; ``.dgmm`` suffix is customary)
      model.json                 format, dgmm version, covariance type, shapes,
                                 estimator settings, n_iter, converged, lower bound,
                                 history, data fingerprint, settings hash, and the
                                 sha256 of each array file
      weights.npy                (K,)
      means.npy                  (K, d)
      covariances.npy            per covariance type (see dgmm.core.families)
      precisions_cholesky.npy    same shape as covariances
      state.*.npy                a mini-batch fit's state only: the arrays of its
                                 ``StepwiseState`` record (running statistics), its
                                 scalars (step counter, passes) in ``model.json``
                                 under ``stepwise``
      posterior.*.npy, prior.*.npy   a variational Bayesian mixture only: the arrays
                                 of its posterior (``VariationalParams``) and prior,
                                 their scalars in ``model.json`` under ``variational``
                                 (the four arrays above are then the posterior's
                                 expected weights, means and covariances)

Every array is a standard ``.npy`` file, readable by NumPy (and by any language with an
npy reader); ``model.json`` is the manifest. The directory is published atomically
(:mod:`dgmm.data.publish`: renamed into place on a local disk; on an object store written
under a new version prefix named by ``_dgmm_current.json``), so a crash never leaves a
half-written model that looks whole. ``load_model`` checks the checksums and returns a
fitted ``GaussianMixture`` (a ``MiniBatchGaussianMixture`` whose ``partial_fit``
continues, for a model with a state; a ``BayesianGaussianMixture`` for a model with a
posterior).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time

import numpy as np

from .._version import __version__
from ..core import model_parameters
from ..core.params import GMMParams
from ..core.variational import VariationalParams, VariationalPrior
from ..errors import DataError
from .files import is_url
from .publish import join, publish_directory, read_bytes, resolve, write_bytes
from .redact import redact

FORMAT = "dgmm-model"
FORMAT_VERSION = 1
ARRAYS = ("weights", "means", "covariances", "precisions_cholesky")
#: the estimator parameters recorded in ``model.json`` (declared ``saved``)
SETTINGS: tuple[str, ...] = model_parameters.SAVED


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _finite_or_none(value) -> float | None:
    """JSON has no infinities: the lower bound of a model never iterated is null."""
    value = float(value)
    return value if np.isfinite(value) else None


def _entries(files: dict[str, bytes], arrays: dict) -> dict:
    """The manifest entries of array files: file name, shape, sha256."""
    return {name: {"file": f"{name}.npy",
                   "shape": list(np.shape(arrays[name.removeprefix("state.")])),
                   "sha256": hashlib.sha256(blob).hexdigest()}
            for name, blob in files.items()}


def save_model(path, model, *, data_fingerprint: str | None = None,
               settings_hash: str | None = None, extra: dict | None = None,
               storage_options: dict | None = None) -> str:
    """Write a fitted ``GaussianMixture`` to the directory ``path`` (a local path or an
    fsspec URL); returns the path.

    An existing model at ``path`` is replaced only once the new one is complete
    (:func:`dgmm.data.publish.publish_directory`).
    """
    path = os.fspath(path)
    path = path if is_url(path) else os.path.abspath(path)
    params: GMMParams = model.params_
    files = {name: _npy_bytes(arr) for name, arr in params.to_arrays().items()}
    state = getattr(model, "state_", None)
    stepwise = None
    if state is not None:
        state_arrays, state_meta = state.to_record()
        state_files = {f"state.{name}": _npy_bytes(arr) for name, arr in state_arrays.items()}
        stepwise = {"record": state_meta, "arrays": _entries(state_files, state_arrays)}
    settings = {}
    for name in SETTINGS:
        if not hasattr(model, name):  # e.g. batch_size of a GaussianMixture
            continue
        value = getattr(model, name)
        if isinstance(value, np.generic):
            value = value.item()
        settings[name] = value if isinstance(value, (int, float, str, type(None))) else repr(value)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dgmm_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "covariance_type": params.covariance_type,
        "n_components": params.n_components,
        "n_features": params.n_features,
        "settings": settings,
        "n_iter": int(model.n_iter_),
        "converged": bool(model.converged_),
        "lower_bound": _finite_or_none(model.lower_bound_),
        "lower_bounds": [float(v) for v in model.lower_bounds_],
        "n_nonfinite": int(getattr(model, "n_nonfinite_", 0)),
        "data_fingerprint": data_fingerprint,
        "settings_hash": settings_hash,
        "arrays": _entries(files, params.to_arrays()),
        **(extra or {}),
    }
    if stepwise is not None:
        meta["estimator"] = type(model).__name__
        meta["stepwise"] = stepwise
        files.update(state_files)
    posterior = getattr(model, "posterior_", None)
    if posterior is not None:
        arrays = {**{f"posterior.{k}": v for k, v in posterior.to_arrays().items()},
                  **model.prior_.to_arrays()}
        extra_files = {name: _npy_bytes(arr) for name, arr in arrays.items()}
        meta["estimator"] = type(model).__name__
        kind = getattr(model, "kind_", None)  # after partial_fit: the data's weight n
        meta["variational"] = {"prior": model.prior_.to_meta(),
                               "n": None if kind is None else kind.n,
                               "arrays": _entries(extra_files, arrays)}
        files.update(extra_files)
    manifest = json.dumps(meta, indent=2, allow_nan=True).encode()
    with publish_directory(path, storage_options) as target:
        for name, blob in files.items():
            write_bytes(join(target, f"{name}.npy"), blob, storage_options)
        write_bytes(join(target, "model.json"), manifest, storage_options)
    return path


def amend_model_meta(path, entries: dict, storage_options: dict | None = None) -> None:
    """Add ``entries`` to the ``model.json`` of the saved model at ``path`` (e.g. the
    summary of its training data), replacing the manifest atomically; the arrays and their
    checksums are untouched."""
    meta, location = _read_manifest(path, storage_options)
    meta.update(entries)
    write_bytes(join(location, "model.json"),
                json.dumps(meta, indent=2, allow_nan=True).encode(), storage_options)


def _model_location(path, storage_options) -> str:
    path = os.fspath(path)
    return resolve(path if is_url(path) else os.path.abspath(path), storage_options)


def read_model_meta(path, storage_options: dict | None = None) -> dict:
    """The ``model.json`` manifest of a saved model (raises ``DataError`` if unreadable)."""
    meta, _ = _read_manifest(path, storage_options)
    return meta


def _read_manifest(path, storage_options) -> tuple[dict, str]:
    location = _model_location(path, storage_options)
    manifest = join(location, "model.json")
    try:
        blob = read_bytes(manifest, storage_options)
    except OSError as exc:
        raise DataError(redact(f"The model manifest {manifest} cannot be read ({exc}). "
                               "Check the storage and re-run.")) from None
    if blob is None:
        raise DataError(
            f"No dgmm model at {path!s}: {manifest} does not exist. Give the directory "
            "written by a workflow's outputs.model (or by dgmm.data.save_model)."
        )
    try:
        meta = json.loads(blob)
    except ValueError as exc:
        raise DataError(f"The model manifest {manifest} cannot be read ({exc}). "
                        "Re-run the fit to write the model again.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(
            meta.get("arrays"), dict):
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise DataError(f"{manifest} is not a dgmm model manifest (format {fmt!r}).")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(f"The model at {path!s} has format version {meta['format_version']},"
                        f" newer than this dgmm reads ({FORMAT_VERSION}). Upgrade dgmm.")
    return meta, location


def _read_arrays(path, location: str, entries: dict, names,
                 storage_options: dict | None) -> dict[str, np.ndarray]:
    arrays = {}
    for name in names:
        entry = entries.get(name)
        if not isinstance(entry, dict) or "file" not in entry or "sha256" not in entry:
            raise DataError(f"The model manifest in {path!s} has no valid entry for "
                            f"{name!r}; re-run the fit to write the model again.")
        file = join(location, entry["file"])
        try:
            blob = read_bytes(file, storage_options)
        except OSError as exc:
            raise DataError(redact(f"The model file {file} cannot be read ({exc}).")) from None
        if blob is None:
            raise DataError(f"The model file {file} cannot be read (it does not exist).")
        if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
            raise DataError(f"The model file {file} does not match its checksum in "
                            "model.json: it is corrupt. Re-run the fit to write it again.")
        arrays[name] = np.load(io.BytesIO(blob), allow_pickle=False)
    return arrays


def load_params(path, storage_options: dict | None = None) -> tuple[GMMParams, dict]:
    """(parameters, manifest) of a saved model, checksums verified."""
    meta, location = _read_manifest(path, storage_options)
    arrays = _read_arrays(path, location, meta["arrays"], ARRAYS, storage_options)
    return GMMParams(**arrays, covariance_type=meta["covariance_type"]), meta


def load_state_record(path, meta: dict, storage_options: dict | None = None
                      ) -> tuple[dict[str, np.ndarray], dict] | None:
    """(arrays, metadata) of the ``StepwiseState`` saved with a mini-batch model, checksums
    verified (``StepwiseState.from_record`` takes them); None for a model without one."""
    found = _section_arrays(path, meta, "stepwise", "record", storage_options)
    if found is None:
        return None
    arrays, stepwise = found
    return {name.removeprefix("state."): arr for name, arr in arrays.items()}, stepwise["record"]


def _section_arrays(path, meta: dict, section: str, required: str,
                    storage_options: dict | None) -> tuple[dict, dict] | None:
    """(arrays, the manifest's ``section``) of an optional section of ``model.json`` that
    lists array files under ``arrays`` and holds a dict under ``required``, checksums
    verified; None when the manifest has no such section."""
    entry = meta.get(section)
    if entry is None:
        return None
    entries = entry.get("arrays") if isinstance(entry, dict) else None
    if not isinstance(entries, dict) or not isinstance(entry.get(required), dict):
        raise DataError(f"The model manifest in {path!s} has an unreadable {section!r} "
                        "entry; re-run the fit to write the model again.")
    location = _model_location(path, storage_options)
    return _read_arrays(path, location, entries, list(entries), storage_options), entry


def load_variational(path, meta: dict, storage_options: dict | None = None
                     ) -> tuple[VariationalParams, VariationalPrior] | None:
    """(posterior, prior) saved with a variational Bayesian mixture, checksums verified;
    None for a model without them."""
    found = _section_arrays(path, meta, "variational", "prior", storage_options)
    if found is None:
        return None
    arrays, variational = found
    covariance_type = meta["covariance_type"]
    prior = VariationalPrior.from_record(covariance_type, arrays, variational["prior"])
    posterior = VariationalParams.from_arrays(
        covariance_type, {name.removeprefix("posterior."): arr for name, arr in arrays.items()
                          if name.startswith("posterior.")})
    return posterior, prior
