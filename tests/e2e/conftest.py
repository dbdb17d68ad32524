"""Start the real local stack (`python -m local_stack`, what `make serve` runs) for the end-to-end tests."""

from __future__ import annotations

import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "infery local stack is ready"


@dataclass(frozen=True)
class RunningStack:
    base_url: str
    api_key: str
    starting_credits: int
    output: list[str]

    def client(self, api_key: str | None = None, **options) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=api_key or self.api_key, max_retries=0, **options)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_stack(credits: int, timeout: float = 240) -> tuple[subprocess.Popen, RunningStack]:
    api_key = "inf_e2e_" + secrets.token_urlsafe(24)
    port = _free_port()
    environment = {**os.environ, "INFERY_DEV_KEY": api_key, "INFERY_DEV_CREDITS": str(credits),
                   "INFERY_PORT": str(port), "PYTHONPATH": str(ROOT / "layers" / "common" / "python"),
                   "INFERY_LAMBDA_CONCURRENCY": "3", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "local_stack", "--quiet"], cwd=ROOT, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
            process.kill()
            raise RuntimeError("the local stack did not start in time:\n" + "".join(output[-50:])) from None
        if line is None:
            raise RuntimeError("the local stack exited:\n" + "".join(output[-50:]))
        if READY_LINE in line:
            break
    return process, RunningStack(f"http://127.0.0.1:{port}/v1", api_key, credits, output)


def stop_stack(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    process, running = start_stack(credits=100_000)
    yield running
    stop_stack(process)
    assert process.returncode is not None
