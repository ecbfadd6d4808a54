"""scikit-learn parameter constraints from the model's parameter declaration."""
from __future__ import annotations

from numbers import Integral, Real

from sklearn.utils._param_validation import Interval, StrOptions

from ..core.model_parameters import ModelParameter


def _interval(number_type, parameter: ModelParameter) -> Interval:
    left = parameter.ge if parameter.ge is not None else parameter.gt
    right = parameter.le if parameter.le is not None else parameter.lt
    closed_left, closed_right = parameter.ge is not None, parameter.le is not None
    closed = {(True, True): "both", (True, False): "left", (False, True): "right",
              (False, False): "neither"}[closed_left, closed_right]
    return Interval(number_type, left, right, closed=closed)


def sklearn_constraints(parameter: ModelParameter) -> list | str:
    """The ``_parameter_constraints`` entry of one declared parameter."""
    kind = parameter.kind
    if kind == "int":
        return [_interval(Integral, parameter)]
    if kind == "float":
        return [_interval(Real, parameter)] + ([None] if parameter.default is None else [])
    if kind == "bool":
        return ["boolean"]
    if kind == "choice":
        return [StrOptions(set(parameter.options))]
    if kind == "seed":
        return ["random_state"]  # None, an int in [0, 2**32 - 1] or a RandomState
    if kind == "array":
        return ["array-like", None] + ([_interval(Real, parameter)] if parameter.bounds else [])
    return "no_validation"  # scikit-learn's marker: the string, not a list


def parameter_constraints(parameters) -> dict[str, list | str]:
    """``{name: constraints}`` of the declared parameters, as scikit-learn validates them."""
    return {p.name: sklearn_constraints(p) for p in parameters}
