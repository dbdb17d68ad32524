"""README.md's examples, run as a reader runs them, against a local stack: an example that stops working fails.

Each fenced ``sh`` or ``python`` block of README.md is marked on the line before its fence: ``<!-- readme-test -->``
runs it, ``<!-- readme-test: skip, REASON -->`` does not (it needs AWS, or starts a stack itself). An unmarked block
fails the first test, so a new example is run unless someone says why not.

The blocks run in README order, in one scratch folder (with the repository's ``samples/`` and ``.venv/`` linked into
it, so the files they write stay out of the checkout), with what a reader substitutes: the key and base URL the
stack printed for ``inf_...`` and ``http://127.0.0.1:3000/v1``, and a key of the reader's for
``key_0123456789abcdef``. ``INFERY_API_KEY`` is set (as an earlier block exports it), and ``INFERY_STATE_FILE`` points
at this stack, so the ``infery`` command and the batch-drop example find it as they find ``make serve``'s. ``curl``
runs with ``--fail-with-body``: an error answer fails the block.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.stack import ROOT, RunningStack, start_stack, stop_stack

README = ROOT / "README.md"
MARKER = re.compile(r"^\s*<!--\s*readme-test(?::\s*(?P<skip>skip\b[^>]*?))?\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>[\w+-]*)\s*$")
LANGUAGES = {"sh": "sh", "bash": "sh", "shell": "sh", "python": "python", "py": "python"}
PLACEHOLDER_KEY = "inf_..."
PLACEHOLDER_BASE_URL = "http://127.0.0.1:3000/v1"
PLACEHOLDER_KEY_ID = "key_0123456789abcdef"
BLOCK_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class Example:
    line: int  # of the opening fence, 1-based
    language: str  # "sh" or "python"; "" for blocks of any other kind
    code: str
    marker: str | None  # None (unmarked), "run", or the skip text

    @property
    def id(self) -> str:
        return f"line-{self.line}-{self.language}"


def readme_examples(text: str) -> list[Example]:
    lines = text.splitlines()
    examples, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent = len(opening["indent"])
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        code = "\n".join(
            line[indent:] if line.startswith(" " * indent) else line.lstrip() for line in lines[index + 1 : end]
        )
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marked = MARKER.match(previous)
        marker = None if marked is None else (marked["skip"] or "run")
        examples.append(Example(index + 1, LANGUAGES.get(opening["language"], ""), code + "\n", marker))
        index = end + 1
    return examples


EXAMPLES = [example for example in readme_examples(README.read_text()) if example.language]
RUNNABLE = [example for example in EXAMPLES if example.marker == "run"]


def test_every_shell_and_python_example_is_run_or_says_why_not() -> None:
    unmarked = [example.id for example in EXAMPLES if example.marker is None]
    assert not unmarked, (
        "mark these README blocks with <!-- readme-test --> (run) or "
        f"<!-- readme-test: skip, REASON --> on the line before the fence: {unmarked}"
    )
    assert len(RUNNABLE) >= 8, [example.id for example in RUNNABLE]  # the parser still finds the examples


def test_the_parser_reads_indented_blocks_and_their_markers() -> None:
    text = (
        "1. a step\n   <!-- readme-test -->\n   ```sh\n   echo one\n     echo indented\n   ```\n\n"
        "<!-- readme-test: skip, needs AWS -->\n```python\nif True:\n    print(1)\n```\n\n```sh\nls\n```\n"
    )
    first, second, third = readme_examples(text)
    assert (first.line, first.language, first.code, first.marker) == (3, "sh", "echo one\n  echo indented\n", "run")
    assert (second.language, second.code, second.marker) == ("python", "if True:\n    print(1)\n", "skip, needs AWS")
    assert third.marker is None


@pytest.fixture(scope="module")
def readme_stack() -> Iterator[RunningStack]:
    process, running = start_stack(credits=10_000, concurrency=2)
    yield running
    stop_stack(process)


@pytest.fixture(scope="module")
def reader(readme_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The reader's scratch folder, environment and substitutions."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "samples").symlink_to(ROOT / "samples")
    (folder / ".venv").symlink_to(Path(sys.executable).parent.parent)
    shims = folder / ".shims"
    shims.mkdir()
    real_curl = shutil.which("curl")
    assert real_curl, "curl is needed for the README's examples"
    (shims / "curl").write_text(f'#!/bin/sh\nexec {real_curl} --fail-with-body "$@"\n')
    (shims / "curl").chmod(0o755)
    key_id, _ = readme_stack.create_key("readme-reader", 1_000)  # the key the operator's examples manage (and revoke)
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("INFERY_BASE_URL", "INFERY_API_KEY", "INFERY_STATE_FILE")
    }
    environment |= {
        "PATH": f"{shims}{os.pathsep}{environment.get('PATH', '')}",
        "INFERY_API_KEY": readme_stack.api_key,
        "INFERY_STATE_FILE": str(readme_stack.state_file),
    }
    host_port = readme_stack.base_url.removeprefix("http://").removesuffix("/v1")
    substitutions = {
        PLACEHOLDER_BASE_URL: readme_stack.base_url,
        "127.0.0.1:3000": host_port,
        PLACEHOLDER_KEY: readme_stack.api_key,
        PLACEHOLDER_KEY_ID: key_id,
    }
    return {"folder": folder, "environment": environment, "substitutions": substitutions}


def substituted(code: str, substitutions: dict[str, str]) -> str:
    for placeholder, value in substitutions.items():  # the base URL first: it contains the host and port
        code = code.replace(placeholder, value)
    return code


@pytest.mark.e2e
@pytest.mark.parametrize("example", RUNNABLE, ids=[example.id for example in RUNNABLE])
def test_the_readme_example_runs(example: Example, reader: dict[str, object]) -> None:
    code = substituted(example.code, reader["substitutions"])  # type: ignore[arg-type]
    command = ["bash", "-e", "-o", "pipefail", "-c", code] if example.language == "sh" else [sys.executable, "-c", code]
    result = subprocess.run(
        command,
        cwd=reader["folder"],
        env=reader["environment"],
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, (
        f"README.md's example at line {example.line} failed ({result.returncode}):\n"
        f"{code}\n--- stdout ---\n{result.stdout[-3000:]}\n"
        f"--- stderr ---\n{result.stderr[-3000:]}"
    )
