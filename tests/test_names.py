"""Every dotted ``dgmm.*`` name in the package's source (messages, docstrings, comments)
and in the documentation resolves: an importable module, or an attribute of one."""
import importlib
import pathlib
import re

import pytest

import dgmm

ROOT = pathlib.Path(dgmm.__file__).parent
PROJECT = ROOT.parent
#: dotted names that are files, not Python names (the checkpoint directory's lock file)
FILE_NAMES = {"dgmm.lock"}
DOTTED = re.compile(r"\bdgmm(?:\.[A-Za-z_][A-Za-z0-9_]*)+([*{]?)")
SOURCES = sorted(ROOT.rglob("*.py")) + sorted((PROJECT / "docs").glob("*.md")) + [
    p for p in (PROJECT / "README.md",) if p.exists()]


def resolves(name: str, prefix: bool = False) -> bool:
    """``name`` is a module or a chain of attributes of one; with ``prefix`` its last
    part only begins a name (``dgmm.data.readers.open_*``, ``dgmm.data.open_{kind}``)."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        rest = parts[split:]
        if prefix and rest:
            *rest, start = rest
        for attribute in rest:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return not prefix or not parts[split:] or any(
            a.startswith(start) for a in dir(obj))
    return False


def dotted_names(path: pathlib.Path):
    for match in DOTTED.finditer(path.read_text()):
        name = match.group(0).rstrip("*{").rstrip(".")
        if name not in FILE_NAMES:
            yield name, bool(match.group(1))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PROJECT)))
def test_every_dotted_name_resolves(path):
    broken = sorted({name for name, prefix in dotted_names(path) if not resolves(name, prefix)})
    assert broken == [], f"{path.relative_to(PROJECT)} names {broken}, which do not exist"


def test_the_resolver_tells_names_apart():
    assert resolves("dgmm.core.mstep.m_step") and resolves("dgmm.engine.em")
    assert resolves("dgmm.data.readers.open_", prefix=True)
    assert not resolves("dgmm.mstep") and not resolves("dgmm.core.mstep.no_such_name")
