"""Smoke checks of the benchmark scripts' own logic (no cluster, no Spark: a few seconds)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vs_spark_without_java_exits_2_with_one_line(tmp_path):
    env = dict(os.environ, JAVA_HOME=str(tmp_path / "no-java"), PATH=str(tmp_path))
    env["PYTHONPATH"] = os.pathsep.join([str(BENCHMARKS.parent), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_vs_spark.py"), "--rows-scale", "0.01"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing" in lines[0] and "Java" in lines[0]
    assert result.stdout == ""


def test_scaling_statistics_bytes_formula_matches_pickled_sizes():
    scaling = _load("bench_scaling")
    rows = scaling.stats_sizes(ks=(3, 8), ds=(5, 16))
    assert {row[0] for row in rows} == {"full", "tied", "diag", "spherical"}
    for covariance_type, k, d, pickled, formula in rows:
        # the arrays' bytes plus a small constant (pickle framing, scalars, the type name)
        assert 0 < pickled - formula < 512, (covariance_type, k, d, pickled, formula)


@pytest.mark.parametrize("n_chunks, merges", [(1, 0), (8, 1), (9, 3), (64, 9), (65, 12)])
def test_scaling_merge_count(n_chunks, merges):
    assert _load("bench_scaling").merge_tasks(n_chunks) == merges


def test_scaling_tasks_formula_matches_pass_graph(tmp_path):
    scaling = _load("bench_scaling")
    for n_chunks, keys, formula in scaling.graph_tasks(str(tmp_path), [1, 9, 70]):
        assert keys == formula, (n_chunks, keys, formula)


def test_bayesian_benchmark_smoke_run(capsys):
    assert _load("bench_bayesian").main(["--rows", "3000", "--features", "3",
                                          "--components", "3", "--iters", "2",
                                          "--chunk-rows", "1000", "--wait-idle", "0"]) == 0
    out = capsys.readouterr().out
    assert "seconds per iteration: dgmm" in out and "below batch (target <= 0.5%)" in out
