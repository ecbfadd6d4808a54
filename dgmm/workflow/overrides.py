"""``--set key.path=value`` overrides, checked against the schema before validation."""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from ..errors import ConfigError
from .cluster_config import CLUSTER_CLASSES, CLUSTER_KINDS
from .schema import Workflow

__all__ = ["parse_override", "apply_override", "model_classes", "unknown_key_text"]


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Split ``'model.n_components=12'`` into ``(('model', 'n_components'), 12)``.

    The value is read as YAML: ``12`` is an int, ``1e-4`` a float, ``null`` None,
    ``[fit, predict]`` a list, ``true`` a bool; anything else a string.
    """
    key, sep, raw = text.partition("=")
    parts = tuple(key.strip().split("."))
    if not sep or not all(part.strip() for part in parts):
        raise ConfigError(
            f"override {text!r} is not of the form key.path=value; write for example "
            "--set model.n_components=12 or --set steps=[fit,report]."
        )
    parts = tuple(part.strip() for part in parts)
    raw = raw.strip()
    if raw == "":
        return parts, None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override {text!r}: the value {raw!r} is not valid YAML ({exc.__class__.__name__}); "
            "quote strings that contain ':' or '#', e.g. --set 'data.path=\"a:b\"'."
        ) from None
    return parts, value


def model_classes(annotation) -> list[type[BaseModel]]:
    """Pydantic model classes inside an annotation (through Optional/Union/Annotated)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return model_classes(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if origin in (Union,) or type(annotation).__name__ == "UnionType":
        found = []
        for arg in get_args(annotation):
            found.extend(model_classes(arg))
        return found
    return []


def _is_mapping_field(annotation) -> bool:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_mapping_field(get_args(annotation)[0])
    return origin is dict or annotation is dict


def unknown_key_text(key: str, section: str, allowed: Iterable[str]) -> str:
    """'unknown key ... allowed keys: ... (did you mean ...?)' for a key not in a section."""
    allowed = sorted(allowed)
    where = f"in section '{section}'" if section else "at the top level"
    text = f"unknown key '{key}' {where}; allowed keys: {', '.join(allowed)}"
    close = difflib.get_close_matches(str(key), allowed, n=1)
    if close:
        text += f" (did you mean '{close[0]}'?)"
    return text


def _cluster_class_for(value) -> type[BaseModel] | None:
    if isinstance(value, dict):
        return CLUSTER_CLASSES.get(value.get("kind"))
    return None


def apply_override(
    data: dict,
    parts: tuple[str, ...],
    value,
    text: str,
    resolve_cluster: Callable[[Any], dict],
) -> None:
    """Set ``data[parts...] = value`` after checking the key path against the schema.

    ``data`` is the workflow file's mapping; ``resolve_cluster(current)`` turns the
    ``cluster`` value (None, a profile name, a mapping) into the mapping a key below
    ``cluster`` is set in. ``text`` is the override as written, for messages.
    """
    model: type[BaseModel] | None = Workflow
    node = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        section = ".".join(parts[:depth])
        if model is None:  # inside a free-form mapping such as storage_options
            if not last:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"override {text!r}: {section}.{part} is not a mapping.")
                continue
            node[part] = value
            return
        if part not in model.model_fields:
            raise ConfigError(
                f"override {text!r}: {unknown_key_text(part, section, model.model_fields)}."
            )
        if last:
            node[part] = value
            return
        annotation = model.model_fields[part].annotation
        if model is Workflow and part == "cluster":
            node["cluster"] = resolve_cluster(node.get("cluster"))
            model = _cluster_class_for(node["cluster"])
            if model is None:
                raise ConfigError(
                    f"override {text!r}: the cluster section has no valid kind "
                    f"({' | '.join(CLUSTER_KINDS)}); set --set cluster.kind=... first."
                )
        elif _is_mapping_field(annotation):
            model = None
        else:
            classes = model_classes(annotation)
            if not classes:
                raise ConfigError(
                    f"override {text!r}: {'.'.join(parts[: depth + 1])} is a value, not a "
                    f"section; write --set {'.'.join(parts[: depth + 1])}=VALUE."
                )
            model = classes[0]
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"override {text!r}: {'.'.join(parts[: depth + 1])} is {child!r} in the file, "
                "not a mapping, so it has no sub-keys to set."
            )
        node = child
