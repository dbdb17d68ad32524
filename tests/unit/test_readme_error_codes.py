"""README's error table names every `code` the API can answer with (it once missed two).

The codes are read from the code itself: each ``SomeError(..., code="...")`` built in the layer and the handlers
(or the class's ``default_code`` when the call gives none), and the model server's codes the endpoint client
passes on to the client. A new code fails this test until README says when it comes.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from infery.adapters.realtime_endpoint import CLIENT_ERROR_CODES

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "common" / "python" / "infery"
SOURCES = [*sorted(LAYER.rglob("*.py")), *sorted((ROOT / "functions").rglob("*.py"))]
# codes no API answer carries, each with where it is seen instead
NOT_API_ANSWERS = {
    "key_not_found": "the operator's tool (`infery keys show`, `infery credits add`) and a key deleted mid-request",
}


def _error_classes() -> dict[str, str | None]:
    """Each error class of infery/domain/errors.py and its default code (inherited from its base when it has none)."""
    defaults: dict[str, str | None] = {}
    for node in ast.parse((LAYER / "domain" / "errors.py").read_text()).body:
        if not isinstance(node, ast.ClassDef):
            continue
        inherited = next(
            (defaults[base.id] for base in node.bases if isinstance(base, ast.Name) and base.id in defaults), None
        )
        own = next(
            (
                statement.value.value
                for statement in node.body
                if isinstance(statement, ast.AnnAssign | ast.Assign)
                and any(
                    isinstance(target, ast.Name) and target.id == "default_code"
                    for target in (statement.targets if isinstance(statement, ast.Assign) else [statement.target])
                )
                and isinstance(statement.value, ast.Constant)
            ),
            None,
        )
        defaults[node.name] = own if own is not None else inherited
    return defaults


def codes_the_api_answers() -> set[str]:
    classes = _error_classes()
    codes = set(CLIENT_ERROR_CODES)
    for source in SOURCES:
        for node in ast.walk(ast.parse(source.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in classes):
                continue
            given = next((keyword.value for keyword in node.keywords if keyword.arg == "code"), None)
            if isinstance(given, ast.Constant) and isinstance(given.value, str):
                codes.add(given.value)
            elif given is None and classes[node.func.id]:
                codes.add(classes[node.func.id] or "")
    return codes


def readme_error_codes() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("### Errors") :]
    table = table[: table.index("\n## ")]
    return set(re.findall(r"`([a-z0-9_]+)`", table))


def test_the_code_reading_finds_the_codes_it_must():
    codes = codes_the_api_answers()
    # a keyword code, a class default, and one the model server sends
    assert {"job_not_found", "insufficient_credits", "audio_changed", "missing_model"} <= codes
    assert len(codes) > 30


def test_every_code_the_api_answers_with_is_in_readmes_error_table():
    missing = codes_the_api_answers() - readme_error_codes() - set(NOT_API_ANSWERS)
    assert missing == set(), f"README.md's error table does not say when these come: {sorted(missing)}"
