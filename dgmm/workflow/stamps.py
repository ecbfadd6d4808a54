"""Stamps: what makes an output up to date. Every output of a run (the model, the
predictions, the score, the report) carries the settings hash, the data fingerprint, the
checksum of the ``warm_start_from`` model if any and the fitted model's checksum; a step
whose output holds a matching stamp is skipped."""
from __future__ import annotations

import hashlib
import json
import os

from ..data.model_io import read_model_meta
from ..data.publish import join, read_json, write_json
from ..errors import ConfigError, DataError
from .schema import Workflow

__all__ = ["STAMP_FILE", "params_checksum", "write_stamp", "stamp_matches", "model_matches",
           "warm_start_checksum"]

STAMP_FILE = "_dgmm_stamp.json"


def params_checksum(params) -> str:
    """sha256 (hex) of a ``GMMParams``' arrays, by name."""
    digest = hashlib.sha256()
    for name, arr in params.to_arrays().items():
        digest.update(name.encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def write_stamp(path: str, stamp: dict, storage_options: dict) -> None:
    """The stamp of a finished output (local path or fsspec URL)."""
    write_json(join(path, STAMP_FILE), stamp, storage_options)


def stamp_matches(path: str | None, expected: dict, storage_options: dict) -> bool:
    if path is None:
        return False
    stamp = read_json(join(path, STAMP_FILE), storage_options)
    return isinstance(stamp, dict) and all(stamp.get(k) == v for k, v in expected.items())


def model_matches(path: str | None, expected: dict, storage_options: dict) -> bool:
    if path is None:
        return False
    try:
        meta = read_model_meta(path, storage_options)
    except DataError:
        return False
    return all(meta.get(key) == value for key, value in expected.items())


def warm_start_checksum(workflow: Workflow) -> str:
    """sha256 of the ``warm_start_from`` model's array checksums and saved state."""
    path = workflow.model.warm_start_from
    if workflow.outputs.model is not None and (
            os.path.abspath(path) == os.path.abspath(workflow.outputs.model)):
        raise ConfigError(
            f"model.warm_start_from and outputs.model are both {path!r}: an update writes "
            "a new model next to the one it continues. Give outputs.model a path of its "
            "own (for example one directory per day)."
        )
    meta = read_model_meta(path)
    if meta.get("stepwise") is None:
        raise ConfigError(
            f"model.warm_start_from={path!r}: that model was not fitted by mini-batch EM "
            "(or stochastic variational inference), so it has no running statistics to "
            "continue. Point warm_start_from at a model written by a workflow with "
            "model.algorithm: minibatch."
        )
    text = json.dumps({"arrays": meta["arrays"], "stepwise": meta["stepwise"]},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
