"""The one declaration of the model's parameters and what is built from it."""
import dataclasses
import inspect
from numbers import Integral

import numpy as np
import pydantic
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.utils._param_validation import Interval, InvalidParameterError, Options

from dgmm import GaussianMixture
from dgmm.core import model_parameters as mp
from dgmm.core.families import COVARIANCE_TYPES
from dgmm.data import model_io
from dgmm.engine.em import EMSettings
from dgmm.engine.passes import DEFAULT_SPLIT_EVERY


def test_the_estimator_signature_is_the_declaration():
    signature = inspect.signature(GaussianMixture.__init__).parameters
    names = [name for name in signature if name != "self"]
    assert names == [p.name for p in mp.ESTIMATOR_PARAMETERS]
    for p in mp.ESTIMATOR_PARAMETERS:
        assert signature[p.name].default == p.default, p.name
    assert len(set(mp.BY_NAME)) == len(mp.PARAMETERS)


def described(constraint):
    if isinstance(constraint, Options):  # StrOptions too
        return "one of", constraint.type, frozenset(constraint.options)
    if isinstance(constraint, Interval):
        return constraint.type, constraint.left, constraint.right, constraint.closed
    return constraint


def test_constraints_come_from_the_declaration_and_match_sklearns():
    ours = GaussianMixture._parameter_constraints
    assert list(ours) == [p.name for p in mp.ESTIMATOR_PARAMETERS]
    theirs = SkGaussianMixture._parameter_constraints
    for name, constraints in theirs.items():
        if name == "verbose":  # scikit-learn's "verbose": an int >= 0 or a bool
            interval = ours[name][0]
            assert interval.type is Integral and interval.left == 0
            assert all(interval.is_satisfied_by(v) for v in (0, 3, True))
            assert not interval.is_satisfied_by(-1)
            continue
        if name == "covariance_type":  # scikit-learn's four, then mclust's fourteen
            assert ours[name][0].options == set(COVARIANCE_TYPES)
            assert constraints[0].options == set(COVARIANCE_TYPES[:4])
            continue
        assert [described(c) for c in ours[name]] == [described(c) for c in constraints], name
    assert ours["client"] == "no_validation"
    assert str(ours["split_every"][0]) == "an int in the range [2, inf)"
    nonfinite = ours["nonfinite"][0]
    assert nonfinite.is_satisfied_by("raise") and nonfinite.is_satisfied_by("drop")
    assert not nonfinite.is_satisfied_by("skip")


def test_engine_settings_are_the_declared_engine_parameters():
    fields = {f.name: f for f in dataclasses.fields(EMSettings)}
    assert set(fields) == set(mp.ENGINE_SETTINGS)
    for name, field in fields.items():
        if field.default is not dataclasses.MISSING:
            assert field.default == mp.DEFAULTS[name], name
    assert mp.DEFAULTS["split_every"] == DEFAULT_SPLIT_EVERY
    # the estimator hands the engine plain Python values of its parameters
    model = GaussianMixture(np.int64(3), tol=np.float32(0.5), covariance_type="tied",
                            split_every=np.int32(4))
    settings = model._settings()
    assert settings == EMSettings(3, "tied", tol=0.5, split_every=4)
    assert type(settings.n_components) is int and type(settings.tol) is float


def test_saved_settings_are_the_declared_ones():
    assert model_io.SETTINGS == mp.SAVED
    assert set(mp.ENGINE_SETTINGS) <= set(mp.SAVED) | {"random_state"}
    assert "random_state" in mp.SAVED and "client" not in mp.SAVED


def declared_workflow_model():
    """The workflow's ``model:`` section, generated from the declaration."""
    from dgmm.workflow.model_config import ModelConfig

    return ModelConfig


def test_the_workflow_model_section_is_the_declaration():
    from dgmm.workflow.model_config import ModelConfig

    assert list(ModelConfig.model_fields) == [p.name for p in mp.WORKFLOW_PARAMETERS]
    for p in mp.WORKFLOW_PARAMETERS:
        field = ModelConfig.model_fields[p.name]
        assert field.description == p.doc and field.default == p.default


def test_the_declaration_turns_into_pydantic_fields():
    model = declared_workflow_model()
    assert model().model_dump() == {p.name: p.default for p in mp.WORKFLOW_PARAMETERS}
    assert "client" not in model.model_fields and "nonfinite" not in model.model_fields
    assert model(n_components=4, covariance_type="diag", random_state=7,
                 means_init=[[0.0, 1.0]] * 4).n_components == 4
    assert model.model_fields["tol"].description == mp.BY_NAME["tol"].doc


@pytest.mark.parametrize("name, value", [
    ("n_components", 0), ("tol", -1e-9), ("reg_covar", -1.0), ("max_iter", -1),
    ("n_init", 0), ("verbose_interval", 0), ("split_every", 1), ("random_state", -1),
    ("random_state", 2**32), ("covariance_type", "round"), ("init_params", "bad"),
])
def test_the_schema_and_the_estimator_reject_the_same_values(name, value):
    with pytest.raises(pydantic.ValidationError, match=name):
        declared_workflow_model()(**{name: value})
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter"):
        GaussianMixture(**{name: value}).fit(np.zeros((10, 2)))


@pytest.mark.parametrize("name, value", [
    ("n_components", 1), ("tol", 0.0), ("max_iter", 0), ("split_every", 2),
    ("random_state", 0), ("random_state", 2**32 - 1), ("verbose_interval", 1),
])
def test_the_schema_and_the_estimator_accept_the_bounds(name, value):
    assert getattr(declared_workflow_model()(**{name: value}), name) == value
    GaussianMixture(**{name: value})._validate_params()


def test_a_declaration_is_checked():
    with pytest.raises(ValueError, match="kind"):
        mp.ModelParameter("x", 0, "integer", "doc")
    with pytest.raises(ValueError, match="options"):
        mp.ModelParameter("x", "a", "choice", "doc")
    assert mp.BY_NAME["random_state"].bounds == {"ge": 0, "lt": 2**32}


def exported_estimators():
    """Every scikit-learn estimator class that ``dgmm`` exports (new ones included)."""
    import sklearn.base

    import dgmm

    found = [getattr(dgmm, name) for name in dgmm.__all__]
    return [c for c in found if inspect.isclass(c) and issubclass(c, sklearn.base.BaseEstimator)]


def _outside(parameter):
    """A value that the declaration of ``parameter`` refuses, or None."""
    if parameter.kind == "choice":
        return "no-such-option"
    if parameter.kind in ("int", "float", "size"):
        if parameter.ge is not None:
            return parameter.ge - 1
        if parameter.gt is not None:
            return parameter.gt
    return None


@pytest.mark.parametrize("estimator", exported_estimators(), ids=lambda c: c.__name__)
def test_every_estimator_takes_its_declared_parameters(estimator):
    """Signature, defaults, constraints and documented parameters of every exported
    estimator are its entry in ``dgmm.core.model_parameters.ESTIMATORS``."""
    from dgmm.estimators.constraints import sklearn_constraints

    declared = mp.ESTIMATORS.get(estimator.__name__)
    assert declared is not None, (
        f"{estimator.__name__} is exported by dgmm but its parameters are not declared in "
        "dgmm.core.model_parameters.ESTIMATORS")
    names = [p.name for p in declared]
    signature = inspect.signature(estimator.__init__).parameters
    assert [name for name in signature if name != "self"] == names
    for p in declared:
        assert signature[p.name].default == p.default, p.name
        assert f"\n    {p.name} : " in estimator.__doc__, f"{p.name} is not documented"
    ours = estimator._parameter_constraints
    assert list(ours) == names
    for p in declared:
        expected = sklearn_constraints(p)
        if isinstance(expected, str):
            assert ours[p.name] == expected, p.name
        else:
            assert [described(c) for c in ours[p.name]] == [described(c) for c in expected]
        bad = _outside(p)
        if bad is not None and not p.grid:
            with pytest.raises(InvalidParameterError, match=f"'{p.name}' parameter"):
                estimator(**{p.name: bad})._validate_params()
    estimator()._validate_params()  # the defaults are valid


def test_the_minibatch_and_selection_declarations_differ_where_they_should():
    minibatch = {p.name: p for p in mp.ESTIMATORS["MiniBatchGaussianMixture"]}
    assert minibatch["n_init"].ge == minibatch["n_init"].le == 1  # one chain
    assert set(p.name for p in mp.MINIBATCH_PARAMETERS) <= set(minibatch)
    selection = {p.name: p for p in mp.ESTIMATORS["GaussianMixtureSelection"]}
    assert selection["n_components"].grid and selection["covariance_type"].grid
    assert "all" in selection["covariance_type"].options
    shared = {p.name for p in mp.ESTIMATOR_PARAMETERS} - {"n_components", "covariance_type"}
    assert {name: selection[name] for name in shared} == {
        p.name: p for p in mp.ESTIMATOR_PARAMETERS if p.name in shared}
