"""Cluster profiles by name or path: which file a ``cluster:`` string stands for.

A string is a path to a profile YAML file when it ends in ``.yaml``/``.yml`` or contains a
``/`` (relative to the current directory); otherwise the name of a profile looked up as
``<workflow dir>/../configs/<name>.yaml``, then ``./configs/<name>.yaml``. The name
``local`` falls back to the built-in defaults when no file has it. Reading and validating
the file is ``dgmm.workflow.loading.load_cluster_profile``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ConfigError
from .cluster_config import CLUSTER_KINDS

__all__ = ["find_cluster_profile", "profile_dirs", "BUILTIN_PROFILE"]

BUILTIN_PROFILE = "local"
"""The profile name that needs no file (``LocalClusterConfig()``)."""


def profile_dirs(workflow_dir: str | os.PathLike | None) -> list[Path]:
    """The directories searched for ``<name>.yaml``, in order."""
    dirs = []
    if workflow_dir is not None:
        dirs.append(Path(workflow_dir).resolve().parent / "configs")
    cwd_configs = Path.cwd() / "configs"
    if cwd_configs.resolve() not in [d.resolve() for d in dirs]:
        dirs.append(cwd_configs)
    return dirs


def _looks_like_path(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text


def find_cluster_profile(name: str, *, workflow_dir: str | os.PathLike | None = None) -> str | None:
    """The file of a profile name or path; None for the built-in ``local``.

    Raises ``ConfigError`` naming the places searched when there is no such profile.
    """
    if _looks_like_path(name):
        if not os.path.isfile(name):
            raise ConfigError(
                f"cluster profile file {name!r} does not exist (relative to the current "
                f"directory {os.getcwd()}). Give an existing .yaml file, a profile name "
                f"such as 'local', or an inline mapping with kind: {' | '.join(CLUSTER_KINDS)}."
            )
        return os.path.abspath(name)
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise ConfigError(
            f"cluster profile name {name!r} is not valid; use a name such as 'local' or "
            "'slurm' (a file configs/<name>.yaml) or a path ending in .yaml."
        )
    dirs = profile_dirs(workflow_dir)
    for directory in dirs:
        candidate = directory / f"{name}.yaml"
        if candidate.is_file():
            return str(candidate)
    if name == BUILTIN_PROFILE:
        return None
    available = sorted(
        {p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")} | {BUILTIN_PROFILE}
    )
    raise ConfigError(
        f"cluster profile {name!r} not found: looked for {name}.yaml in "
        f"{', '.join(str(d) for d in dirs)}. Available profiles: {', '.join(available)}. "
        "Use one of those names, a path to a profile .yaml file, or an inline mapping."
    )
