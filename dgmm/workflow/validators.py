"""Checks shared by the workflow's pydantic models: paths, sizes, errors across keys.

Pure functions: they read no file, no environment and no working directory.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

from dask.utils import parse_bytes
from pydantic import ConfigDict
from pydantic_core import PydanticCustomError

__all__ = ["FORBID", "CROSS_FIELD_ERROR", "key_problem", "path_text", "positive_size"]

#: every model of a workflow file refuses unknown keys
FORBID = ConfigDict(extra="forbid")

CROSS_FIELD_ERROR = "dgmm_cross_field"
"""Error type of a check across keys: ``ctx`` holds the ``key`` at fault and the value
``found`` there (the error's location is the section holding the key)."""


def key_problem(key: str, found: Any, problem: str) -> PydanticCustomError:
    """The error of a check across keys, attributed to ``key``."""
    return PydanticCustomError(
        CROSS_FIELD_ERROR, "{key}: {problem}", {"key": key, "found": found, "problem": problem}
    )


def path_text(value):
    """A path as ``str`` (``os.PathLike`` accepted); empty paths refused."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and not value:
        raise ValueError("must be a non-empty path")
    return value  # the str validator reports other types


def positive_size(value, example: str) -> int:
    """Bytes from an int or a text such as ``'64MiB'`` (``dask.utils.parse_bytes``)."""
    nbytes = None
    if (not isinstance(value, bool) and isinstance(value, (int, float, str))
            and (not isinstance(value, float) or value == int(value))):
        with contextlib.suppress(ValueError, TypeError):
            nbytes = parse_bytes(value)
    if nbytes is None or nbytes <= 0:
        raise ValueError(
            f"must be a positive size: a number of bytes or a number with a unit such as "
            f"'{example}' (kB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)"
        )
    return int(nbytes)
