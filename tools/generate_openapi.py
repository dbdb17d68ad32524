"""Write openapi.json from the code: the transcribe handler's route table, infery.http.openapi's operations and schemas.

    python -m tools.generate_openapi           # rewrite openapi.json
    python -m tools.generate_openapi --check   # exit 1 when the committed file is not what the code generates

The handler is imported as Lambda imports it, with the environment template.yaml gives TranscribeFunction and
placeholder credentials (importing it builds boto3 clients; nothing is called). The environment and the cached
settings are put back afterwards, so a test can call ``generated()`` in the same process as others.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
APP_SOURCE = ROOT / "functions" / "transcribe" / "app.py"
DOCUMENT = ROOT / "openapi.json"
_PLACEHOLDERS = {
    "AWS_ACCESS_KEY_ID": "openapi",
    "AWS_SECRET_ACCESS_KEY": "openapi",  # noqa: S105 - not secrets
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def _load_resolver() -> Any:
    from infery.settings import get_settings

    from local_stack.template import LocalTemplate, load_template

    environment = {
        **LocalTemplate(load_template(), stack_name="openapi").function_environment("TranscribeFunction"),
        **_PLACEHOLDERS,
    }
    saved = dict(os.environ)
    os.environ.update(environment)
    get_settings.cache_clear()
    try:
        spec = importlib.util.spec_from_file_location("app", APP_SOURCE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.app
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def generated() -> str:
    """openapi.json as the code describes it now."""
    from infery.http.openapi import openapi_document, render, routes_of

    return render(openapi_document(routes_of(_load_resolver())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file instead of writing")
    arguments = parser.parse_args()
    text = generated()
    if arguments.check:
        if not DOCUMENT.exists() or DOCUMENT.read_text(encoding="utf-8") != text:
            print(f"{DOCUMENT.name} is not what the code generates: run `make openapi` and commit it", file=sys.stderr)
            return 1
        print(f"{DOCUMENT.name} matches the code")
        return 0
    DOCUMENT.write_text(text, encoding="utf-8")
    print(f"wrote {DOCUMENT.name} ({len(text):,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
