"""numpydoc docstrings on the public API: every function and estimator method that
``dgmm`` exports says what it takes (Parameters) and what it gives (Returns)."""
import ast
import inspect
import textwrap

import pytest

import dgmm


def public_callables():
    """(qualified name, function) of every public function exported by ``dgmm`` and every
    public method, defined in dgmm, of the classes it exports."""
    found = []
    for name in dgmm.__all__:
        value = getattr(dgmm, name)
        if inspect.isfunction(value):
            found.append((name, value))
        elif inspect.isclass(value) and not issubclass(value, BaseException):
            for attr, member in vars(value).items():
                function = member.__func__ if isinstance(member, (classmethod, staticmethod)) \
                    else member
                if (attr.startswith("_") and attr != "__init__") or not inspect.isfunction(
                        function):
                    continue
                found.append((f"{name}.{attr}", function))
    return found


def _parameters(function) -> list[str]:
    names = list(inspect.signature(function).parameters)
    return [n for n in names if n not in ("self", "cls")]


def _returns_a_value(function) -> bool:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    body = tree.body[0]
    for node in ast.walk(body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) \
                and node is not body:
            continue
        if isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            return True
    return False


def _sections(doc: str) -> set[str]:
    lines = inspect.cleandoc(doc or "").splitlines()
    return {lines[i].strip() for i in range(len(lines) - 1)
            if lines[i + 1].strip() and set(lines[i + 1].strip()) == {"-"}
            and len(lines[i + 1].strip()) >= len(lines[i].strip())}


PUBLIC = public_callables()


@pytest.mark.parametrize("name, function", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_public_callables_have_numpydoc_sections(name, function):
    doc = inspect.getdoc(function)
    if name.endswith(".__init__"):  # scikit-learn's convention: documented on the class
        doc = inspect.getdoc(getattr(dgmm, name.split(".")[0]))
    assert doc, f"{name} has no docstring"
    sections = _sections(doc)
    if _parameters(function) and not name.endswith(".__init__"):
        assert "Parameters" in sections, f"{name}: no numpydoc Parameters section"
    if name.endswith(".__init__"):
        assert "Parameters" in sections, f"{name.split('.')[0]}: no Parameters section"
    if not name.endswith(".__init__") and _returns_a_value(function):
        assert sections & {"Returns", "Yields"}, f"{name}: no numpydoc Returns section"


def test_the_section_finder_reads_numpydoc():
    def documented(x):
        """One line.

        Parameters
        ----------
        x : int

        Returns
        -------
        int
        """
        return x

    def bare(x):
        """Returns x."""
        return x

    assert _sections(documented.__doc__) == {"Parameters", "Returns"}
    assert _sections(bare.__doc__) == set() and _returns_a_value(bare)
    assert len(PUBLIC) > 20
