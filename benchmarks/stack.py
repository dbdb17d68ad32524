"""Start the real local stack (``python -m local_stack``, what ``make serve`` runs) for a benchmark, and stop it.

The stack runs in a session of its own with a state file of its own, so stopping it (terminate, then kill
its whole process group) takes moto, the model server and the handler processes with it, and nothing is
written to the repository's ``.infery/``. It prints its own development key, which is read from its output.
"""

from __future__ import annotations

import collections
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from local_stack.processes import free_port, start_local_stack

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
READY_LINE = "infery local stack is ready"
_BASE_URL = re.compile(r"base URL:\s*(\S+)")
_API_KEY = re.compile(r"API key:\s*(inf_\S+)")


class StackFailed(RuntimeError):
    """The local stack did not start, or exited; the message carries the end of its output."""


@dataclass
class LocalStack:
    process: subprocess.Popen
    state_dir: Path
    base_url: str = ""
    api_key: str = ""
    output: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))

    def tail(self, lines: int = 40) -> str:
        return "".join(list(self.output)[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Terminate the stack (it stops what it started), then kill whatever of its group is left."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.state_dir, ignore_errors=True)


def start_stack(
    credits: int = 1_000_000, timeout: float = 300, environment: dict[str, str] | None = None
) -> LocalStack:
    """Start the stack on a free port and wait for its ready line; raise StackFailed with its output if not."""
    state_dir = Path(tempfile.mkdtemp(prefix="infery-bench-"))
    env = {key: value for key, value in os.environ.items() if key != "INFERY_DEV_KEY"}  # the stack makes one
    env.update(
        {
            "INFERY_STATE_FILE": str(state_dir / "local-stack.json"),
            "INFERY_DEV_CREDITS": str(credits),
            "INFERY_LOCAL_EPHEMERAL": "1",  # every run starts empty: nothing kept from, or for, another
            "PYTHONPATH": str(ROOT / "layers" / "common" / "python"),
            "PYTHONUNBUFFERED": "1",
            **(environment or {}),
        }
    )
    process = start_local_stack(["--port", str(free_port()), "--quiet"], env)
    stack = LocalStack(process, state_dir)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # keeps reading after start-up, so the stack never blocks on a full pipe
        assert process.stdout is not None
        for line in process.stdout:
            stack.output.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    ready = False
    try:
        while not (ready and stack.base_url and stack.api_key):
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise StackFailed(f"the local stack was not ready after {timeout:.0f} s:\n{stack.tail()}") from None
            if line is None:
                raise StackFailed(f"the local stack exited with code {process.wait()}:\n{stack.tail()}")
            ready = ready or READY_LINE in line
            if ready and (match := _BASE_URL.search(line)):
                stack.base_url = match[1].rstrip("/")
            if ready and (match := _API_KEY.search(line)):
                stack.api_key = match[1]
    except BaseException:
        stack.stop()
        raise
    return stack


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so a benchmark's ``finally`` stops the stack when the benchmark is killed."""

    def handler(signum, frame):  # noqa: ARG001 - signal's signature
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def sent_together(count: int, call: Callable[[], T]) -> tuple[list[T | Exception], float]:  # noqa: UP047 - runs on 3.11 too
    """``count`` calls of ``call``, each on a thread of its own, released at once: each call's answer (or the
    exception it raised), and the wall seconds from the release to the last answer."""
    start = threading.Barrier(count + 1)

    def one() -> T:
        start.wait()
        return call()

    outcomes: list[T | Exception] = []
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(one) for _ in range(count)]
        start.wait()
        started = time.perf_counter()
        for future in futures:
            try:
                outcomes.append(future.result())
            except Exception as exc:  # noqa: BLE001 - the caller decides what a failed call means
                outcomes.append(exc)
        wall = time.perf_counter() - started
    return outcomes, wall
