"""Loading workflow files: shipped files fully validated, every error message, paths, hashing."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import MINIMAL_WORKFLOW as MINIMAL
from helpers import REPO
from helpers import write_file as write

from dgmm.errors import ConfigError
from dgmm.workflow.cluster_config import (
    AddressClusterConfig,
    LocalClusterConfig,
    PBSClusterConfig,
    SlurmClusterConfig,
)
from dgmm.workflow.loading import (
    load_cluster_profile,
    load_workflow,
    read_init_files,
    resolve_paths,
)
from dgmm.workflow.schema import Workflow

SHIPPED_WORKFLOWS = sorted((REPO / "workflows").glob("*.yaml"))
SHIPPED_PROFILES = sorted((REPO / "configs").glob("*.yaml"))


# ----------------------------------------------------------------------- shipped files


def test_the_required_files_are_shipped():
    names = {p.name for p in SHIPPED_WORKFLOWS}
    assert {"quickstart.yaml", "fit_zarr.yaml", "fit_parquet.yaml"} <= names
    assert {p.stem for p in SHIPPED_PROFILES} >= {"local", "address", "slurm", "pbs"}


@pytest.mark.parametrize("path", SHIPPED_WORKFLOWS, ids=lambda p: p.name)
def test_shipped_workflows_validate(path, monkeypatch):
    monkeypatch.chdir(REPO)
    workflow = load_workflow(path)
    assert isinstance(workflow, Workflow)
    assert workflow.source_file == str(path)
    assert workflow.name == path.stem
    assert workflow.steps[0] == "fit"
    assert os.path.isabs(workflow.data.path)
    assert workflow.checkpoint.dir.startswith(str(REPO / "runs"))
    for output in (workflow.outputs.model, workflow.outputs.predictions, workflow.outputs.report):
        assert output.startswith(str(REPO / "runs" / path.stem))
    assert workflow.outputs.predictions_format in ("zarr", "parquet")
    # cluster: local comes from configs/local.yaml, which is the machine default
    assert workflow.cluster == load_cluster_profile(str(REPO / "configs" / "local.yaml"))
    assert len(workflow.settings_hash()) == 64
    again = Workflow.model_validate(workflow.model_dump())  # a fixed point of validation
    assert again.model_dump() == workflow.model_dump()


def test_quickstart_is_fully_validated_with_its_values(monkeypatch):
    """workflows/quickstart.yaml as the README runs it: every section checked."""
    monkeypatch.chdir(REPO)
    workflow = load_workflow(REPO / "workflows" / "quickstart.yaml")
    assert workflow.name == "quickstart"
    data = workflow.data
    assert data.source == "synthetic" and data.reader_kind == "zarr"
    assert data.path == str(REPO / "runs/quickstart/data.zarr")
    assert data.chunk_bytes == 2**20 and data.dtype == "float64"
    assert data.nonfinite == "raise" and data.persist == "auto"
    synthetic = data.synthetic
    assert (synthetic.rows, synthetic.features, synthetic.components) == (200_000, 2, 4)
    assert synthetic.covariance_type == "full" and synthetic.seed == 0
    assert synthetic.chunk_rows == 50_000 and synthetic.separation == 4.0
    model = workflow.model
    assert model.n_components == synthetic.components == 4
    assert model.covariance_type == "full" and model.init_params == "kmeans"
    assert (model.tol, model.max_iter, model.random_state) == (1e-4, 200, 0)
    assert workflow.cluster == LocalClusterConfig()  # configs/local.yaml: all from the machine
    assert workflow.checkpoint.dir == str(REPO / "runs/quickstart/checkpoints")
    assert (workflow.checkpoint.every, workflow.checkpoint.keep) == (1, 3)
    outputs = workflow.outputs
    assert outputs.model == str(REPO / "runs/quickstart/model")
    assert outputs.predictions == str(REPO / "runs/quickstart/predictions.zarr")
    assert outputs.predictions_format == "zarr"
    assert outputs.report == str(REPO / "runs/quickstart/report")
    assert workflow.steps == ["fit", "predict", "score", "report"]
    kwargs = workflow.estimator_kwargs()
    assert kwargs["n_components"] == 4 and kwargs["nonfinite"] == "raise"
    assert data.open_kwargs() == {"dtype": "float64", "target_chunk_bytes": 2**20,
                                  "array_path": None, "storage_options": {}}


def test_fit_zarr_and_fit_parquet_values(monkeypatch):
    monkeypatch.chdir(REPO)
    zarr = load_workflow(REPO / "workflows" / "fit_zarr.yaml")
    assert zarr.data.source == "zarr" and zarr.outputs.predictions_format == "zarr"
    parquet = load_workflow(REPO / "workflows" / "fit_parquet.yaml")
    assert parquet.data.source == "parquet" and parquet.data.columns
    assert parquet.outputs.predictions_format == "parquet"
    assert parquet.data.open_kwargs()["columns"] == parquet.data.columns


@pytest.mark.parametrize("path", SHIPPED_PROFILES, ids=lambda p: p.name)
def test_shipped_profiles_validate_by_path_and_by_name(path):
    by_path = load_cluster_profile(str(path))
    by_name = load_cluster_profile(path.stem, workflow_dir=REPO / "workflows")
    assert by_path == by_name
    assert by_path.kind == path.stem


def test_shipped_profile_values():
    address = load_cluster_profile("address", workflow_dir=REPO / "workflows")
    assert isinstance(address, AddressClusterConfig)
    assert address.address_env == "DGMM_SCHEDULER_ADDRESS" and address.address is None
    assert address.timeout == 30
    slurm = load_cluster_profile("slurm", workflow_dir=REPO / "workflows")
    assert isinstance(slurm, SlurmClusterConfig)
    assert (slurm.cores, slurm.memory, slurm.processes, slurm.jobs) == (16, "64GiB", 4, 4)
    assert (slurm.walltime, slurm.queue, slurm.account) == ("04:00:00", "compute", "myproject")
    assert slurm.adaptive is None and slurm.job_extra_directives == ["--constraint=cpu"]
    pbs = load_cluster_profile("pbs", workflow_dir=REPO / "workflows")
    assert isinstance(pbs, PBSClusterConfig)
    assert (pbs.cores, pbs.memory, pbs.processes, pbs.walltime) == (24, "96GB", 4, "02:00:00")
    assert (pbs.adaptive.minimum, pbs.adaptive.maximum) == (1, 8) and pbs.jobs is None
    local = load_cluster_profile("local", workflow_dir=REPO / "workflows")
    assert local.n_workers is None and local.memory_limit is None  # from the machine
    assert local.processes is True and local.dashboard_address == ":8787"


# ---------------------------------------------------------------------- init files


def test_estimator_kwargs_build_an_estimator_and_load_init_arrays(project):
    from dgmm import GaussianMixture

    means = np.array([[0.0, 1.0], [2.0, 3.0]])
    np.save(project / "means.npy", means)
    write(project, MINIMAL + """\
model:
  n_components: 2
  weights_init: [0.25, 0.75]
  means_init: means.npy
  precisions_init: [[1.0, 2.0], [3.0, 4.0]]
  covariance_type: diag
""")
    workflow = load_workflow("workflows/w.yaml")
    kwargs = workflow.estimator_kwargs()
    assert kwargs["nonfinite"] == "raise"
    np.testing.assert_array_equal(kwargs["means_init"], means)
    assert kwargs["weights_init"].dtype == np.float64
    assert kwargs["precisions_init"].shape == (2, 2)
    estimator = GaussianMixture(**kwargs)
    assert estimator.n_components == 2 and estimator.covariance_type == "diag"


def test_an_init_file_is_read_once_at_load(project):
    np.save(project / "m.npy", np.zeros((2, 2)))
    write(project, MINIMAL + "model: {n_components: 2, means_init: m.npy}\n")
    workflow = load_workflow("workflows/w.yaml")
    before = workflow.settings_hash()
    np.save(project / "m.npy", np.ones((2, 2)))  # changed after loading: not seen
    np.testing.assert_array_equal(workflow.estimator_kwargs()["means_init"], np.zeros((2, 2)))
    assert workflow.settings_hash() == before


def test_an_unreadable_init_file_is_a_config_error(project):
    write(project, MINIMAL + "model: {n_components: 2, means_init: missing.npy}\n")
    with pytest.raises(ConfigError, match=r"model\.means_init: cannot read the \.npy file "
                       r".*missing\.npy"):
        load_workflow("workflows/w.yaml")
    (project / "bad.npy").write_text("not an array")
    write(project, MINIMAL + "model: {n_components: 2, means_init: bad.npy}\n")
    with pytest.raises(ConfigError, match=r"model\.means_init: cannot read the \.npy file "
                       r".*bad\.npy"):
        load_workflow("workflows/w.yaml")


def test_resolve_paths_and_read_init_files_are_explicit_steps(tmp_path):
    np.save(tmp_path / "w.npy", np.array([0.5, 0.5]))
    built = Workflow(data={"source": "zarr", "path": "x.zarr"}, steps=["fit"],
                     model={"n_components": 2, "weights_init": "w.npy"},
                     checkpoint={"dir": "s3://bucket/ck"}, outputs={"model": "~/m"})
    resolved = resolve_paths(built, tmp_path)
    assert built.data.path == "x.zarr"  # the input is not changed
    assert resolved.data.path == str(tmp_path / "x.zarr")
    assert resolved.model.weights_init == str(tmp_path / "w.npy")
    assert resolved.checkpoint.dir == "s3://bucket/ck"
    assert resolved.outputs.model == os.path.expanduser("~/m")
    ready = read_init_files(resolved)
    np.testing.assert_array_equal(ready.estimator_kwargs()["weights_init"], [0.5, 0.5])
    with pytest.raises(ConfigError, match=r"has not been read"):
        resolved.estimator_kwargs()


# -------------------------------------------------------------------- file-level errors


def test_missing_file_names_the_path(project):
    with pytest.raises(ConfigError, match=r"workflow file 'nowhere/w\.yaml' does not exist"):
        load_workflow("nowhere/w.yaml")


def test_yaml_syntax_error_gives_file_and_line(project):
    write(project, "data:\n  source: zarr\n  path: [unclosed\nsteps: [fit]\n")
    with pytest.raises(ConfigError,
                       match=r"workflows/w\.yaml:4:\d+: invalid YAML in workflow file"):
        load_workflow("workflows/w.yaml")


def test_a_key_given_twice_is_refused_with_both_lines(project):
    write(project, MINIMAL + "model:\n  n_components: 2\n  n_components: 3\n")
    with pytest.raises(ConfigError,
                       match=r"w\.yaml:7:\d+: .*'n_components' appears twice .*line 6"):
        load_workflow("workflows/w.yaml")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"is empty; it must be a YAML mapping"),
        ("- data\n- model\n", r"holds a YAML list, not a mapping"),
    ],
)
def test_a_file_that_is_not_a_mapping(project, text, message):
    write(project, text)
    with pytest.raises(ConfigError, match=message):
        load_workflow("workflows/w.yaml")


# ------------------------------------------------------------------- validation errors


def test_unknown_key_names_section_allowed_keys_and_the_closest(project):
    write(project, MINIMAL + "model:\n  n_compnents: 3\n")
    with pytest.raises(ConfigError) as info:
        load_workflow("workflows/w.yaml")
    message = str(info.value)
    assert "workflows/w.yaml:6: model.n_compnents: found 3; unknown key 'n_compnents' in " \
           "section 'model'; allowed keys: algorithm, batch_size, covariance_prior, " \
           "covariance_type, degrees_of_freedom_prior, init_params," in message
    assert "(did you mean 'n_components'?)" in message
    assert "dgmm validate workflows/w.yaml" in message


def test_unknown_top_level_key(project):
    write(project, MINIMAL + "modle: {}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'modle' at the top level.*did you mean "
                       r"'model'"):
        load_workflow("workflows/w.yaml")


BAD_VALUES = [
    ("model: {n_components: 0}",
     r"w\.yaml:5: model\.n_components: found 0; must be greater than or equal to 1"),
    ("model: {covariance_type: fulll}",
     r"model\.covariance_type: found 'fulll'; must be 'full', 'tied', 'diag', 'spherical'"),
    ("model: {init_params: kmedoids}",
     r"model\.init_params: found 'kmedoids'; must be 'kmeans', 'k-means\+\+', 'random' or "
     r"'random_from_data'"),
    ("model: {tol: -1}", r"model\.tol: found -1; must be greater than or equal to 0"),
    ("model: {reg_covar: abc}", r"model\.reg_covar: found 'abc'; must be a valid number"),
    ("model: {max_iter: 2.5}", r"model\.max_iter: found 2\.5; must be a valid integer"),
    ("model: {random_state: -1}",
     r"model\.random_state: found -1; must be greater than or equal to 0"),
    ("model: {split_every: 1}", r"model\.split_every: found 1; must be greater than or equal to 2"),
    ("model: {warm_start: maybe}", r"model\.warm_start: found 'maybe'; must be a valid boolean"),
    ("model: {n_components: 2, weights_init: [1.0]}",
     r"model\.weights_init: found \[1\.0\]; has 1 weights but n_components is 2"),
    ("model: {n_components: 2, means_init: [1.0, 2.0]}",
     r"model\.means_init: .*must be a list of n_components rows"),
    ("model: {n_components: 1, means_init: [[1, x]]}",
     r"model\.means_init: .*found the element 'x'"),
    ("model: {covariance_type: diag, precisions_init: [[[1]]]}",
     r"model\.precisions_init: .*must be nested 2 deep for covariance_type 'diag'"),
    ("checkpoint: {every: 0}", r"checkpoint\.every: found 0; must be greater than or equal to 1"),
    ("checkpoint: {keep: 0}", r"checkpoint\.keep: found 0; must be greater than or equal to 1"),
    ("outputs: {predictions: out.csv}",
     r"outputs\.predictions_format: .*cannot tell the format of outputs\.predictions .*out\.csv"),
    ("outputs: {predictions_format: hdf5}",
     r"outputs\.predictions_format: found 'hdf5'; must be 'zarr' or 'parquet'"),
    ("cluster: {kind: local, n_workers: 0}",
     r"cluster\.n_workers: found 0; must be greater than or equal to 1"),
    ("cluster: {kind: local, memory_limit: lots}",
     r"cluster\.memory_limit: found 'lots'; must be a positive size"),
    ("cluster: {kind: local, memory_limit: [1]}",
     r"cluster\.memory_limit: found \[1\]; must be a valid string or a valid integer\."),
    ("cluster: {n_workers: 2}",
     r"w\.yaml:5: cluster\.kind: missing; must be one of 'local', 'address', 'slurm', 'pbs'"),
    ("cluster: {kind: kubernetes}",
     r"cluster\.kind: found 'kubernetes'; must be one of 'local', 'address', 'slurm', 'pbs'"),
    ("cluster: {kind: address}",
     r"cluster\.address_env: found null; a scheduler address is needed: set address"),
    ("cluster: {kind: address, address: 'tcp://h:1', address_env: X}",
     r"cluster\.address_env: found 'X'; give address or address_env, not both"),
    ("cluster: {kind: slurm, memory: 4GB}", r"cluster\.cores: missing; this key is required"),
    ("cluster: {kind: slurm, cores: 4, memory: 4GB, walltime: soon}",
     r"cluster\.walltime: found 'soon'; must look like HH:MM:SS"),
    ("cluster: {kind: slurm, cores: 4, memory: 4GB, processes: 8}",
     r"cluster\.processes: found 8; must be <= cores \(4\)"),
    ("cluster: {kind: pbs, cores: 4, memory: 4GB, jobs: 2, adaptive: {maximum: 3}}",
     r"cluster\.adaptive: .*give either jobs .* or adaptive"),
    ("cluster: {kind: pbs, cores: 4, memory: 4GB, adaptive: {minimum: 3, maximum: 2}}",
     r"cluster\.adaptive\.maximum: found 2; must be >= minimum \(3\)"),
    ("cluster: {kind: pbs, cores: 4, memory: 4GB, adaptive: {minimum: 1}}",
     r"cluster\.adaptive\.maximum: missing"),
    ("cluster: {kind: slurm, cores: 4, memory: 4GB, qeue: long}",
     r"cluster\.qeue: found 'long'; unknown key 'qeue' in section 'cluster'.*did you mean 'queue'"),
]


@pytest.mark.parametrize("snippet, message", BAD_VALUES, ids=[m[:40] for _, m in BAD_VALUES])
def test_each_bad_value_names_key_value_and_what_is_allowed(project, snippet, message):
    write(project, MINIMAL + snippet + "\n")
    with pytest.raises(ConfigError, match=message):
        load_workflow("workflows/w.yaml")


def test_a_check_across_keys_gives_the_line_of_the_key_at_fault(project):
    write(project, MINIMAL + "cluster:\n  kind: slurm\n  cores: 4\n  memory: 4GB\n  processes: 8\n")
    with pytest.raises(ConfigError, match=r"\(1\) workflows/w\.yaml:9: cluster\.processes: found "
                       r"8; must be <= cores \(4\)"):
        load_workflow("workflows/w.yaml")


BAD_DATA = [
    ("source: hdf5\n  path: x",
     r"data\.source: found 'hdf5'; must be 'zarr', 'parquet', 'npy' or 'synthetic'"),
    ("source: zarr", r"w\.yaml:1: data\.path: missing; this key is required"),
    ("source: zarr\n  path: x\n  dtype: int8",
     r"data\.dtype: found 'int8'; must be 'float64' or 'float32'"),
    ("source: zarr\n  path: x\n  persist: maybe",
     r"data\.persist: found 'maybe'; must be 'auto', true or false"),
    ("source: zarr\n  path: x\n  nonfinite: ignore",
     r"data\.nonfinite: found 'ignore'; must be 'raise', 'drop' or 'marginalize'"),
    ("source: zarr\n  path: x\n  chunk_bytes: 12XB",
     r"data\.chunk_bytes: found '12XB'; must be a positive size"),
    ("source: zarr\n  path: x\n  chunk_bytes: 0",
     r"data\.chunk_bytes: found 0; must be a positive size"),
    ("source: zarr\n  path: x\n  columns: [a]",
     r"data\.columns: found \['a'\]; columns applies to parquet sources only, but data\.source is "
     r"'zarr'"),
    ("source: parquet\n  path: x\n  columns: []",
     r"data\.columns: found \[\]; must list at least one column"),
    ("source: parquet\n  path: x\n  columns: [a, a]",
     r"data\.columns: .*lists the columns \['a'\] more than once"),
    ("source: parquet\n  path: x\n  array_path: g/a",
     r"data\.array_path: found 'g/a'; array_path applies to zarr sources only"),
    ("source: npy\n  path: s3://b/x.npy",
     r"data\.path: found 's3://b/x\.npy'; an npy source must be a local file"),
    ("source: npy\n  path: x.npy\n  storage_options: {anon: true}",
     r"data\.storage_options: .*npy sources are local files"),
    ("source: synthetic\n  path: x.zarr",
     r"data\.synthetic: found null; data\.source is 'synthetic' but there is no data\.synthetic "
     r"block"),
    ("source: zarr\n  path: x\n  synthetic: {rows: 10}",
     r"data\.synthetic: .*applies when data\.source is 'synthetic', but it is 'zarr'"),
    ("source: synthetic\n  path: x\n  synthetic: {rows: 0}",
     r"data\.synthetic\.rows: found 0; must be greater than 0"),
    ("source: synthetic\n  path: x\n  synthetic: {covariance_type: full, rowz: 5}",
     r"unknown key 'rowz' in section 'data\.synthetic'"),
]


@pytest.mark.parametrize("data, message", BAD_DATA, ids=[m[:40] for _, m in BAD_DATA])
def test_each_bad_data_setting(project, data, message):
    write(project, f"data:\n  {data}\nsteps: [fit]\n")
    with pytest.raises(ConfigError, match=message):
        load_workflow("workflows/w.yaml")


BAD_STEPS = [
    ("steps: []",
     r"steps: found \[\]; must list at least one step from "
     r"\['fit', 'predict', 'score', 'report'\]"),
    ("steps: [fit, train]",
     r"steps\[1\]: found 'train'; must be 'fit', 'predict', 'score' or 'report'"),
    ("steps: [fit, fit]", r"steps: .*lists \['fit'\] more than once"),
    ("steps: [fit, predict]", r"step 'predict' writes to outputs\.predictions, which is not set"),
    ("steps: [fit, report]", r"step 'report' writes to outputs\.report, which is not set"),
    ("steps: [score]",
     r"has no 'fit' step, so the model is read from outputs\.model, which is not set"),
]


@pytest.mark.parametrize("steps, message", BAD_STEPS, ids=[s for s, _ in BAD_STEPS])
def test_each_bad_steps_setting(project, steps, message):
    write(project, f"data: {{source: zarr, path: x}}\n{steps}\n")
    with pytest.raises(ConfigError, match=message):
        load_workflow("workflows/w.yaml")


def test_default_steps_need_their_outputs(project):
    write(project, "data: {source: zarr, path: x}\n")
    with pytest.raises(ConfigError, match=r"step 'predict' writes to outputs\.predictions"):
        load_workflow("workflows/w.yaml")
    write(project, "data: {source: zarr, path: x}\noutputs: {predictions: p.zarr, report: r}\n")
    assert load_workflow("workflows/w.yaml").steps == ["fit", "predict", "report"]


def test_missing_data_section(project):
    write(project, "steps: [fit]\n")
    with pytest.raises(ConfigError, match=r"w\.yaml: data: missing; this key is required"):
        load_workflow("workflows/w.yaml")


def test_every_problem_is_reported_at_once_in_file_order(project):
    write(project, MINIMAL + "model:\n  n_components: 0\n  tol: -1\ncheckpoint: {keep: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_workflow("workflows/w.yaml")
    message = str(info.value)
    assert message.startswith("Invalid workflow file workflows/w.yaml (3 problems): (1) ")
    assert message.index("model.n_components") < message.index("model.tol") < message.index(
        "checkpoint.keep"
    )
    assert "\n" not in message  # one paragraph


# ---------------------------------------------------------------------- paths and cwd


def test_relative_paths_are_resolved_against_the_current_directory(project, tmp_path_factory,
                                                                  monkeypatch):
    write(project, """\
data: {source: zarr, path: data/x.zarr}
model: {means_init: m.npy}
checkpoint: {dir: runs/ck}
outputs: {model: runs/model, predictions: runs/p.parquet, report: runs/report}
steps: [fit, predict, report]
""")
    np.save(project / "m.npy", np.zeros((1, 2)))
    workflow = load_workflow("workflows/w.yaml")
    assert workflow.data.path == str(project / "data/x.zarr")
    assert workflow.model.means_init == str(project / "m.npy")
    assert workflow.checkpoint.dir == str(project / "runs/ck")
    assert workflow.outputs.model == str(project / "runs/model")
    assert workflow.outputs.predictions == str(project / "runs/p.parquet")
    assert workflow.outputs.report == str(project / "runs/report")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.chdir(elsewhere)
    np.save(elsewhere / "m.npy", np.zeros((1, 2)))
    moved = load_workflow(project / "workflows/w.yaml")
    assert moved.data.path == str(elsewhere / "data/x.zarr")


def test_urls_are_kept_as_written(project):
    write(project, MINIMAL.replace("data/x.zarr", "s3://bucket/x.zarr") + "checkpoint: {dir: 'memory://ck'}\n")
    workflow = load_workflow("workflows/w.yaml")
    assert workflow.data.path == "s3://bucket/x.zarr"
    assert workflow.checkpoint.dir == "memory://ck"


def test_to_yaml_round_trips(project, monkeypatch):
    monkeypatch.chdir(REPO)
    workflow = load_workflow(REPO / "workflows" / "quickstart.yaml", ["cluster=slurm"])
    (project / "resolved.yaml").write_text(workflow.to_yaml())
    again = load_workflow(project / "resolved.yaml")
    assert again.model_dump() == workflow.model_dump()  # (source_file differs)
    assert again.settings_hash() == workflow.settings_hash()


# ----------------------------------------------------------------------- settings hash


def _hash(project, overrides=()):
    write(project, """\
data: {source: synthetic, path: d.zarr, synthetic: {rows: 1000}}
model: {n_components: 3, random_state: 0}
outputs: {predictions: p.zarr, report: r}
checkpoint: {dir: ck}
""")
    return load_workflow("workflows/w.yaml", overrides).settings_hash()


@pytest.mark.parametrize(
    "override",
    ["model.verbose=2", "model.verbose_interval=1", "model.require_convergence=true",
     "data.chunk_bytes=1MiB", "data.persist=false", "data.storage_options.anon=true",
     "cluster.n_workers=1", "checkpoint.dir=other", "checkpoint.every=5",
     "outputs.report=elsewhere", "steps=[fit, predict]", "name=renamed"],
)  # fmt: skip
def test_settings_hash_ignores_what_does_not_change_the_numbers(project, override):
    assert _hash(project, [override]) == _hash(project)


@pytest.mark.parametrize(
    "override",
    ["model.n_components=4", "model.tol=1.0e-4", "model.random_state=1",
     "model.covariance_type=diag", "model.split_every=4", "model.max_iter=10",
     "model.init_params=random", "data.dtype=float32", "data.nonfinite=drop",
     "data.path=e.zarr", "data.synthetic.seed=1", "data.synthetic.rows=1001"],
)  # fmt: skip
def test_settings_hash_changes_with_what_changes_the_numbers(project, override):
    assert _hash(project, [override]) != _hash(project)


def test_settings_hash_follows_the_content_of_an_init_file(project):
    np.save(project / "m.npy", np.zeros((3, 2)))
    first = _hash(project, ["model.means_init=m.npy"])
    np.save(project / "m.npy", np.ones((3, 2)))
    assert _hash(project, ["model.means_init=m.npy"]) != first


def test_settings_hash_is_stable_across_processes(project):
    here = _hash(project)
    code = (
        "from dgmm.workflow.loading import load_workflow;"
        "print(load_workflow('workflows/w.yaml').settings_hash())"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], cwd=project, env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == here
