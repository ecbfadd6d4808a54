"""Cluster profiles by name or path: where they are looked up, and their errors."""
from __future__ import annotations

import pytest
from helpers import MINIMAL_WORKFLOW as MINIMAL
from helpers import REPO
from helpers import write_file as write

from dgmm.errors import ConfigError
from dgmm.workflow.cluster_config import AddressClusterConfig, LocalClusterConfig
from dgmm.workflow.loading import load_cluster_profile, load_workflow
from dgmm.workflow.profiles import find_cluster_profile, profile_dirs


def test_profile_dirs_are_next_to_the_workflow_directory_then_the_current_one(
        project, tmp_path_factory, monkeypatch):
    assert profile_dirs(project / "workflows") == [project / "configs"]
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    assert profile_dirs(project / "workflows") == [project / "configs", cwd / "configs"]
    assert profile_dirs(None) == [cwd / "configs"]


def test_find_by_name_and_by_path(project):
    write(project, "kind: local\n", "configs/mine.yaml")
    assert find_cluster_profile("mine", workflow_dir=project / "workflows") == str(
        project / "configs" / "mine.yaml")
    assert find_cluster_profile("configs/mine.yaml") == str(project / "configs" / "mine.yaml")
    assert find_cluster_profile("slurm", workflow_dir=REPO / "workflows") == str(
        REPO / "configs" / "slurm.yaml")


def test_profile_is_found_next_to_the_workflow_directory(project, tmp_path_factory,
                                                          monkeypatch):
    write(project, "kind: local\nn_workers: 5\n", "configs/five.yaml")
    write(project, MINIMAL + "cluster: five\n")
    # not the project: found via <workflow>/../configs
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
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
    assert load_cluster_profile("local") == LocalClusterConfig()


def test_profile_by_path(project):
    write(project, "kind: address\naddress: tcp://10.1.2.3:8786\n", "elsewhere/sched.yaml")
    write(project, MINIMAL + "cluster: elsewhere/sched.yaml\n")
    cluster = load_workflow("workflows/w.yaml").cluster
    assert cluster == AddressClusterConfig(address="tcp://10.1.2.3:8786")


def test_unknown_profile_lists_where_it_looked_and_what_exists(project):
    write(project, "kind: local\n", "configs/mine.yaml")
    write(project, MINIMAL + "cluster: theirs\n")
    with pytest.raises(ConfigError, match=r"cluster profile 'theirs' not found: looked for "
                       r"theirs\.yaml in .*configs.*Available profiles: local, mine\."):
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
    with pytest.raises(ConfigError, match=r"configs/bad\.yaml:2: cores: found 0; must be "
                       r"greater than or equal to 1"):
        load_workflow("workflows/w.yaml")


def test_a_check_across_keys_of_a_profile_names_its_line(project):
    write(project, "kind: slurm\ncores: 2\nmemory: 4GB\nprocesses: 3\n", "configs/bad.yaml")
    with pytest.raises(ConfigError, match=r"configs/bad\.yaml:4: processes: found 3; must be <= "
                       r"cores \(2\)"):
        load_cluster_profile("bad", workflow_dir=project / "workflows")


def test_a_profile_with_a_yaml_error(project):
    write(project, "kind: [local\n", "configs/broken.yaml")
    with pytest.raises(ConfigError, match=r"configs/broken\.yaml:2:\d+: invalid YAML in cluster "
                       r"profile"):
        load_cluster_profile("broken", workflow_dir=project / "workflows")
