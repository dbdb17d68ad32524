"""The layers of the ``infery`` package import only downwards, read from the source (every import, also those made
only for type checking or inside a function):

    functions/*/app.py              the Lambda handlers
          |
    infery/http/                    routes, request parsing, idempotency, errors -> HTTP
          |
    infery/wiring.py, settings.py   build every adapter and use case from the function's settings
          |                  \
    infery/usecases/   infery/adapters/    (adapters implement the use cases' ports without importing them)
          |                  /
    infery/domain/                  no AWS, no Lambda, no other layer

The domain imports no other layer and no AWS or Lambda library; the use cases reach the outside world only through
their ports, never an adapter; the HTTP edge is handed its collaborators by the wiring and never imports an adapter.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LAYER = Path(__file__).resolve().parents[2] / "layers" / "common" / "python"
PACKAGE = LAYER / "infery"

# which parts of infery each layer may import (a layer may always import itself)
MAY_IMPORT = {
    "domain": frozenset(),
    "usecases": frozenset({"domain", "observability"}),
    "adapters": frozenset({"domain", "observability"}),
    "http": frozenset({"domain", "usecases", "observability", "wiring", "settings"}),
}
# libraries that tie code to AWS or to Lambda's runtime
AWS_LIBRARIES = frozenset({"boto3", "botocore", "aws_lambda_powertools", "moto"})
MAY_USE_AWS = frozenset({"adapters", "http"})

# Imports still waiting for their port; each one here is a known violation to remove, never one to add.
NOT_YET_BEHIND_A_PORT: frozenset[tuple[str, str]] = frozenset()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LAYER).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, importer: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` imports, relative imports resolved against ``importer``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                base = node.module
            else:
                package = importer.split(".") if is_package else importer.split(".")[:-1]
                base = ".".join(package[: len(package) - (node.level - 1)] + ([node.module] if node.module else []))
            names.add(base)
            # ``from infery.domain import keys`` imports the module infery.domain.keys
            names.update(
                f"{base}.{alias.name}"
                for alias in node.names
                if (LAYER / base.replace(".", "/") / alias.name).with_suffix(".py").is_file()
            )
    return names


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "infery" or len(parts) < 2:
        return None
    return parts[1]


def violations(importer: str, source: str, is_package: bool = False) -> list[str]:
    """What ``source`` (the module ``importer``) imports against the rules above."""
    layer = layer_of(importer)
    if layer not in MAY_IMPORT:
        return []  # settings, wiring, snapstart, observability: the composition at the top
    found = []
    for imported in sorted(imported_modules(source, importer, is_package)):
        target = layer_of(imported)
        if target is not None and target != layer and target not in MAY_IMPORT[layer]:
            if (importer, imported) not in NOT_YET_BEHIND_A_PORT:
                found.append(f"{importer} imports {imported}")
        if imported.split(".")[0] in AWS_LIBRARIES and layer not in MAY_USE_AWS:
            found.append(f"{importer} imports {imported}")
    return found


def layer_modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)


@pytest.mark.parametrize("path", layer_modules(), ids=lambda path: module_name(path))
def test_each_module_imports_only_downwards(path: Path) -> None:
    assert violations(module_name(path), path.read_text(), path.name == "__init__.py") == []


def test_every_module_is_in_a_layer_or_at_the_top() -> None:
    top = {"__init__", "settings", "wiring", "snapstart", "observability"}
    for path in layer_modules():
        layer = layer_of(module_name(path))
        assert layer in MAY_IMPORT or layer in top or layer is None, f"{path} is in no layer: add it to one"


def test_the_known_violations_are_still_in_the_code() -> None:
    # an entry left here after its import is gone would let the same import come back unnoticed
    for importer, imported in NOT_YET_BEHIND_A_PORT:
        path = LAYER / (importer.replace(".", "/") + ".py")
        assert imported in imported_modules(path.read_text(), importer), (importer, imported)


@pytest.mark.parametrize(
    ("importer", "source"),
    [
        ("infery.domain.ledger", "import boto3"),
        ("infery.domain.ledger", "from botocore.exceptions import ClientError"),
        ("infery.domain.jobs", "from infery.adapters.job_store import JobStore"),
        ("infery.domain.jobs", "from ..usecases import ports"),
        ("infery.domain.keys", "if TYPE_CHECKING:\n    from infery.http.errors import error_response"),
        ("infery.usecases.jobs", "from infery.adapters import credit_store"),
        ("infery.usecases.jobs", "def f():\n    from ..adapters.job_store import JobStore"),
        ("infery.usecases.jobs", "from infery.wiring import Wiring"),
        ("infery.usecases.usage", "import botocore.exceptions"),
        ("infery.adapters.job_store", "from infery.usecases.jobs import JobService"),
        ("infery.http.errors", "from infery.adapters.key_store import KeyStore"),
    ],
)
def test_a_wrong_import_is_found(importer: str, source: str) -> None:
    assert violations(importer, source)


@pytest.mark.parametrize(
    ("importer", "source"),
    [
        ("infery.domain.ledger", "from infery.domain.errors import InternalError"),
        ("infery.domain.ledger", "from .errors import InternalError"),
        ("infery.usecases.jobs", "from infery.usecases.ports import Jobs\nfrom infery.domain.jobs import Job"),
        ("infery.adapters.job_store", "import boto3\nfrom infery.domain.jobs import Job"),
        ("infery.http.errors", "from aws_lambda_powertools.event_handler import Response"),
    ],
)
def test_a_right_import_passes(importer: str, source: str) -> None:
    assert violations(importer, source) == []
