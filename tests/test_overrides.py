"""``--set key.path=value`` overrides: parsing, checking the key path, attribution."""
from __future__ import annotations

import pytest
from helpers import MINIMAL_WORKFLOW as MINIMAL
from helpers import write_file as write

from dgmm.errors import ConfigError
from dgmm.workflow.cluster_config import LocalClusterConfig, SlurmClusterConfig
from dgmm.workflow.loading import load_workflow
from dgmm.workflow.overrides import apply_override, parse_override


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


def _no_cluster(current):
    raise AssertionError("the cluster section was not touched")


def test_apply_override_sets_nested_keys_and_creates_sections():
    data = {"data": {"source": "zarr", "path": "x"}}
    apply_override(data, ("model", "n_components"), 3, "model.n_components=3", _no_cluster)
    apply_override(data, ("data", "storage_options", "client_kwargs", "region"), "eu",
                   "data.storage_options.client_kwargs.region=eu", _no_cluster)
    assert data == {"data": {"source": "zarr", "path": "x",
                             "storage_options": {"client_kwargs": {"region": "eu"}}},
                    "model": {"n_components": 3}}
    with pytest.raises(ConfigError, match=r"override 'data\.path\.x=1': data\.path is a value, "
                       r"not a section"):
        apply_override(data, ("data", "path", "x"), 1, "data.path.x=1", _no_cluster)


def test_a_cluster_key_is_set_in_the_resolved_profile():
    data = {"cluster": "hpc"}
    seen = []

    def resolve(current):
        seen.append(current)
        return {"kind": "slurm", "cores": 8, "memory": "1GB"}

    apply_override(data, ("cluster", "queue"), "long", "cluster.queue=long", resolve)
    assert seen == ["hpc"]
    assert data["cluster"] == {"kind": "slurm", "cores": 8, "memory": "1GB", "queue": "long"}
    with pytest.raises(ConfigError, match=r"the cluster section has no valid kind"):
        apply_override({"cluster": {"kind": "k8s"}}, ("cluster", "x"), 1, "cluster.x=1",
                       lambda current: current)


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
    with pytest.raises(ConfigError, match=r"'model\.n_compnents=3': unknown key 'n_compnents'"
                       r".*did you mean 'n_components'"):
        load_workflow("workflows/w.yaml", ["model.n_compnents=3"])
    with pytest.raises(ConfigError, match=r"override 'modl\.tol=3': unknown key 'modl' at the top "
                       r"level"):
        load_workflow("workflows/w.yaml", ["modl.tol=3"])
    with pytest.raises(ConfigError, match=r"override 'model\.tol\.x=1': model\.tol is a value, not "
                       r"a section"):
        load_workflow("workflows/w.yaml", ["model.tol.x=1"])


def test_an_invalid_override_value_is_attributed_to_the_override(project):
    write(project, MINIMAL)
    with pytest.raises(ConfigError, match=r"--set model\.n_components=0: model\.n_components: "
                       r"found 0; must be greater than or equal to 1"):
        load_workflow("workflows/w.yaml", ["model.n_components=0"])


def test_a_check_across_keys_broken_by_an_override_is_attributed_to_it(project):
    write(project, MINIMAL)
    with pytest.raises(ConfigError, match=r"\(1\) --set data\.columns=\[a\]: data\.columns: found "
                       r"\['a'\]; columns applies to parquet sources only"):
        load_workflow("workflows/w.yaml", ["data.columns=[a]"])


def test_override_a_key_of_a_named_profile(project):
    write(project, MINIMAL + "cluster: local\n")
    workflow = load_workflow("workflows/w.yaml", ["cluster.n_workers=3", "cluster.processes=false"])
    assert workflow.cluster == LocalClusterConfig(n_workers=3, processes=False)
    with pytest.raises(ConfigError,
                       match=r"--set cluster\.n_workers=0: cluster\.n_workers: found 0"):
        load_workflow("workflows/w.yaml", ["cluster.n_workers=0"])
    with pytest.raises(ConfigError, match=r"unknown key 'cores' in section 'cluster'"):
        load_workflow("workflows/w.yaml", ["cluster.cores=3"])


def test_override_the_cluster_by_name_and_then_a_key(project):
    write(project, "kind: slurm\ncores: 8\nmemory: 32GiB\nqueue: short\n", "configs/hpc.yaml")
    write(project, MINIMAL + "cluster: local\n")
    workflow = load_workflow("workflows/w.yaml", ["cluster=hpc", "cluster.queue=long"])
    assert isinstance(workflow.cluster, SlurmClusterConfig)
    assert (workflow.cluster.cores, workflow.cluster.queue) == (8, "long")
