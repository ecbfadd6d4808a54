"""Workflow files to validated ``Workflow`` objects, and every mistake to one ConfigError.

``load_workflow(path, overrides)`` reads the YAML (a key given twice is an error; every key
path keeps its line), applies the ``--set`` overrides, looks up a named cluster profile,
validates, and then, outside validation, makes relative local paths absolute against the
current directory (``resolve_paths``: run ``dgmm`` from the project root, as the shipped
workflows assume) and reads the ``.npy`` init files (``read_init_files``). URLs with a
scheme (``s3://``, ``memory://``, ``file://`` ...) are kept as written. Pydantic's errors
become one paragraph naming the file, the line (or the override) and the key path of
every problem, the value found and what is allowed.
"""
from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence

import yaml
from pydantic import BaseModel, ValidationError

from ..data.files import is_url
from ..errors import ConfigError
from .cluster_config import CLUSTER_CLASSES, CLUSTER_KINDS, ClusterConfig, LocalClusterConfig
from .model_config import INIT_ARRAY_NAMES, InitFile
from .overrides import apply_override, model_classes, parse_override, unknown_key_text
from .profiles import find_cluster_profile
from .schema import Workflow
from .validators import CROSS_FIELD_ERROR

__all__ = ["load_workflow", "load_cluster_profile", "resolve_paths", "read_init_files"]


# ------------------------------------------------------------------------ YAML reading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None,
                f"key {key!r} appears twice in one mapping (first on line {seen[key] + 1})",
                key_node.start_mark,
            )  # fmt: skip
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def _key_lines(node, prefix=(), out=None) -> dict[tuple, int]:
    """1-based line of every key path in a composed YAML node tree."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = prefix + (key_node.value,)
            out[path] = key_node.start_mark.line + 1
            _key_lines(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = prefix + (index,)
            out[path] = item.start_mark.line + 1
            _key_lines(item, path, out)
    return out


class _Document:
    """A parsed YAML mapping with the line of each key path."""

    def __init__(self, path: str, data: dict, lines: dict[tuple, int]):
        self.path = path
        self.data = data
        self.lines = lines


def _read_yaml(path: str | os.PathLike, what: str) -> _Document:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise ConfigError(
            f"{what} {path!r} does not exist (looked in {os.path.abspath(path)}). Check the "
            "path; relative paths are relative to the current directory."
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            f"{what} {path!r} is a directory; give the path of a YAML file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read {what} {path!r}: {exc}.") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ConfigError(
            f"{where}: invalid YAML in {what}: {problem}. Fix the syntax at that line "
            "(check indentation, colons and quotes)."
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML in {what}: {exc}.") from None
    if data is None:
        raise ConfigError(
            f"{what} {path!r} is empty; it must be a YAML mapping (see workflows/quickstart.yaml)."
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{what} {path!r} holds a YAML {type(data).__name__}, not a mapping of keys to "
            "values; start the file with keys such as `data:` (see workflows/quickstart.yaml)."
        )
    return _Document(path, data, _key_lines(node))


# ----------------------------------------------------------------- error formatting


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    if isinstance(value, bool) or value is None:
        text = {True: "true", False: "false", None: "null"}[value]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _display_path(loc: tuple, root_model) -> tuple[tuple, type[BaseModel] | None]:
    """A pydantic error location as the user's key path, and the model owning its last key.

    Pydantic adds the tag of a discriminated union (``('cluster', 'slurm', 'cores')``) and
    the branch of a plain union (``('memory_limit', 'str')``); neither is a key the user
    wrote, so both are left out.
    """
    shown: list = []
    model, owner = root_model, root_model
    parts = iter(loc)
    for part in parts:
        if model is None:
            if isinstance(part, int):
                shown.append(part)  # a list index
            continue  # a union branch label
        owner = model
        shown.append(part)
        if isinstance(part, int) or part not in model.model_fields:
            model = None  # an unknown key (extra_forbidden)
            continue
        classes = model_classes(model.model_fields[part].annotation)
        if len(classes) > 1:  # discriminated union: the next item is the tag
            model = CLUSTER_CLASSES.get(next(parts, None))
        else:
            model = classes[0] if classes else None
    return tuple(shown), owner


def _path_text(path: tuple) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _problem_text(error: dict, path: tuple, owner) -> str:
    kind = error["type"]
    msg = error["msg"]
    found = error.get("input")
    if kind == CROSS_FIELD_ERROR:
        return f"found {_short(error['ctx']['found'])}; {error['ctx']['problem']}"
    if kind == "extra_forbidden":
        section = _path_text(path[:-1])
        allowed = owner.model_fields if owner is not None else []
        return f"found {_short(found)}; " + unknown_key_text(path[-1], section, allowed)
    if kind == "missing":
        return "missing; this key is required"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = ", ".join(f"'{k}'" for k in CLUSTER_KINDS)
        if kind == "union_tag_not_found":
            return f"missing; must be one of {tags}"
        return f"found {_short(error['ctx']['tag'])}; must be one of {tags}"
    if kind == "literal_error":
        expected = error["ctx"]["expected"].replace("True", "true").replace("False", "false")
        return f"found {_short(found)}; must be {expected}"
    if msg.startswith("Value error, "):
        return f"found {_short(found)}; " + msg[len("Value error, ") :]
    if msg.startswith("Input should be "):
        msg = "must be " + msg[len("Input should be ") :]
    return f"found {_short(found)}; {msg[0].lower() + msg[1:]}"


class _Problem:
    def __init__(self, where: str, key: str, text: str):
        self.where, self.key, self.text = where, key, text

    def __str__(self):
        head = f"{self.where}: {self.key}: " if self.key else f"{self.where}: "
        return head + self.text


def _problems_from(
    exc: ValidationError, doc: _Document, prefix: tuple, root_model, overridden: dict
) -> list[_Problem]:
    problems: dict[str, list[_Problem]] = {}
    for error in exc.errors():
        loc = tuple(error["loc"])
        if error["type"] == CROSS_FIELD_ERROR:  # raised by the section: add the key at fault
            loc = loc + tuple(error["ctx"]["key"].split("."))  # "model.x": a key path
        path, owner = _display_path(loc, root_model)
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path = path + ("kind",)
        full = prefix + path
        key = _path_text(full)
        where = doc.path
        for depth in range(len(full), 0, -1):
            if full[:depth] in overridden:
                where = f"--set {overridden[full[:depth]]}"
                break
            if full[:depth] in doc.lines:
                where = f"{doc.path}:{doc.lines[full[:depth]]}"
                break
        text = _problem_text(error, full, owner)
        problems.setdefault(key, []).append(_Problem(where, key, text))
    merged: list[_Problem] = []
    for items in problems.values():  # one problem per key: "found x; must be a or b"
        text = items[0].text
        for item in items[1:]:
            alternative = (item.text.partition("; ")[2] if item.text.startswith("found ")
                           else item.text)
            text += " or " + alternative.removeprefix("must be ")
        merged.append(_Problem(items[0].where, items[0].key, text))
    return merged


class _ClusterRoot(BaseModel):
    """Wrapper that gives a cluster mapping's errors the key path ``cluster...``."""

    cluster: ClusterConfig


def _validate_cluster(mapping, doc: _Document, *, in_workflow: bool, overridden: dict):
    """``(config, [])`` or ``(None, problems)`` with keys ``cluster.<key>``.

    ``in_workflow``: the mapping is written inline in the workflow ``doc`` (its lines are
    keyed ``('cluster', ...)``); otherwise ``doc`` is a profile file keyed from its top.
    """
    lines = doc.lines if in_workflow else {("cluster",) + k: v for k, v in doc.lines.items()}
    try:
        return _ClusterRoot.model_validate({"cluster": mapping}).cluster, []
    except ValidationError as exc:
        located = _Document(doc.path, mapping, lines)
        return None, _problems_from(exc, located, (), _ClusterRoot, overridden)


def _strip_cluster_prefix(problems: list[_Problem]) -> list[_Problem]:
    for problem in problems:
        problem.key = problem.key[len("cluster.") :] if problem.key != "cluster" else ""
    return problems


def _problem_order(problem: _Problem):
    file, _, line = problem.where.rpartition(":")
    if problem.where.startswith("--set") or not line.isdigit():
        return (1, problem.where, 0, problem.key)
    return (0, file, int(line), problem.key)


def _config_error(file: str, what: str, problems: list[_Problem], overrides=()) -> ConfigError:
    problems = sorted(problems, key=_problem_order)
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    body = " ".join(f"({i}) {p}." for i, p in enumerate(problems, 1))
    return ConfigError(
        f"Invalid {what} {file} ({count}): {body} Fix the file"
        + (" or the --set overrides" if overrides else "")
        + f" and check it with `dgmm validate {file}`."
    )


# -------------------------------------------------------------------- cluster profiles


def _profile_document(name_or_path: str, workflow_dir) -> _Document | None:
    file = find_cluster_profile(name_or_path, workflow_dir=workflow_dir)
    if file is None:
        return None
    return _read_yaml(file, "cluster profile")


def _validate_profile(doc: _Document) -> ClusterConfig:
    config, problems = _validate_cluster(doc.data, doc, in_workflow=False, overridden={})
    if problems:
        raise _config_error(doc.path, "cluster profile", _strip_cluster_prefix(problems))
    return config


def load_cluster_profile(
    name_or_path: str | os.PathLike, *, workflow_dir: str | os.PathLike | None = None
) -> ClusterConfig:
    """Find (``dgmm.workflow.profiles``), read and validate a cluster profile.

    Returns the profile model; ``LocalClusterConfig()`` for the name ``local`` when no file
    has it. Raises ``ConfigError`` when the profile is not found, is not valid YAML, or
    has invalid values (with the file, line and key of each).
    """
    doc = _profile_document(os.fspath(name_or_path), workflow_dir)
    return LocalClusterConfig() if doc is None else _validate_profile(doc)


# ------------------------------------------------------- after validation: paths, files


def _absolute(path: str | None, base_dir: str) -> str | None:
    if path is None or is_url(path):
        return path
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))


def resolve_paths(workflow: Workflow, base_dir: str | os.PathLike) -> Workflow:
    """A copy of ``workflow`` whose relative local paths are absolute against ``base_dir``.

    Concerns ``data.path``, the ``model.*_init`` files, ``model.warm_start_from``,
    ``checkpoint.dir`` and
    ``outputs.model`` / ``predictions`` / ``report``; URLs are kept as written.
    """
    base = os.path.abspath(os.fspath(base_dir))
    data = workflow.data.model_copy(update={"path": _absolute(workflow.data.path, base)})
    model = workflow.model.model_copy(update={
        name: _absolute(getattr(workflow.model, name), base)
        for name in (*INIT_ARRAY_NAMES, "warm_start_from")
        if isinstance(getattr(workflow.model, name), str)
    })  # fmt: skip
    checkpoint = workflow.checkpoint.model_copy(
        update={"dir": _absolute(workflow.checkpoint.dir, base)}
    )
    outputs = workflow.outputs.model_copy(update={
        key: _absolute(getattr(workflow.outputs, key), base)
        for key in ("model", "predictions", "report")
    })  # fmt: skip
    return workflow.model_copy(
        update={"data": data, "model": model, "checkpoint": checkpoint, "outputs": outputs}
    )


def _read_init_file(name: str, path: str) -> InitFile:
    import fsspec
    import numpy as np

    try:
        with fsspec.open(path, "rb") as stream:
            content = stream.read()
        array = np.load(io.BytesIO(content), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(
            f"model.{name}: cannot read the .npy file {path!r} ({exc}). Give the path of "
            "an existing .npy file written by numpy.save, or a nested list of numbers."
        ) from None
    return InitFile(path, np.asarray(array, dtype=np.float64), hashlib.sha256(content).hexdigest())


def read_init_files(workflow: Workflow) -> Workflow:
    """A copy of ``workflow`` holding the arrays and sha256 of its ``.npy`` init files.

    Each file is read once: the estimator gets its array and the settings hash its digest
    (``ModelConfig.init_file``). ``ConfigError`` when a file cannot be read.
    """
    model = workflow.model.model_copy()
    model._init_files = {
        name: _read_init_file(name, getattr(model, name))
        for name in INIT_ARRAY_NAMES if isinstance(getattr(model, name), str)
    }  # fmt: skip
    return workflow.model_copy(update={"model": model})


# --------------------------------------------------------------------- load_workflow


def load_workflow(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Workflow:
    """Read, override and validate a workflow file, then resolve its paths and files.

    Parameters
    ----------
    path : the workflow YAML file.
    overrides : ``'key.path=value'`` strings applied in order
        (see ``dgmm.workflow.overrides.parse_override``).

    Returns
    -------
    Workflow, with relative local paths made absolute against the current directory,
    ``cluster`` resolved to a profile model and the ``.npy`` init files read.

    Raises
    ------
    ConfigError
        The file is missing or not valid YAML (with file:line), an override names an
        unknown key, a value is invalid (every failing key path, the value found and what
        is allowed, with the line of the key or the override that set it), a cluster
        profile is not found or invalid, or an init file cannot be read.
    """
    path = os.fspath(path)
    doc = _read_yaml(path, "workflow file")
    workflow_dir = os.path.dirname(os.path.abspath(path))
    data = doc.data
    overridden: dict[tuple, str] = {}
    cluster_doc: list[_Document | None] = [None]

    def resolve_cluster(current):
        if current is None:
            return {"kind": "local"}
        if isinstance(current, str):
            profile = _profile_document(current, workflow_dir)
            cluster_doc[0] = profile
            return {"kind": "local"} if profile is None else dict(profile.data)
        return current

    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] == "cluster" and len(parts) == 1:
            cluster_doc[0] = None
        apply_override(data, parts, value, text, resolve_cluster)
        overridden[parts] = text

    problems: list[_Problem] = []
    cluster_value = data.get("cluster")
    cluster_obj = None
    if isinstance(cluster_value, str):
        cluster_obj = load_cluster_profile(cluster_value, workflow_dir=workflow_dir)
    elif cluster_value is not None:
        source = cluster_doc[0]  # set when --set cluster.x=... changed a named profile
        cluster_obj, found = _validate_cluster(
            cluster_value, source or doc, in_workflow=source is None, overridden=overridden
        )
        problems.extend(found)
    rest = {k: v for k, v in data.items() if k != "cluster"}
    if cluster_obj is not None:
        rest["cluster"] = cluster_obj
    try:
        workflow = Workflow.model_validate(rest)
    except ValidationError as exc:
        problems.extend(_problems_from(exc, doc, (), Workflow, overridden))
        workflow = None
    if problems:
        raise _config_error(path, "workflow file", problems, overrides)
    workflow = read_init_files(resolve_paths(workflow, os.getcwd()))
    workflow._source_file = os.path.abspath(path)
    workflow._overrides = tuple(overrides)
    return workflow
