"""Start the real local stack (`python -m local_stack`, what `make serve` runs): for the end-to-end tests and the load
run (tests/load).

Every stack gets a state file of its own (INFERY_STATE_FILE in a temporary folder), so stacks started by
different tests never share one, `infery --local` can be pointed at exactly one of them, and nothing is
written to the repository's `.infery/`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import openai
import requests
from boto3.dynamodb.types import TypeDeserializer
from infery.domain.keys import generate_api_key

from local_stack.processes import free_port, start_local_stack

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "infery local stack is ready"
# the operator's console script, installed beside the interpreter that runs the tests (.venv/bin/infery)
INFERY_COMMAND = Path(sys.executable).with_name("infery")
GENERATED_KEY = re.compile(r"\binf_[0-9A-Za-z]{46}\b")
KEY_ID = re.compile(r"\bkey_[0-9a-f]{16}\b")

_deserializer = TypeDeserializer()


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal: ints stay ints, the rest become floats."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _deserialize(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _plain(_deserializer.deserialize(value)) for name, value in item.items()}


@dataclass(frozen=True)
class RunningStack:
    base_url: str
    api_key: str
    starting_credits: int
    output: list[str]
    state_file: Path
    # what the stack wrote to its state file: base_url, pid, model_server_pid, environment
    state: dict[str, Any] = field(repr=False)

    @property
    def environment(self) -> dict[str, str]:
        return self.state["environment"]

    @property
    def model_server_pid(self) -> int:
        return int(self.state["model_server_pid"])

    def client(self, api_key: str | None = None, **options) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=api_key or self.api_key, max_retries=0, **options)

    def headers(self, api_key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key or self.api_key}"}

    def usage(self, api_key: str | None = None) -> dict[str, Any]:
        response = requests.get(f"{self.base_url}/usage", headers=self.headers(api_key), timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    # the stack's DynamoDB (moto), read directly: what the API says is checked against what is stored

    def dynamodb(self):
        return self.aws_client("dynamodb")

    def aws_client(self, service: str):
        """A boto3 client for the stack's moto, from the environment its state file gives."""
        env = self.environment
        return boto3.client(
            service,
            endpoint_url=env[f"AWS_ENDPOINT_URL_{service.upper()}"],
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=env["AWS_SESSION_TOKEN"],
        )

    def _items(self, operation: str, table: str, **arguments: Any) -> list[dict[str, Any]]:
        """Every item of a query or scan (``operation``) of the table the stack names ``table`` (its environment's
        name for it), page after page, read consistently, as stored."""
        pages = (
            self.dynamodb()
            .get_paginator(operation)
            .paginate(TableName=self.environment[table], ConsistentRead=True, **arguments)
        )
        return [_deserialize(item) for page in pages for item in page["Items"]]

    def ledger(self, key_id: str) -> list[dict[str, Any]]:
        """Every ledger entry of ``key_id``, as stored (credits signed), in time order."""
        entries = self._items(
            "query",
            "LEDGER_TABLE_NAME",
            KeyConditionExpression="key_id = :key_id",
            ExpressionAttributeValues={":key_id": {"S": key_id}},
        )
        return sorted(entries, key=lambda entry: entry["created_at"])

    def key_row(self, key_id: str) -> dict[str, Any]:
        rows = self._items("scan", "KEYS_TABLE_NAME")
        matching = [row for row in rows if row["key_id"] == key_id]
        assert len(matching) == 1, f"{len(matching)} keys have the id {key_id}"
        return matching[0]

    def jobs_of(self, key_id: str) -> list[dict[str, Any]]:
        """Every job row of ``key_id``, as stored."""
        return self._items(
            "scan",
            "JOBS_TABLE_NAME",
            FilterExpression="key_id = :key_id",
            ExpressionAttributeValues={":key_id": {"S": key_id}},
        )

    def open_reservations(self) -> list[dict[str, Any]]:
        return self._items("scan", "RESERVATIONS_TABLE_NAME")

    # the operator's tool, run as an operator runs it: the console script, pointed at this stack's state file

    def infery(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "INFERY_STATE_FILE": str(self.state_file)}
        result = subprocess.run(
            [str(INFERY_COMMAND), "--local", *arguments],
            env=environment,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, f"infery {' '.join(arguments)} failed:\n{result.stdout}{result.stderr}"
        return result

    def create_key(self, name: str, credits: int, *options: str) -> tuple[str, str]:
        """`infery --local keys create`: the new key's id and the clear key it printed once."""
        result = self.infery("keys", "create", "--name", name, "--credits", str(credits), *options)
        keys, key_ids = GENERATED_KEY.findall(result.stdout), KEY_ID.findall(result.stdout)
        assert len(keys) == 1 and key_ids, result.stdout
        return key_ids[0], keys[0]


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the stack and everything it started: moto, the model, workers
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(timeout=30)


def start_stack(
    credits: int,
    timeout: float = 240,
    concurrency: int = 3,
    extra_environment: dict[str, str] | None = None,
    flags: tuple[str, ...] = ("--quiet",),
) -> tuple[subprocess.Popen, RunningStack]:
    """Start `python -m local_stack FLAGS` (by default --quiet: the banner, warnings and errors only)."""
    api_key = generate_api_key()  # an operator's own key must have the generated shape and checksum
    port = free_port()
    state_file = Path(tempfile.mkdtemp(prefix="infery-e2e-")) / "local-stack.json"
    environment = {
        **os.environ,
        "INFERY_DEV_KEY": api_key,
        "INFERY_DEV_CREDITS": str(credits),
        "INFERY_PORT": str(port),
        "PYTHONPATH": str(ROOT / "layers" / "common" / "python"),
        "INFERY_LAMBDA_CONCURRENCY": str(concurrency),
        "PYTHONUNBUFFERED": "1",
        "INFERY_STATE_FILE": str(state_file),
        "INFERY_LOCAL_EPHEMERAL": "1",  # every stack starts empty and keeps nothing (unless a test says otherwise)
        **(extra_environment or {}),
    }
    # a session of its own: the stack is stopped with its whole process group if it does not stop cleanly
    process = start_local_stack(list(flags), environment)
    process.infery_state_file = state_file  # type: ignore[attr-defined]  # for stop_stack's clean-up
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            stop_stack(process)
            raise RuntimeError("the local stack did not start in time:\n" + "".join(output[-50:])) from None
        if line is None:
            stop_stack(process)
            raise RuntimeError("the local stack exited:\n" + "".join(output[-50:]))
        if READY_LINE in line:
            break
    state = json.loads(state_file.read_text())  # written before the ready line is printed
    base_url = f"http://127.0.0.1:{port}/v1"
    assert state["base_url"] == base_url and state["pid"] == process.pid, state
    return process, RunningStack(base_url, api_key, credits, output, state_file, state)


@contextlib.contextmanager
def running_stack(credits: int, **options: Any) -> Iterator[RunningStack]:
    """A stack of its own (``options`` as start_stack's) for what runs inside; stopped on the way out, whatever
    happened there."""
    process, running = start_stack(credits, **options)
    try:
        yield running
    finally:
        stop_stack(process)
    assert process.returncode is not None


def stop_stack(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    _kill_group(process)  # whatever of its group outlived it (nothing, when it stopped cleanly)
    state_file: Path | None = getattr(process, "infery_state_file", None)
    if state_file is not None:
        shutil.rmtree(state_file.parent, ignore_errors=True)
