"""What `make serve` prints: the banner, one line per API request, warnings and errors; not moto's or the model
server's request lines, not the handlers' INFO logs or metrics, not powertools' empty-metrics warning.

The same stack is also where `infery transcribe` finds its URL through the state file (no INFERY_BASE_URL).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.stack import INFERY_COMMAND, ROOT, RunningStack, start_stack, stop_stack

pytestmark = pytest.mark.e2e

REQUEST_LINE = re.compile(r"^\d\d:\d\d:\d\d (GET|POST) (/v1/\S*) (\d{3}) (\d+) ms( (\d+) credits?)?$")


@pytest.fixture(scope="module")
def default_stack() -> Iterator[RunningStack]:
    process, running = start_stack(credits=1_000, concurrency=2, flags=())  # what `make serve` runs
    yield running
    stop_stack(process)


@pytest.fixture(scope="module")
def short_wav(speech_files: dict[str, Path]) -> Path:
    return speech_files["wav"]


def test_make_serve_prints_one_line_per_request_and_none_of_the_noise(
    default_stack: RunningStack, short_wav: Path
) -> None:
    base, headers = default_stack.base_url, default_stack.headers()
    assert requests.get(f"{base}/models", headers=headers, timeout=30).status_code == 200
    assert requests.get(f"{base}/models", headers=default_stack.headers("inf_abc"), timeout=30).status_code == 401
    with short_wav.open("rb") as audio:
        reply = requests.post(
            f"{base}/audio/transcriptions",
            headers=headers,
            data={"model": "whisper-1"},
            files={"file": ("speech.wav", audio)},
            timeout=120,
        )
    assert reply.status_code == 200, reply.text
    used = reply.headers["x-infery-credits-used"]

    # the client, as a user runs it after `make serve`: no INFERY_BASE_URL, the stack found by its state file
    environment = {name: value for name, value in os.environ.items() if name != "INFERY_BASE_URL"}
    environment |= {"INFERY_API_KEY": default_stack.api_key, "INFERY_STATE_FILE": str(default_stack.state_file)}
    result = subprocess.run(
        [str(INFERY_COMMAND), "transcribe", str(short_wav), "--job", "--no-progress"],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"using {default_stack.base_url} (the local stack's state file {default_stack.state_file})" in result.stderr
    assert "fox" in result.stdout.lower()

    time.sleep(3)  # the queue pollers keep calling moto meanwhile: none of those calls may show
    output = [line.rstrip("\n") for line in default_stack.output]
    after_banner = output[next(i for i, line in enumerate(output) if "Ctrl-C stops everything" in line) + 1 :]
    printed = [line for line in after_banner if line.strip()]
    request_lines = [REQUEST_LINE.match(line) for line in printed]
    assert all(request_lines), "\n".join(line for line, match in zip(printed, request_lines, strict=True) if not match)
    seen = [(match.group(1), match.group(2), match.group(3), match.group(6)) for match in request_lines]
    assert ("GET", "/v1/models", "200", None) in seen and ("GET", "/v1/models", "401", None) in seen
    assert ("POST", "/v1/audio/transcriptions", "200", used) in seen
    assert any(method == "POST" and path == "/v1/uploads" and status == "201" for method, path, status, _ in seen)
    assert any(path.endswith("/result") and status == "200" and cost for _, path, status, cost in seen)
    everything = "\n".join(output)
    for noise in ('HTTP/1.1" 200', "No application metrics", '"level":"INFO"', " INFO ", "_aws"):
        assert noise not in everything, noise


def test_make_serve_verbose_brings_every_log_back(short_wav: Path) -> None:
    """`python -m local_stack --verbose`: moto's request lines and the handlers' INFO logs, hidden by default."""
    process, verbose_stack = start_stack(credits=100, concurrency=1, flags=("--verbose",))
    try:
        with short_wav.open("rb") as audio:
            reply = requests.post(
                f"{verbose_stack.base_url}/audio/transcriptions",
                headers=verbose_stack.headers(),
                data={"model": "whisper-1"},
                files={"file": ("speech.wav", audio)},
                timeout=120,
            )
        assert reply.status_code == 200, reply.text
        time.sleep(2)  # the handler's process writes its logs through the stack's output
        everything = "".join(verbose_stack.output)
    finally:
        stop_stack(process)
    assert 'HTTP/1.1" 200' in everything  # moto's and the model server's own request lines
    assert any('"level":"INFO"' in line and '"service":"infery"' in line for line in everything.splitlines())
