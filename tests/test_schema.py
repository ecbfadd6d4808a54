"""The workflow schema on its own: defaults, checks across keys, sizes; no file is read."""
from __future__ import annotations

import builtins
import inspect
import os
import pathlib
import re

import numpy as np
import pytest
from helpers import REPO
from pydantic import ValidationError

from dgmm.core.families import SKLEARN_TYPES as COVARIANCE_TYPES
from dgmm.core.families import family
from dgmm.engine.passes import DEFAULT_CHUNK_BYTES, as_row_chunked
from dgmm.errors import ConfigError
from dgmm.workflow.cluster_config import (
    AdaptiveConfig,
    AddressClusterConfig,
    LocalClusterConfig,
    SlurmClusterConfig,
)
from dgmm.workflow.model_config import ModelConfig
from dgmm.workflow.schema import DataConfig, OutputsConfig, Workflow
from dgmm.workflow.validators import CROSS_FIELD_ERROR

# ------------------------------------------------------------ defaults mirror estimators


def test_model_defaults_are_scikit_learns():
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    ours = ModelConfig().model_dump()
    theirs = SkGaussianMixture().get_params()
    assert set(theirs) <= set(ours)  # every scikit-learn parameter, same name
    for name in theirs:
        assert ours[name] == theirs[name], name


def test_model_section_has_exactly_the_estimator_parameters():
    from dgmm import BayesianGaussianMixture, GaussianMixture, MiniBatchGaussianMixture

    signature = inspect.signature(GaussianMixture.__init__).parameters
    estimator = {name for name in signature if name != "self"}
    kwargs = ModelConfig().estimator_kwargs()
    assert set(kwargs) == estimator - {"client", "nonfinite"}
    for name, value in kwargs.items():
        assert value == signature[name].default, name
    minibatch_signature = inspect.signature(MiniBatchGaussianMixture.__init__).parameters
    minibatch = ModelConfig(algorithm="minibatch").estimator_kwargs()
    assert set(minibatch) == set(minibatch_signature) - {"self", "client", "nonfinite"}
    for name, value in minibatch.items():
        assert value == minibatch_signature[name].default, name
    bayesian_signature = inspect.signature(BayesianGaussianMixture.__init__).parameters
    bayesian = ModelConfig(kind="variational_bayes").estimator_kwargs()
    # the online parameters (partial_fit) are not those of a batch workflow
    online = {"batch_size", "step_power", "wave_width"}
    # init_size: a batch variational workflow keeps scikit-learn's start (the estimator's
    # default)
    assert set(bayesian) == (set(bayesian_signature) - {"self", "client", "nonfinite"}
                             - online - {"init_size"})
    for name, value in bayesian.items():
        assert value == bayesian_signature[name].default, name
    assert set(ModelConfig.model_fields) == set(minibatch) | set(bayesian) | {
        "require_convergence", "algorithm", "warm_start_from", "kind"}


def test_the_prior_keys_go_with_variational_bayes_only():
    model = ModelConfig(kind="variational_bayes", n_components=5, mean_prior=[0.0, 1.0],
                        covariance_prior=2.0, weight_concentration_prior=0.01)
    kwargs = model.estimator_kwargs()
    assert kwargs["covariance_prior"] == 2.0 and kwargs["mean_prior"].dtype == np.float64
    assert "weights_init" not in kwargs
    assert ModelConfig().settings_payload() == ModelConfig(
        weight_concentration_prior_type="dirichlet_process").settings_payload()
    assert "kind" not in ModelConfig().settings_payload()
    assert model.settings_payload()["weight_concentration_prior"] == 0.01
    with pytest.raises(ValidationError, match="applies to kind 'variational_bayes' only, but "
                       "model.kind is 'maximum_likelihood'"):
        ModelConfig(mean_precision_prior=2.0)
    with pytest.raises(ValidationError, match="applies to kind 'maximum_likelihood' only"):
        ModelConfig(kind="variational_bayes", means_init=[[0.0]])
    online = ModelConfig(kind="variational_bayes", algorithm="minibatch", batch_size=500)
    assert "polish_iter" not in online.estimator_kwargs()
    assert online.estimator_kwargs()["batch_size"] == 500
    with pytest.raises(ValidationError, match="the polish runs maximum-likelihood EM"):
        ModelConfig(kind="variational_bayes", algorithm="minibatch", polish_iter=2)
    # init_size: the online start's sample; batch variational inference starts on all rows
    searched = ModelConfig(kind="variational_bayes", algorithm="minibatch", init_size=0)
    assert searched.estimator_kwargs()["init_size"] == 0
    assert searched.settings_payload()["init_size"] == 0
    assert "init_size" not in model.estimator_kwargs()
    assert "init_size" not in model.settings_payload()
    with pytest.raises(ValidationError, match="batch variational inference starts on all "
                                              "rows"):
        ModelConfig(kind="variational_bayes", init_size=1000)
    with pytest.raises(ValidationError, match="covariance_prior must be a positive number"):
        ModelConfig(kind="variational_bayes", covariance_prior=-1.0)


def test_inline_init_arrays_become_float64_arrays():
    model = ModelConfig(n_components=2, weights_init=[1, 3], means_init=np.zeros((2, 3)))
    kwargs = model.estimator_kwargs()
    assert kwargs["weights_init"].dtype == np.float64
    np.testing.assert_array_equal(kwargs["weights_init"], [1.0, 3.0])
    assert kwargs["means_init"].shape == (2, 3) and kwargs["precisions_init"] is None


def test_an_init_file_must_be_read_before_the_estimator_gets_it():
    model = ModelConfig(n_components=2, means_init="m.npy")
    assert model.means_init == "m.npy"  # kept as written
    with pytest.raises(ConfigError, match=r"model\.means_init: .*'m\.npy' has not been read.*"
                       r"load_workflow"):
        model.estimator_kwargs()


# ------------------------------------------------------------------ checks across keys


def _cross_field_error(model_class, **values):
    with pytest.raises(ValidationError) as info:
        model_class(**values)
    (error,) = info.value.errors()
    assert error["type"] == CROSS_FIELD_ERROR
    return error["ctx"]


CROSS_FIELD = [
    (DataConfig, {"source": "zarr", "path": "x", "columns": ["a"]}, "columns", ["a"],
     r"columns applies to parquet sources only, but data\.source is 'zarr'"),
    (DataConfig, {"source": "parquet", "path": "x", "array_path": "g/a"}, "array_path", "g/a",
     r"array_path applies to zarr sources only"),
    (DataConfig, {"source": "npy", "path": "s3://b/x.npy"}, "path", "s3://b/x.npy",
     r"an npy source must be a local file"),
    (DataConfig, {"source": "npy", "path": "x.npy", "storage_options": {"anon": True}},
     "storage_options", {"anon": True}, r"npy sources are local files"),
    (DataConfig, {"source": "synthetic", "path": "x.zarr"}, "synthetic", None,
     r"no data\.synthetic block"),
    (DataConfig, {"source": "zarr", "path": "x", "synthetic": {"rows": 10}}, "synthetic",
     {"rows": 10}, r"applies when data\.source is 'synthetic', but it is 'zarr'"),
    (ModelConfig, {"n_components": 2, "weights_init": [1.0]}, "weights_init", [1.0],
     r"has 1 weights but n_components is 2"),
    (ModelConfig, {"n_components": 2, "means_init": [[1.0], [2.0], [3.0]]}, "means_init",
     [[1.0], [2.0], [3.0]], r"has 3 rows but n_components is 2"),
    (AddressClusterConfig, {}, "address_env", None, r"a scheduler address is needed"),
    (AddressClusterConfig, {"address": "tcp://h:1", "address_env": "X"}, "address_env", "X",
     r"give address or address_env, not both"),
    (AdaptiveConfig, {"minimum": 3, "maximum": 2}, "maximum", 2, r"must be >= minimum \(3\)"),
    (SlurmClusterConfig, {"cores": 4, "memory": "4GB", "processes": 8}, "processes", 8,
     r"must be <= cores \(4\)"),
    (SlurmClusterConfig, {"cores": 4, "memory": "4GB", "jobs": 1, "adaptive": {"maximum": 2}},
     "adaptive", {"minimum": 0, "maximum": 2}, r"give either jobs .* or adaptive"),
    (OutputsConfig, {"predictions": "out.csv"}, "predictions_format", None,
     r"cannot tell the format of outputs\.predictions 'out\.csv'"),
    (Workflow, {"data": {"source": "zarr", "path": "x"}, "steps": ["fit", "report"]}, "steps",
     ["fit", "report"], r"step 'report' writes to outputs\.report, which is not set"),
    (Workflow, {"data": {"source": "zarr", "path": "x"}, "steps": ["score"]}, "steps",
     ["score"], r"has no 'fit' step, so the model is read from outputs\.model"),
]


@pytest.mark.parametrize("model_class, values, key, found, problem", CROSS_FIELD,
                         ids=[f"{c.__name__}.{k}" for c, _, k, _, _ in CROSS_FIELD])
def test_checks_across_keys_name_the_key_and_the_value_found(model_class, values, key, found,
                                                             problem):
    ctx = _cross_field_error(model_class, **values)
    assert ctx["key"] == key and ctx["found"] == found
    assert re.search(problem, ctx["problem"]), ctx["problem"]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precisions_init_shape_follows_the_covariance_family(covariance_type):
    k, d = 3, 2
    good = np.ones(family(covariance_type).covariance_shape(k, d)).tolist()
    assert ModelConfig(n_components=k, covariance_type=covariance_type,
                       precisions_init=good).precisions_init == good
    too_deep = [good]
    ctx = _cross_field_error(ModelConfig, n_components=k, covariance_type=covariance_type,
                             precisions_init=too_deep)
    assert f"must be nested {family(covariance_type).depth} deep" in ctx["problem"]
    one_less = good[:-1]
    per_component = family(covariance_type).covariance_shape(k, d)[0] == k
    if per_component:
        ctx = _cross_field_error(ModelConfig, n_components=k, covariance_type=covariance_type,
                                 precisions_init=one_less)
        assert ctx["problem"].startswith(f"has {k - 1} entries but n_components is {k}")
    else:  # tied: one (d, d) matrix whatever the number of components
        ModelConfig(n_components=k + 1, covariance_type=covariance_type, precisions_init=good)


def test_predictions_format_comes_from_the_suffix():
    assert OutputsConfig(predictions="p.zarr").predictions_format == "zarr"
    assert OutputsConfig(predictions="s3://b/p.parquet").predictions_format == "parquet"
    outputs = OutputsConfig(predictions="p.data", predictions_format="zarr")
    assert outputs.predictions_format == "zarr"
    assert OutputsConfig().predictions_format is None


# ------------------------------------------------------------ validation is pure


FULL_WORKFLOW = {
    "name": "pure",
    "data": {"source": "synthetic", "path": "data/x.zarr", "synthetic": {"rows": 100}},
    "model": {"n_components": 2, "means_init": "init/means.npy", "weights_init": [0.5, 0.5]},
    "cluster": {"kind": "slurm", "cores": 4, "memory": "8GiB", "local_directory": "scratch"},
    "checkpoint": {"dir": "runs/ck"},
    "outputs": {"model": "runs/model", "predictions": "runs/p.parquet", "report": "~/report"},
    "steps": ["fit", "predict", "report"],
}


def test_validation_reads_no_file_and_no_working_directory(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("validation touched the file system or the working directory")

    monkeypatch.chdir(tmp_path)
    for target, name in [(builtins, "open"), (os, "getcwd"), (os, "stat"), (os, "listdir"),
                         (os, "scandir"), (pathlib.Path, "cwd"), (pathlib.Path, "is_file")]:
        monkeypatch.setattr(target, name, refuse)
    workflow = Workflow.model_validate(FULL_WORKFLOW)
    monkeypatch.undo()
    # paths are kept exactly as written: making them absolute is a later, explicit step
    assert workflow.data.path == "data/x.zarr"
    assert workflow.model.means_init == "init/means.npy"
    assert workflow.checkpoint.dir == "runs/ck"
    assert workflow.outputs.report == "~/report"
    assert workflow.cluster.local_directory == "scratch"


def test_a_workflow_built_in_code_needs_a_profile_not_a_name():
    with pytest.raises(ValidationError, match=r"the profile name 'local' is looked up when a "
                       r"workflow file is loaded .*load_cluster_profile\(name\)"):
        Workflow(data={"source": "zarr", "path": "x"}, cluster="local", steps=["fit"])
    workflow = Workflow(data={"source": "zarr", "path": "x"}, steps=["fit"],
                        cluster={"kind": "local", "n_workers": 2})
    assert workflow.cluster == LocalClusterConfig(n_workers=2)
    assert workflow.source_file is None


def test_an_empty_path_is_refused():
    with pytest.raises(ValidationError, match=r"must be a non-empty path"):
        DataConfig(source="zarr", path="")
    with pytest.raises(ValidationError, match=r"must be a non-empty path"):
        OutputsConfig(model="")


# ---------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    "text, expected",
    [(123, 123), ("64MiB", 64 * 2**20), ("64 MB", 64 * 10**6), ("1.5GiB", 3 * 2**29),
     ("1e6", 10**6), ("2kB", 2000), ("16GiB", 16 * 2**30), ("7", 7), (4.0, 4)],
)  # fmt: skip
def test_sizes_are_read_as_dask_reads_them(text, expected):
    from dask.utils import parse_bytes

    assert DataConfig(source="zarr", path="x", chunk_bytes=text).chunk_bytes == expected
    assert expected == parse_bytes(text)


@pytest.mark.parametrize("value", ["lots", "12XB", "-5MB", True, 1.5, 0, "0B", [1]])
def test_a_size_that_is_not_a_positive_number_of_bytes_is_refused(value):
    with pytest.raises(ValidationError, match=r"must be a positive size: a number of bytes or "
                       r"a number with a unit such as '64MiB'"):
        DataConfig(source="zarr", path="x", chunk_bytes=value)


def test_memory_sizes_are_kept_as_written_once_checked():
    assert LocalClusterConfig(memory_limit="1.5GiB").memory_limit == "1.5GiB"
    assert LocalClusterConfig(memory_limit=2**30).memory_limit == 2**30
    with pytest.raises(ValidationError, match=r"must be a positive size"):
        SlurmClusterConfig(cores=1, memory="-1GB")


def test_one_default_chunk_size_for_readers_schema_and_engine():
    from dgmm.data import readers

    # unset in a workflow: the runner takes the task-size rule of dgmm.engine.tasks for its
    # cluster, and the readers' default without one
    unset = DataConfig(source="zarr", path="x")
    assert unset.chunk_bytes is None
    assert unset.open_kwargs()["target_chunk_bytes"] == DEFAULT_CHUNK_BYTES
    for name in ("open_zarr", "open_parquet", "open_npy", "from_array"):
        default = inspect.signature(getattr(readers, name)).parameters["target_chunk_bytes"]
        assert default.default == DEFAULT_CHUNK_BYTES, name
    X = np.zeros((DEFAULT_CHUNK_BYTES // 16 * 3, 2))  # 16-byte rows: three default chunks
    assert as_row_chunked(X).numblocks == (3, 1)
    # written once: nowhere else in the package is the number spelt out
    spelt = [str(p.relative_to(REPO)) for p in (REPO / "dgmm").rglob("*.py")
             if any(s in p.read_text() for s in ("64 * 2**20", "64 << 20", "2**26", "67108864"))]
    assert spelt == ["dgmm/engine/passes.py"]
