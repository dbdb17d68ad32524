"""Calls on a running local stack as a user makes them: over HTTP (uploads, jobs, usage) and with the `infery`
command; and the ledger entries they leave. For the end-to-end tests of large files and long audio."""

from __future__ import annotations

import math
import os
import subprocess
import time
from typing import Any

import requests

from tests.support.stack import INFERY_COMMAND, ROOT, RunningStack

SECONDS_PER_CREDIT = 5  # template.yaml's SecondsPerCredit default
JOB_TIMEOUT_SECONDS = 300


def ledger_entries(stack: RunningStack, key_id: str, request_id: str) -> list[dict[str, Any]]:
    """The stored ledger entries of one request (a job's request id is its job id), in time order."""
    return [entry for entry in stack.ledger(key_id) if entry["request_id"] == request_id]


def usage(stack: RunningStack) -> dict[str, Any]:
    response = requests.get(f"{stack.base_url}/usage", headers=stack.headers(), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def get_job(stack: RunningStack, job_id: str, api_key: str | None = None) -> dict[str, Any]:
    response = requests.get(f"{stack.base_url}/jobs/{job_id}", headers=stack.headers(api_key), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def plain_text_result(stack: RunningStack, job_id: str, response_format: str) -> requests.Response:
    """A job's result rendered as ``response_format`` (srt, vtt, text): answered 200, in text/plain."""
    response = requests.get(
        f"{stack.base_url}/jobs/{job_id}/result",
        params={"response_format": response_format},
        headers=stack.headers(),
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response


def wait_for_job(
    stack: RunningStack, job_id: str, timeout: float = JOB_TIMEOUT_SECONDS, api_key: str | None = None
) -> dict[str, Any]:
    """The job once it finished, polled with ``api_key`` (the stack's own key by default)."""
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(stack, job_id, api_key)
        if job["status"] in ("succeeded", "failed"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout} s: {job}"
        time.sleep(0.5)


def create_upload(stack: RunningStack, **fields: Any) -> dict[str, Any]:
    response = requests.post(f"{stack.base_url}/uploads", headers=stack.headers(), json=fields, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def upload_file(upload: dict[str, Any], filename: str, content: bytes) -> requests.Response:
    """POST the file to the presigned URL with its fields, as a browser form would; no API key goes to S3."""
    response = requests.post(
        upload["upload_url"], data=upload["fields"], files={"file": (filename, content)}, timeout=300
    )
    assert response.ok, f"{response.status_code} {response.text[:500]}"
    return response


def credits_for(seconds: float) -> int:
    return max(1, math.ceil(seconds / SECONDS_PER_CREDIT - 1e-6))


def cli(stack: RunningStack, *arguments: str, api_key: str | None = "stack") -> subprocess.CompletedProcess[str]:
    """`infery ...` as a user runs it after the README: the key and base URL in the environment."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("INFERY_API_KEY", "INFERY_BASE_URL", "INFERY_STATE_FILE")
    }
    environment["INFERY_BASE_URL"] = stack.base_url
    if api_key is not None:
        environment["INFERY_API_KEY"] = stack.api_key if api_key == "stack" else api_key
    return subprocess.run(
        [str(INFERY_COMMAND), *arguments],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_SECONDS + 60,
    )
