"""The load test (tests/load, `make load...`) in short runs: it drives a local stack under each fault and its books
check holds. Run as a reader runs it, a subprocess (it starts and stops a stack of its own), so nothing it sets
reaches this process."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support.stack import ROOT

pytestmark = pytest.mark.e2e


def run_load(*arguments: str) -> str:
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "layers" / "common" / "python")}
    result = subprocess.run(
        [sys.executable, "-m", "tests.load", "--clients", "3", "--seconds", "15", *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def test_the_load_test_prints_its_figures_and_the_books_balance():
    output = run_load()
    assert re.search(r"^sync\s+\d+\s+\d+\s+[\d.]+\s+\d+\s+\d+\s+\d+$", output, re.MULTILINE), output
    assert re.search(r"^all\s+\d+", output, re.MULTILINE) and "answers: 200: " in output
    assert "5xx or no answer: 0," in output and output.rstrip().endswith("the books balance")


def test_the_books_balance_while_the_model_server_is_killed_and_restarted():
    output = run_load("--fault", "model-restart", "--outage", "3")
    assert "model server (pid" in output and "restarted" in output, output
    assert output.rstrip().endswith("the books balance")


def test_the_books_balance_while_dynamodb_throttles():
    output = run_load("--fault", "dynamodb-throttle", "--throttle-rate", "0.5")
    throttled = re.search(r"(\d+) DynamoDB calls were throttled", output)
    assert throttled and int(throttled.group(1)) > 0, output  # the fault reached the handlers
    assert output.rstrip().endswith("the books balance")
