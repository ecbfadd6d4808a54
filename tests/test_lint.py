"""The lint runs with the tests: ``ruff check dgmm tests benchmarks`` (rules in
pyproject.toml) finds nothing, so a lint error fails the test suite as it fails CI."""
import subprocess
import sys

from helpers import REPO


def test_ruff_finds_nothing():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "dgmm", "tests",
                           "benchmarks"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"ruff check reports:\n{proc.stdout}{proc.stderr}"
