"""What an estimator takes, from the one declaration of the model's parameters
(``dgmm.core.model_parameters.ESTIMATORS``): its scikit-learn ``_parameter_constraints``
and the Parameters section of its docstring."""
from __future__ import annotations

import textwrap
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, Options, StrOptions

from ..core.model_parameters import ESTIMATORS, ModelParameter


def _interval(number_type, parameter: ModelParameter) -> Interval | Options:
    left = parameter.ge if parameter.ge is not None else parameter.gt
    right = parameter.le if parameter.le is not None else parameter.lt
    if parameter.ge is not None and parameter.ge == parameter.le:  # one value allowed
        return Options(number_type, {parameter.ge})
    closed_left, closed_right = parameter.ge is not None, parameter.le is not None
    closed = {(True, True): "both", (True, False): "left", (False, True): "right",
              (False, False): "neither"}[closed_left, closed_right]
    return Interval(number_type, left, right, closed=closed)


def sklearn_constraints(parameter: ModelParameter) -> list | str:
    """The ``_parameter_constraints`` entry of one declared parameter (a grid parameter
    also takes a list of values, each checked by the estimator)."""
    kind = parameter.kind
    if kind == "int":
        grid = [list, tuple, range, np.ndarray] if parameter.grid else []
        return [_interval(Integral, parameter), *grid]
    if kind == "float":
        return [_interval(Real, parameter)] + ([None] if parameter.default is None else [])
    if kind == "bool":
        return ["boolean"]
    if kind == "choice":
        return [StrOptions(set(parameter.options)), *([list, tuple] if parameter.grid else [])]
    if kind == "count":
        return [_interval(Integral, parameter), None]
    if kind == "size":
        return [_interval(Integral, parameter), str]
    if kind == "seed":
        return ["random_state"]  # None, an int in [0, 2**32 - 1] or a RandomState
    if kind == "array":
        return ["array-like", None] + ([_interval(Real, parameter)] if parameter.bounds else [])
    return "no_validation"  # scikit-learn's marker: the string, not a list


def parameter_constraints(parameters) -> dict[str, list | str]:
    """``{name: constraints}`` of the declared parameters, as scikit-learn validates them."""
    return {p.name: sklearn_constraints(p) for p in parameters}


def _type_text(parameter: ModelParameter) -> str:
    kind = parameter.kind
    if kind == "choice":
        text = "{" + ", ".join(repr(o) for o in parameter.options) + "}"
        return text + (" or list of them" if parameter.grid else "")
    return {
        "int": "int or list of int" if parameter.grid else "int",
        "float": "float",
        "bool": "bool",
        "seed": "int, RandomState instance or None",
        "array": "array-like or None",
        "path": "str or None",
        "size": "int or str",
        "count": "int or None",
        "object": "object",
    }[kind]


def parameters_section(parameters) -> str:
    """The numpydoc ``Parameters`` section of the declared ``parameters``."""
    lines = ["Parameters", "----------"]
    for p in parameters:
        lines.append(f"{p.name} : {_type_text(p)}, default={p.default!r}")
        lines.extend(textwrap.wrap(p.doc, 84, initial_indent="    ",
                                   subsequent_indent="    "))
    return "\n".join(lines)


def declared_parameters(name: str):
    """Class decorator: the estimator ``name``'s ``_parameter_constraints`` and the
    Parameters section of its docstring, from its declared parameters."""
    parameters = ESTIMATORS[name]

    def decorate(cls):
        cls._parameter_constraints = parameter_constraints(parameters)
        section = "\n".join("    " + line if line else line
                            for line in parameters_section(parameters).splitlines())
        doc = (cls.__doc__ or "").rstrip()
        at = doc.find("\n    Attributes\n    ----------")  # numpydoc: Parameters first
        cls.__doc__ = (doc + "\n\n" + section + "\n" if at < 0
                       else doc[:at] + "\n" + section + "\n" + doc[at:] + "\n")
        return cls

    return decorate
