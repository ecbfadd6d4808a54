"""Workflow schema and loader: shipped files, every error message, overrides, hashing."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dgmm.workflow.config import (
    AddressClusterConfig,
    LocalClusterConfig,
    ModelConfig,
    PBSClusterConfig,
    SlurmClusterConfig,
    Workflow,
    find_cluster_profile,
    load_cluster_profile,
    load_workflow,
    parse_bytes,
    parse_override,
)
from dgmm.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED_WORKFLOWS = sorted((REPO / "workflows").glob("*.yaml"))
SHIPPED_PROFILES = sorted((REPO / "configs").glob("*.yaml"))

MINIMAL = """\
data:
  source: zarr
  path: data/x.zarr
steps: [fit]
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project directory (workflows/, configs/) that is also the current directory."""
    (tmp_path / "workflows").mkdir()
    (tmp_path / "configs").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(project: Path, text: str, name: str = "workflows/w.yaml") -> Path:
    path = project / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# ----------------------------------------------------------------------- shipped files


def test_the_required_files_are_shipped():
    names = {p.name for p in SHIPPED_WORKFLOWS}
    assert {"quickstart.yaml", "fit_zarr.yaml", "fit_parquet.yaml"} <= names
    assert {p.stem for p in SHIPPED_PROFILES} >= {"local", "address", "slurm", "pbs"}


@pytest.mark.parametrize("path", SHIPPED_WORKFLOWS, ids=lambda p: p.name)
def test_shipped_workflows_validate(path, monkeypatch):
    monkeypatch.chdir(REPO)
    workflow = load_workflow(path)
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


def test_quickstart_generates_fits_predicts_and_reports(monkeypatch):
    monkeypatch.chdir(REPO)
    workflow = load_workflow(REPO / "workflows" / "quickstart.yaml")
    assert workflow.data.source == "synthetic"
    assert workflow.data.path == str(REPO / "runs/quickstart/data.zarr")
    synthetic = workflow.data.synthetic
    assert 100_000 <= synthetic.rows <= 300_000 and synthetic.features in (2, 4)
    assert synthetic.components == workflow.model.n_components == 4
    assert workflow.model.covariance_type == "full"
    assert workflow.model.random_state is not None
    assert workflow.steps == ["fit", "predict", "score", "report"]
    assert workflow.checkpoint.dir == str(REPO / "runs/quickstart/checkpoints")


def test_fit_parquet_names_feature_columns(monkeypatch):
    monkeypatch.chdir(REPO)
    workflow = load_workflow(REPO / "workflows" / "fit_parquet.yaml")
    assert workflow.data.source == "parquet" and workflow.data.columns
    assert workflow.outputs.predictions_format == "parquet"
    assert workflow.data.open_kwargs()["columns"] == workflow.data.columns


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
    slurm = load_cluster_profile("slurm", workflow_dir=REPO / "workflows")
    assert isinstance(slurm, SlurmClusterConfig)
    assert slurm.cores > 0 and slurm.queue and slurm.account and slurm.walltime
    pbs = load_cluster_profile("pbs", workflow_dir=REPO / "workflows")
    assert isinstance(pbs, PBSClusterConfig)
    assert pbs.adaptive is not None and pbs.adaptive.maximum >= pbs.adaptive.minimum
    local = load_cluster_profile("local", workflow_dir=REPO / "workflows")
    assert local.n_workers is None and local.memory_limit is None  # from the machine


# ------------------------------------------------------------ defaults mirror estimators


def test_model_defaults_are_scikit_learns():
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    ours = ModelConfig().model_dump()
    theirs = SkGaussianMixture().get_params()
    assert set(theirs) <= set(ours)  # every scikit-learn parameter, same name
    for name in theirs:
        assert ours[name] == theirs[name], name


def test_model_section_has_exactly_the_estimator_parameters():
    from dgmm import GaussianMixture

    signature = inspect.signature(GaussianMixture.__init__).parameters
    estimator = {name for name in signature if name != "self"}
    kwargs = ModelConfig().estimator_kwargs()
    assert set(kwargs) == estimator - {"client", "nonfinite"}
    for name, value in kwargs.items():
        assert value == signature[name].default, name
    assert set(ModelConfig.model_fields) == set(kwargs) | {"require_convergence"}


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


def test_an_unreadable_init_file_is_a_config_error(project):
    write(project, MINIMAL + "model: {n_components: 2, means_init: missing.npy}\n")
    workflow = load_workflow("workflows/w.yaml")
    with pytest.raises(ConfigError, match=r"model\.means_init: cannot read the \.npy file .*missing\.npy"):
        workflow.model.estimator_kwargs()


# -------------------------------------------------------------------- file-level errors


def test_missing_file_names_the_path(project):
    with pytest.raises(ConfigError, match=r"workflow file 'nowhere/w\.yaml' does not exist"):
        load_workflow("nowhere/w.yaml")


def test_yaml_syntax_error_gives_file_and_line(project):
    write(project, "data:\n  source: zarr\n  path: [unclosed\nsteps: [fit]\n")
    with pytest.raises(ConfigError, match=r"workflows/w\.yaml:4:\d+: invalid YAML in workflow file"):
        load_workflow("workflows/w.yaml")


def test_a_key_given_twice_is_refused_with_both_lines(project):
    write(project, MINIMAL + "model:\n  n_components: 2\n  n_components: 3\n")
    with pytest.raises(ConfigError, match=r"w\.yaml:7:\d+: .*'n_components' appears twice .*line 6"):
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
           "section 'model'; allowed keys: covariance_type, init_params," in message
    assert "(did you mean 'n_components'?)" in message
    assert "dgmm validate workflows/w.yaml" in message


def test_unknown_top_level_key(project):
    write(project, MINIMAL + "modle: {}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'modle' at the top level; allowed keys: "
                       r"checkpoint, cluster, data, model, name, outputs, steps \(did you mean 'model'"):
        load_workflow("workflows/w.yaml")


BAD_VALUES = [
    ("model: {n_components: 0}", r"w\.yaml:5: model\.n_components: found 0; must be greater than or equal to 1"),
    ("model: {covariance_type: fulll}", r"model\.covariance_type: found 'fulll'; must be 'full', 'tied', 'diag' or 'spherical'"),
    ("model: {init_params: kmedoids}", r"model\.init_params: found 'kmedoids'; must be 'kmeans', 'k-means\+\+', 'random' or 'random_from_data'"),
    ("model: {tol: -1}", r"model\.tol: found -1; must be greater than or equal to 0"),
    ("model: {reg_covar: abc}", r"model\.reg_covar: found 'abc'; must be a valid number"),
    ("model: {max_iter: 2.5}", r"model\.max_iter: found 2\.5; must be a valid integer"),
    ("model: {random_state: -1}", r"model\.random_state: found -1; must be greater than or equal to 0"),
    ("model: {split_every: 1}", r"model\.split_every: found 1; must be greater than or equal to 2"),
    ("model: {warm_start: maybe}", r"model\.warm_start: found 'maybe'; must be a valid boolean"),
    ("model: {n_components: 2, weights_init: [1.0]}", r"model\.weights_init: found \[1\.0\]; has 1 weights but n_components is 2"),
    ("model: {n_components: 2, means_init: [1.0, 2.0]}", r"model\.means_init: .*must be a list of n_components rows"),
    ("model: {n_components: 1, means_init: [[1, x]]}", r"model\.means_init: .*found the element 'x'"),
    ("model: {covariance_type: diag, precisions_init: [[[1]]]}", r"model\.precisions_init: .*must be nested 2 deep for covariance_type 'diag'"),
    ("checkpoint: {every: 0}", r"checkpoint\.every: found 0; must be greater than or equal to 1"),
    ("checkpoint: {keep: 0}", r"checkpoint\.keep: found 0; must be greater than or equal to 1"),
    ("outputs: {predictions: out.csv}", r"outputs\.predictions_format: .*cannot tell the format of outputs\.predictions .*out\.csv"),
    ("outputs: {predictions_format: hdf5}", r"outputs\.predictions_format: found 'hdf5'; must be 'zarr' or 'parquet'"),
    ("cluster: {kind: local, n_workers: 0}", r"cluster\.n_workers: found 0; must be greater than or equal to 1"),
    ("cluster: {kind: local, memory_limit: lots}", r"cluster\.memory_limit: found 'lots'; must be a positive size"),
    ("cluster: {kind: local, memory_limit: [1]}", r"cluster\.memory_limit: found \[1\]; must be a valid string or a valid integer\."),
    ("cluster: {n_workers: 2}", r"w\.yaml:5: cluster\.kind: missing; must be one of 'local', 'address', 'slurm', 'pbs'"),
    ("cluster: {kind: kubernetes}", r"cluster\.kind: found 'kubernetes'; must be one of 'local', 'address', 'slurm', 'pbs'"),
    ("cluster: {kind: address}", r"cluster\.address_env: found null; a scheduler address is needed: set address"),
    ("cluster: {kind: address, address: 'tcp://h:1', address_env: X}", r"cluster\.address_env: found 'X'; give address or address_env, not both"),
    ("cluster: {kind: slurm, memory: 4GB}", r"cluster\.cores: missing; this key is required"),
    ("cluster: {kind: slurm, cores: 4, memory: 4GB, walltime: soon}", r"cluster\.walltime: found 'soon'; must look like HH:MM:SS"),
    ("cluster: {kind: slurm, cores: 4, memory: 4GB, processes: 8}", r"cluster\.processes: found 8; must be <= cores \(4\)"),
    ("cluster: {kind: pbs, cores: 4, memory: 4GB, jobs: 2, adaptive: {maximum: 3}}", r"cluster\.adaptive: .*give either jobs .* or adaptive"),
    ("cluster: {kind: pbs, cores: 4, memory: 4GB, adaptive: {minimum: 3, maximum: 2}}", r"cluster\.adaptive\.maximum: found 2; must be >= minimum \(3\)"),
    ("cluster: {kind: pbs, cores: 4, memory: 4GB, adaptive: {minimum: 1}}", r"cluster\.adaptive\.maximum: missing"),
    ("cluster: {kind: slurm, cores: 4, memory: 4GB, qeue: long}", r"cluster\.qeue: found 'long'; unknown key 'qeue' in section 'cluster'.*did you mean 'queue'"),
]


@pytest.mark.parametrize("snippet, message", BAD_VALUES, ids=[m[:40] for _, m in BAD_VALUES])
def test_each_bad_value_names_key_value_and_what_is_allowed(project, snippet, message):
    write(project, MINIMAL + snippet + "\n")
    with pytest.raises(ConfigError, match=message):
        load_workflow("workflows/w.yaml")


BAD_DATA = [
    ("source: hdf5\n  path: x", r"data\.source: found 'hdf5'; must be 'zarr', 'parquet', 'npy' or 'synthetic'"),
    ("source: zarr", r"w\.yaml:1: data\.path: missing; this key is required"),
    ("source: zarr\n  path: x\n  dtype: int8", r"data\.dtype: found 'int8'; must be 'float64' or 'float32'"),
    ("source: zarr\n  path: x\n  persist: maybe", r"data\.persist: found 'maybe'; must be 'auto', true or false"),
    ("source: zarr\n  path: x\n  nonfinite: ignore", r"data\.nonfinite: found 'ignore'; must be 'raise', 'drop' or 'marginalize'"),
    ("source: zarr\n  path: x\n  chunk_bytes: 12XB", r"data\.chunk_bytes: found '12XB'; must be a positive size"),
    ("source: zarr\n  path: x\n  chunk_bytes: 0", r"data\.chunk_bytes: found 0; must be a positive size"),
    ("source: zarr\n  path: x\n  columns: [a]", r"data\.columns: found \['a'\]; columns applies to parquet sources only, but data\.source is 'zarr'"),
    ("source: parquet\n  path: x\n  columns: []", r"data\.columns: found \[\]; must list at least one column"),
    ("source: parquet\n  path: x\n  columns: [a, a]", r"data\.columns: .*lists the columns \['a'\] more than once"),
    ("source: parquet\n  path: x\n  array_path: g/a", r"data\.array_path: found 'g/a'; array_path applies to zarr sources only"),
    ("source: npy\n  path: s3://b/x.npy", r"data\.path: found 's3://b/x\.npy'; an npy source must be a local file"),
    ("source: npy\n  path: x.npy\n  storage_options: {anon: true}", r"data\.storage_options: .*npy sources are local files"),
    ("source: synthetic\n  path: x.zarr", r"data\.synthetic: found null; data\.source is 'synthetic' but there is no data\.synthetic block"),
    ("source: zarr\n  path: x\n  synthetic: {rows: 10}", r"data\.synthetic: .*applies when data\.source is 'synthetic', but it is 'zarr'"),
    ("source: synthetic\n  path: x\n  synthetic: {rows: 0}", r"data\.synthetic\.rows: found 0; must be greater than 0"),
    ("source: synthetic\n  path: x\n  synthetic: {covariance_type: full, rowz: 5}", r"unknown key 'rowz' in section 'data\.synthetic'"),
]


@pytest.mark.parametrize("data, message", BAD_DATA, ids=[m[:40] for _, m in BAD_DATA])
def test_each_bad_data_setting(project, data, message):
    write(project, f"data:\n  {data}\nsteps: [fit]\n")
    with pytest.raises(ConfigError, match=message):
        load_workflow("workflows/w.yaml")


BAD_STEPS = [
    ("steps: []", r"steps: found \[\]; must list at least one step from \['fit', 'predict', 'score', 'report'\]"),
    ("steps: [fit, train]", r"steps\[1\]: found 'train'; must be 'fit', 'predict', 'score' or 'report'"),
    ("steps: [fit, fit]", r"steps: .*lists \['fit'\] more than once"),
    ("steps: [fit, predict]", r"step 'predict' writes to outputs\.predictions, which is not set"),
    ("steps: [fit, report]", r"step 'report' writes to outputs\.report, which is not set"),
    ("steps: [score]", r"has no 'fit' step, so the model is read from outputs\.model, which is not set"),
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


# -------------------------------------------------------------------------- overrides


@pytest.mark.parametrize(
    "text, parts, value",
    [
        ("model.n_components=12", ("model", "n_components"), 12),
        ("model.tol=1.0e-5", ("model", "tol"), 1e-5),
        ("steps=[fit, report]", ("steps",), ["fit", "report"]),
        ("checkpoint.dir=null", ("checkpoint", "dir"), None),
        ("checkpoint.dir=", ("checkpoint", "dir"), None),
        ("data.path=s3://b/x.zarr", ("data", "path"), "s3://b/x.zarr"),
        (" model.warm_start = true ", ("model", "warm_start"), True),
    ],
)
def test_parse_override(text, parts, value):
    assert parse_override(text) == (parts, value)


@pytest.mark.parametrize("text", ["model.n_components", "=3", "model..tol=1", ".a=1"])
def test_malformed_override(text):
    with pytest.raises(ConfigError, match=r"is not of the form key\.path=value; write for example"):
        parse_override(text)


def test_override_with_invalid_yaml_value():
    with pytest.raises(ConfigError, match=r"the value '\[1, 2' is not valid YAML"):
        parse_override("steps=[1, 2")


def test_overrides_apply_in_order(project):
    write(project, MINIMAL)
    workflow = load_workflow(
        "workflows/w.yaml",
        ["model.n_components=12", "model.tol=1e-5", "data.storage_options.anon=true",
         "steps=[fit]", "model.n_components=7", "data.synthetic=null"],
    )  # fmt: skip
    assert workflow.model.n_components == 7
    assert workflow.model.tol == 1e-5
    assert workflow.data.storage_options == {"anon": True}
    assert workflow.overrides[0] == "model.n_components=12"


def test_checkpoint_and_outputs_storage_options_default_to_the_data_section(project):
    write(project, MINIMAL)
    inherited = load_workflow("workflows/w.yaml", ["data.storage_options.anon=true"])
    assert inherited.storage_options_for("checkpoint") == {"anon": True}
    assert inherited.storage_options_for("outputs") == {"anon": True}
    own = load_workflow("workflows/w.yaml", [
        "data.storage_options.anon=true", "checkpoint.storage_options={}",
        "outputs.storage_options={key: abc}"])
    assert own.storage_options_for("checkpoint") == {}
    assert own.storage_options_for("outputs") == {"key": "abc"}


def test_override_on_an_unknown_path(project):
    write(project, MINIMAL)
    with pytest.raises(ConfigError, match=r"override 'model\.n_compnents=3': unknown key "
                       r"'n_compnents' in section 'model'; allowed keys: .*did you mean 'n_components'"):
        load_workflow("workflows/w.yaml", ["model.n_compnents=3"])
    with pytest.raises(ConfigError, match=r"override 'modl\.tol=3': unknown key 'modl' at the top level"):
        load_workflow("workflows/w.yaml", ["modl.tol=3"])
    with pytest.raises(ConfigError, match=r"override 'model\.tol\.x=1': model\.tol is a value, not a section"):
        load_workflow("workflows/w.yaml", ["model.tol.x=1"])


def test_an_invalid_override_value_is_attributed_to_the_override(project):
    write(project, MINIMAL)
    with pytest.raises(ConfigError, match=r"\(1\) --set model\.n_components=0: model\.n_components: "
                       r"found 0; must be greater than or equal to 1\. Fix the file or the --set overrides"):
        load_workflow("workflows/w.yaml", ["model.n_components=0"])


def test_override_a_key_of_a_named_profile(project):
    write(project, MINIMAL + "cluster: local\n")
    workflow = load_workflow("workflows/w.yaml", ["cluster.n_workers=3", "cluster.processes=false"])
    assert workflow.cluster == LocalClusterConfig(n_workers=3, processes=False)
    with pytest.raises(ConfigError, match=r"--set cluster\.n_workers=0: cluster\.n_workers: found 0"):
        load_workflow("workflows/w.yaml", ["cluster.n_workers=0"])
    with pytest.raises(ConfigError, match=r"unknown key 'cores' in section 'cluster'"):
        load_workflow("workflows/w.yaml", ["cluster.cores=3"])


def test_override_the_cluster_by_name_and_then_a_key(project):
    write(project, "kind: slurm\ncores: 8\nmemory: 32GiB\nqueue: short\n", "configs/hpc.yaml")
    write(project, MINIMAL + "cluster: local\n")
    workflow = load_workflow("workflows/w.yaml", ["cluster=hpc", "cluster.queue=long"])
    assert isinstance(workflow.cluster, SlurmClusterConfig)
    assert (workflow.cluster.cores, workflow.cluster.queue) == (8, "long")


# ---------------------------------------------------------------------- paths and cwd


def test_relative_paths_are_resolved_against_the_current_directory(project, tmp_path_factory):
    write(project, """\
data: {source: zarr, path: data/x.zarr}
model: {means_init: m.npy}
checkpoint: {dir: runs/ck}
outputs: {model: runs/model, predictions: runs/p.parquet, report: runs/report}
steps: [fit, predict, report]
""")
    workflow = load_workflow("workflows/w.yaml")
    assert workflow.data.path == str(project / "data/x.zarr")
    assert workflow.model.means_init == str(project / "m.npy")
    assert workflow.checkpoint.dir == str(project / "runs/ck")
    assert workflow.outputs.model == str(project / "runs/model")
    assert workflow.outputs.predictions == str(project / "runs/p.parquet")
    assert workflow.outputs.report == str(project / "runs/report")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    os.chdir(elsewhere)
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


# ------------------------------------------------------------------- cluster profiles


def test_profile_is_found_next_to_the_workflow_directory(project, tmp_path_factory):
    write(project, "kind: local\nn_workers: 5\n", "configs/five.yaml")
    write(project, MINIMAL + "cluster: five\n")
    os.chdir(tmp_path_factory.mktemp("cwd"))  # not the project: found via <workflow>/../configs
    workflow = load_workflow(project / "workflows/w.yaml")
    assert workflow.cluster == LocalClusterConfig(n_workers=5)


def test_profile_is_found_in_the_current_directory_configs(project, tmp_path_factory):
    write(project, "kind: local\nn_workers: 6\n", "configs/six.yaml")
    elsewhere = tmp_path_factory.mktemp("flows")
    (elsewhere / "w.yaml").write_text(MINIMAL + "cluster: six\n")
    assert load_workflow(elsewhere / "w.yaml").cluster.n_workers == 6


def test_builtin_local_profile_when_no_file(project):
    write(project, MINIMAL + "cluster: local\n")
    assert load_workflow("workflows/w.yaml").cluster == LocalClusterConfig()
    assert find_cluster_profile("local") is None


def test_profile_by_path(project):
    write(project, "kind: address\naddress: tcp://10.1.2.3:8786\n", "elsewhere/sched.yaml")
    write(project, MINIMAL + "cluster: elsewhere/sched.yaml\n")
    cluster = load_workflow("workflows/w.yaml").cluster
    assert cluster == AddressClusterConfig(address="tcp://10.1.2.3:8786")


def test_unknown_profile_lists_where_it_looked_and_what_exists(project):
    write(project, "kind: local\n", "configs/mine.yaml")
    write(project, MINIMAL + "cluster: theirs\n")
    with pytest.raises(ConfigError, match=r"cluster profile 'theirs' not found: looked for theirs\.yaml "
                       r"in .*configs.*Available profiles: local, mine\."):
        load_workflow("workflows/w.yaml")


def test_missing_profile_file(project):
    write(project, MINIMAL + "cluster: nowhere/p.yaml\n")
    with pytest.raises(ConfigError, match=r"cluster profile file 'nowhere/p\.yaml' does not exist"):
        load_workflow("workflows/w.yaml")


def test_invalid_profile_name(project):
    with pytest.raises(ConfigError, match=r"cluster profile name 'a b' is not valid"):
        find_cluster_profile("a b")


def test_an_invalid_profile_is_reported_against_its_own_file(project):
    write(project, "kind: slurm\ncores: 0\nmemory: 4GB\n", "configs/bad.yaml")
    write(project, MINIMAL + "cluster: bad\n")
    with pytest.raises(ConfigError, match=r"Invalid cluster profile .*configs/bad\.yaml \(1 problem\): "
                       r"\(1\) .*configs/bad\.yaml:2: cores: found 0; must be greater than or equal to 1"):
        load_workflow("workflows/w.yaml")


def test_a_profile_with_a_yaml_error(project):
    write(project, "kind: [local\n", "configs/broken.yaml")
    with pytest.raises(ConfigError, match=r"configs/broken\.yaml:2:\d+: invalid YAML in cluster profile"):
        load_cluster_profile("broken", workflow_dir=project / "workflows")


def test_a_workflow_built_in_code_resolves_a_profile_name(project):
    workflow = Workflow(data={"source": "zarr", "path": "x"}, cluster="local", steps=["fit"])
    assert workflow.cluster == LocalClusterConfig()
    assert workflow.source_file is None


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
        "from dgmm.workflow.config import load_workflow;"
        "print(load_workflow('workflows/w.yaml').settings_hash())"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], cwd=project, env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == here


# ------------------------------------------------------------------------ parse_bytes


@pytest.mark.parametrize(
    "text, expected",
    [(123, 123), ("64MiB", 64 * 2**20), ("64 MB", 64 * 10**6), ("1.5GiB", 3 * 2**29),
     ("1e6", 10**6), ("2kB", 2000), ("16GiB", 16 * 2**30), ("7", 7)],
)  # fmt: skip
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "12XB", "-5MB", True, 1.5])
def test_parse_bytes_refuses(text):
    with pytest.raises(ValueError, match=r"(cannot read .* as a size|is not a (size|whole number))"):
        parse_bytes(text)
