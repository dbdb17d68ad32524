"""What the local stack, and the tests and benchmarks that start it, share to start a process: a free port, and
``python -m local_stack`` in a session of its own."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at this moment (the system picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_local_stack(arguments: list[str], environment: Mapping[str, str]) -> subprocess.Popen[str]:
    """``python -m local_stack ARGUMENTS`` from the repository's root, its output and errors on one text pipe.

    A session of its own: whoever started it can stop it with its whole process group (moto, the model server,
    the handlers' processes) when it does not stop cleanly.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "local_stack", *arguments],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
