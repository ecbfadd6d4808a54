"""The package layers: who may import whom (docs/design.md), checked on the source."""
import ast
import pathlib
import subprocess
import sys

import pytest

import dgmm

ROOT = pathlib.Path(dgmm.__file__).parent
#: package -> the dgmm packages it may import (``errors`` and ``_version`` are leaves that
#: every layer may import)
ALLOWED = {
    "core": {"core"},
    "engine": {"core", "engine"},
    "data": {"core", "engine", "data"},
    "estimators": {"core", "engine", "data", "estimators"},
    "workflow": {"core", "engine", "data", "estimators", "workflow"},
    "cli": {"core", "engine", "data", "estimators", "workflow", "cli"},
}
LEAVES = {"errors", "_version"}
#: third-party top-level packages a layer must not import
FORBIDDEN_THIRD_PARTY = {
    "core": {"dask", "distributed", "zarr", "pyarrow", "fsspec", "sklearn", "pydantic",
             "yaml", "matplotlib", "pandas"},
    "engine": {"zarr", "pyarrow", "fsspec", "pydantic", "yaml", "matplotlib"},
}


def _package_of(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: pathlib.Path):
    """(dgmm module parts, third-party top-level names) imported anywhere in the file."""
    tree = ast.parse(path.read_text())
    module = list(path.relative_to(ROOT).with_suffix("").parts)
    package = module[:-1] if path.name != "__init__.py" else module[:-1]
    ours, theirs = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + (node.module.split(".") if node.module else [])
                if not node.module:
                    ours.extend(target + [alias.name] for alias in node.names)
                else:
                    ours.append(target)
            elif node.module.split(".")[0] == "dgmm":
                ours.append(node.module.split(".")[1:])
            else:
                theirs.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top == "dgmm":
                    ours.append(alias.name.split(".")[1:])
                else:
                    theirs.add(top)
    return ours, theirs


SOURCES = sorted(p for p in ROOT.rglob("*.py") if _package_of(p) in ALLOWED)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers(path):
    layer = _package_of(path)
    ours, theirs = _imports(path)
    for target in ours:
        if not target or target[0] in LEAVES:
            continue
        head = target[0] if target[0] in ALLOWED else target[0]
        assert head in ALLOWED[layer] | LEAVES, (
            f"{path.relative_to(ROOT)} ({layer}) imports dgmm.{'.'.join(target)}")
    bad = theirs & FORBIDDEN_THIRD_PARTY.get(layer, set())
    assert not bad, f"{path.relative_to(ROOT)} ({layer}) imports {sorted(bad)}"


def test_every_module_belongs_to_a_layer():
    stray = [p.name for p in ROOT.glob("*.py")
             if p.stem not in ALLOWED and p.stem not in LEAVES | {"__init__", "__main__"}]
    assert stray == []


def test_the_checker_sees_a_violation(tmp_path):
    bad = ROOT / "core" / "_layer_probe_tmp.py"
    bad.write_text("import dask\nfrom ..workflow import runner\n")
    try:
        ours, theirs = _imports(bad)
        assert ["workflow"] in ours and "dask" in theirs
    finally:
        bad.unlink()


def test_importing_the_core_loads_no_dask_and_no_sklearn():
    code = ("import sys, importlib, pkgutil, dgmm.core as c\n"
            "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('dgmm.core.' + "
            "m.name)\nprint(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'dask', 'distributed', 'sklearn', 'zarr', 'pyarrow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


TYPE_NAMES = {"full", "tied", "diag", "spherical"}
#: the one module that knows the covariance types by name
FAMILY_MODULES = {ROOT / "core" / "families.py"}


def _name_branches(path: pathlib.Path, names: set[str], table_keys: int) -> list[int]:
    """Lines that compare with one of ``names`` or build a table keyed by at least
    ``table_keys`` of them."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                values = ([side] if isinstance(side, ast.Constant)
                          else list(side.elts) if isinstance(side, (ast.Tuple, ast.List, ast.Set))
                          else [])
                if any(isinstance(v, ast.Constant) and v.value in names for v in values):
                    lines.append(node.lineno)
        elif isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            if len(keys & names) >= table_keys:
                lines.append(node.lineno)
    return lines


def _type_branches(path: pathlib.Path) -> list[int]:
    """Lines that compare with a covariance type's name or index a table by them."""
    return _name_branches(path, TYPE_NAMES, 3)


@pytest.mark.parametrize("path", [p for p in SOURCES if p not in FAMILY_MODULES],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_outside_the_families_branches_on_the_covariance_type(path):
    assert _type_branches(path) == [], (
        f"{path.relative_to(ROOT)} branches on a covariance type name at lines "
        f"{_type_branches(path)}: ask dgmm.core.families.family(name) instead")


def test_the_branch_finder_sees_a_branch(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("if cov == 'tied':\n    pass\nx = {'full': 1, 'diag': 2, 'spherical': 3}\n")
    assert _type_branches(probe) == [1, 3]


POLICY_NAMES = {"raise", "drop", "marginalize"}
#: the one module that knows the non-finite policies by name
POLICY_MODULES = {ROOT / "core" / "nonfinite.py"}


@pytest.mark.parametrize("path", [p for p in SOURCES if p not in POLICY_MODULES],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_outside_the_policy_module_branches_on_the_nonfinite_policy(path):
    lines = _name_branches(path, POLICY_NAMES, 2)
    assert lines == [], (
        f"{path.relative_to(ROOT)} compares a non-finite policy's name at lines {lines}: "
        "ask dgmm.core.nonfinite.nonfinite_rule(name) instead")


def test_the_policy_branch_finder_sees_a_branch(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("if nonfinite != 'marginalize':\n    pass\n"
                     "ok = policy in ('drop', 'marginalize')\n")
    assert _name_branches(probe, POLICY_NAMES, 2) == [1, 3]


#: module of dgmm/workflow -> the workflow modules it may import. Following a workflow goes
#: down this order only: the runner gets a validated Workflow (loading resolved its cluster
#: profile), and the cluster module gets a validated profile, never a name to look up.
WORKFLOW_ALLOWED = {
    "__init__": set(),
    "drift": set(),
    "validators": set(),
    "model_config": {"validators"},
    "cluster_config": {"validators"},
    "schema": {"validators", "model_config", "cluster_config", "drift"},
    "profiles": {"cluster_config"},
    "overrides": {"schema", "cluster_config"},
    "loading": {"validators", "model_config", "cluster_config", "schema", "profiles",
                "overrides"},
    "cluster": {"cluster_config"},
    "lock": set(),
    "checkpoint": {"lock"},
    "plots": set(),
    "report_plots": {"plots"},
    "html_report": {"plots", "report_plots"},
    "report": {"plots", "report_plots", "html_report", "drift"},
    "monitoring": {"drift"},
    "stamps": {"schema"},
    "progress": {"checkpoint"},
    "fitting": {"schema", "checkpoint", "progress", "report"},
    "runner": {"schema", "cluster", "fitting", "stamps", "report", "monitoring", "checkpoint"},
}


@pytest.mark.parametrize("path", sorted((ROOT / "workflow").glob("*.py")), ids=lambda p: p.stem)
def test_workflow_modules_import_only_those_below_them(path):
    assert path.stem in WORKFLOW_ALLOWED, f"dgmm/workflow/{path.name} has no place in the order"
    ours, _ = _imports(path)
    used = {target[1] for target in ours if len(target) > 1 and target[0] == "workflow"}
    assert used <= WORKFLOW_ALLOWED[path.stem], (
        f"dgmm/workflow/{path.name} imports {sorted(used - WORKFLOW_ALLOWED[path.stem])}")


MAX_MODULE_LINES = 600


def test_no_module_is_longer_than_the_limit():
    """A module does one job and is read in one sitting: none above MAX_MODULE_LINES."""
    long = {str(p.relative_to(ROOT)): n for p in sorted(ROOT.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"modules above {MAX_MODULE_LINES} lines: {long}; split them by job"


def _resolve(root: pathlib.Path, parts: list[str]) -> str | None:
    """The module that ``parts`` (below ``root``) names, or None."""
    base = root.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return ".".join(parts)
    if (base / "__init__.py").is_file():
        return ".".join([*parts, "__init__"]) if parts else "__init__"
    return None


def import_graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    """module -> the dgmm modules it imports, anywhere in the file (function bodies too):
    ``from .pkg import sub`` is an import of ``pkg.sub`` when that is a module, else of
    ``pkg/__init__``."""
    graph = {}
    for path in sorted(root.rglob("*.py")):
        module = list(path.relative_to(root).with_suffix("").parts)
        package = module[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                elif node.module.split(".")[0] == "dgmm":
                    base = []
                else:
                    continue
                names = (node.module.split(".") if node.module else [])
                target = base + (names[1:] if not node.level else names)
                for alias in node.names:
                    found = _resolve(root, [*target, alias.name]) or _resolve(root, target)
                    if found:
                        edges.add(found)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == "dgmm" and (found := _resolve(root, parts[1:])):
                        edges.add(found)
        graph[".".join(module)] = edges - {".".join(module)}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The cycles of ``graph`` (one per strongly connected component with more than one
    module), each as its sorted modules."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycle_among_dgmm_modules():
    cycles = import_cycles(import_graph())
    assert cycles == [], f"import cycles: {cycles}; move what both need to a module below them"


def test_the_cycle_finder_sees_a_cycle(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from .b import g\n")
    (package / "b.py").write_text("from . import c\n")
    (package / "c.py").write_text("from .a import f\n")
    (package / "d.py").write_text("from .a import f\n")
    assert import_cycles(import_graph(tmp_path)) == [["pkg.a", "pkg.b", "pkg.c"]]
