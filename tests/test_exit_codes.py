"""The exit-code table: one definition in dgmm.errors, shown by --help and in docs/cli.md."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys

from helpers import REPO

from dgmm import errors
from dgmm.cli import _parser
from dgmm.errors import EXIT_CODE_TABLE, DgmmError

DOCS = REPO / "docs" / "cli.md"


def _docs_table() -> list[tuple[int, str | None, str]]:
    """The rows of the table under '## Exit codes' in docs/cli.md."""
    section = DOCS.read_text().split("## Exit codes", 1)[1]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            rows.append((int(cells[0]), cells[1].strip("`") or None, cells[2]))
    return rows


def test_the_docs_table_is_the_table_in_errors():
    expected = [(row.code, row.error.__name__ if row.error else None, row.meaning)
                for row in EXIT_CODE_TABLE]
    assert _docs_table() == expected


def test_dgmm_help_shows_every_code():
    out = subprocess.run([sys.executable, "-m", "dgmm.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    epilog = out.split("exit codes:", 1)[1]
    shown = [int(code) for code in re.findall(r"^  (\d+) ", epilog, flags=re.M)]
    assert shown == [row.code for row in EXIT_CODE_TABLE]
    flat = " ".join(out.split())  # argparse may wrap long lines
    for row in EXIT_CODE_TABLE:
        assert " ".join(row.meaning.split()) in flat, row
        if row.error is not None:
            assert f"{row.error.__name__}: " in out


def test_every_error_class_has_its_row_and_every_code_one_meaning():
    classes = {cls for cls in vars(errors).values()
               if isinstance(cls, type) and issubclass(cls, DgmmError) and cls is not DgmmError}
    in_table = {row.error for row in EXIT_CODE_TABLE if row.error is not None}
    assert in_table == classes
    for row in EXIT_CODE_TABLE:
        if row.error is not None:
            assert row.error.exit_code == row.code
    codes = [row.code for row in EXIT_CODE_TABLE]
    assert codes == sorted(set(codes))
    assert {0, 1, 130, 143} <= set(codes)
    assert DgmmError.exit_code == errors.EXIT_UNEXPECTED == 1


def test_the_docs_list_every_command_and_option():
    text = DOCS.read_text()
    parser = _parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        assert f"## `dgmm {name}" in text, name
        section = text.split(f"## `dgmm {name}", 1)[1].split("\n## ", 1)[0]
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            shown = action.option_strings[0] if action.option_strings else action.dest.upper()
            assert f"`{shown}" in section, f"dgmm {name} {shown}"
