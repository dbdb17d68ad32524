"""Tests share code through tests/support, never by importing each other.

A test module imported as a library runs its tests' module-level code wherever it is imported, drags its fixtures
into the importer's namespace (where pytest may collect them twice), and hides the shared code where nobody looks
for it. So every Python file under tests/ is read (AST, nothing is imported) and no import may name a ``test_*``
module or a conftest.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def _is_test_module(dotted: str) -> bool:
    return any(part.startswith("test_") or part == "conftest" for part in dotted.split("."))


def imported_test_modules(source: str, module: str) -> set[str]:
    """The test modules and conftests that ``source`` (the module named ``module``) imports, by dotted name."""
    package = module.rsplit(".", 1)[0] if "." in module else ""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if _is_test_module(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            if _is_test_module(origin):
                found.add(origin)
            # `from tests.unit import test_keys`: the imported name is the module
            found.update(f"{origin}.{alias.name}" for alias in node.names if _is_test_module(alias.name))
    return found


def _module_name(path: Path) -> str:
    # a package's __init__ keeps its name here: its relative imports start from the package itself
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_no_file_under_tests_imports_a_test_module_or_a_conftest():
    offenders: dict[str, set[str]] = {}
    for path in sorted(TESTS.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        imported = imported_test_modules(path.read_text(), _module_name(path))
        if imported:
            offenders[relative] = imported
    assert offenders == {}, (
        "test modules and conftests import no test module or conftest: move what they share to tests/support: "
        f"{offenders}"
    )


def test_the_check_reads_files_in_every_folder_of_the_tests():
    folders = {path.parent.relative_to(TESTS).as_posix() for path in TESTS.rglob("test_*.py")}
    assert {"unit", "integration", "integration/jobs", "e2e", "artifact"} <= folders


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        (
            "from tests.integration.test_auth_and_credits import model_answer",
            "tests.unit.test_x",
            {"tests.integration.test_auth_and_credits"},
        ),
        ("import tests.unit.test_keys as keys", "tests.unit.test_x", {"tests.unit.test_keys"}),
        ("from tests.e2e.conftest import start_stack", "tests.load.__main__", {"tests.e2e.conftest"}),
        ("from tests.unit import test_keys", "tests.unit.test_x", {"tests.unit.test_keys"}),
        ("from .test_keys import BASE62", "tests.unit.test_x", {"tests.unit.test_keys"}),
        ("from . import conftest", "tests.integration.jobs.test_x", {"tests.integration.jobs.conftest"}),
        (
            "from ..conftest import running_model_server",
            "tests.integration.jobs.test_x",
            {"tests.integration.conftest"},
        ),
        ("def f():\n    from tests.unit.test_keys import BASE62\n", "tests.unit.test_x", {"tests.unit.test_keys"}),
        ("from tests.support.keys import BASE62, spec_checksum", "tests.unit.test_x", set()),
        ("import pytest\nfrom tests.support import storage", "tests.integration.test_x", set()),
    ],
)
def test_the_check_finds_a_test_module_however_it_is_imported(source, module, expected):
    assert imported_test_modules(source, module) == expected
