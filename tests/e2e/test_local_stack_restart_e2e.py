"""`make serve` stopped with Ctrl-C and started again keeps its data: keys, balances, the ledger, jobs and results.

Each test starts the real local stack (`python -m local_stack`) on a data folder of its own (INFERY_LOCAL_DATA_DIR
in a temporary folder), not in the --ephemeral mode the other end-to-end tests use.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.speech import KEY_WORDS, word_recall
from tests.support.stack import RunningStack, start_stack, stop_stack

pytestmark = pytest.mark.e2e

DEV_CREDITS = 500
BANNER_KEY = re.compile(r"API key:\s+(inf_\S+)")
BANNER_CREDITS = re.compile(r"credits:\s+(\d+)")


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    """The stacks a test started: stopped at the end whatever happened."""
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        stop_stack(process)


def _start(started: list[subprocess.Popen], data_dir: Path, *flags: str) -> RunningStack:
    # no INFERY_DEV_KEY: the development key is the one the data folder remembers (a new one the first time)
    process, stack = start_stack(
        credits=DEV_CREDITS,
        extra_environment={"INFERY_LOCAL_EPHEMERAL": "0", "INFERY_LOCAL_DATA_DIR": str(data_dir), "INFERY_DEV_KEY": ""},
        flags=("--quiet", *flags),
    )
    started.append(process)
    return dataclasses.replace(stack, api_key=_banner(stack, BANNER_KEY))


def _banner(stack: RunningStack, pattern: re.Pattern[str]) -> str:
    matches = [match.group(1) for line in stack.output if (match := pattern.search(line))]
    assert len(matches) == 1, "".join(stack.output)
    return matches[0]


def _stop_like_ctrl_c(started: list[subprocess.Popen]) -> None:
    process = started[-1]
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group gets it
    assert process.wait(timeout=60) == 0, "the stack did not stop cleanly on SIGINT"


def _transcribe(stack: RunningStack, api_key: str, audio: Path) -> requests.Response:
    with audio.open("rb") as file:
        response = requests.post(
            f"{stack.base_url}/audio/transcriptions",
            headers=stack.headers(api_key),
            files={"file": (audio.name, file)},
            data={"model": "whisper-1", "response_format": "json"},
            timeout=120,
        )
    assert response.status_code == 200, response.text
    assert word_recall(response.json()["text"], KEY_WORDS) >= 0.5, response.text
    return response


def _finished_job(stack: RunningStack, audio: Path) -> dict:
    response = requests.post(
        f"{stack.base_url}/audio/transcriptions/jobs",
        headers=stack.headers(),
        files={"file": (audio.name, audio.read_bytes())},
        data={"model": "whisper-1"},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + 180
    while (job := requests.get(f"{stack.base_url}/jobs/{job_id}", headers=stack.headers(), timeout=30).json())[
        "status"
    ] != "succeeded":
        assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.5)
    return job


def test_a_restart_keeps_keys_balances_the_ledger_and_jobs(started, tmp_path, speech_files):
    data_dir = tmp_path / "data"
    first = _start(started, data_dir)
    dev_key = first.api_key
    assert _banner(first, BANNER_CREDITS) == str(DEV_CREDITS)
    assert (data_dir / "dev-key").read_text().strip() == dev_key

    key_id, api_key = first.create_key("kept", 10)
    first.infery("credits", "add", key_id, "40", "--note", "before the restart")
    charged = _transcribe(first, api_key, speech_files["mp3"])
    balance = int(charged.headers["x-infery-credits-balance"])
    assert balance < 50
    ledger = first.ledger(key_id)
    assert [entry["kind"] for entry in ledger][-1] == "settle", ledger  # the charge
    job = _finished_job(first, speech_files["wav"])
    dev_balance = first.usage(dev_key)["balance"]

    _stop_like_ctrl_c(started)
    second = _start(started, data_dir)

    # the same development key, not seeded again: its balance is what the job left
    assert second.api_key == dev_key
    assert _banner(second, BANNER_CREDITS) == str(dev_balance) != str(DEV_CREDITS)
    assert second.usage(dev_key)["balance"] == dev_balance
    # the key made with `infery --local keys create` still works, with its balance and its ledger
    assert key_id in second.infery("keys", "list").stdout
    assert second.usage(api_key)["balance"] == balance
    assert second.ledger(key_id) == ledger
    after = _transcribe(second, api_key, speech_files["mp3"])
    assert int(after.headers["x-infery-credits-balance"]) < balance
    later = second.ledger(key_id)
    assert later[: len(ledger)] == ledger and len(later) > len(ledger) and later[-1]["kind"] == "settle", later
    # the job and its result (DynamoDB and S3) are still there
    kept = requests.get(f"{second.base_url}/jobs/{job['id']}", headers=second.headers(dev_key), timeout=30)
    assert kept.status_code == 200 and kept.json()["status"] == "succeeded", kept.text + "".join(second.output[-60:])
    result = requests.get(f"{second.base_url}/jobs/{job['id']}/result", headers=second.headers(dev_key), timeout=30)
    assert result.status_code == 200, result.text + "".join(second.output[-60:])
    assert word_recall(result.json()["text"], KEY_WORDS) >= 0.5, result.text


def test_fresh_starts_empty(started, tmp_path, speech_files):
    data_dir = tmp_path / "data"
    first = _start(started, data_dir)
    key_id, api_key = first.create_key("forgotten", 10)
    _stop_like_ctrl_c(started)

    second = _start(started, data_dir, "--fresh")
    assert second.api_key != first.api_key  # a new development key, with the starting credits
    assert _banner(second, BANNER_CREDITS) == str(DEV_CREDITS)
    assert key_id not in second.infery("keys", "list").stdout
    refused = requests.get(f"{second.base_url}/models", headers=second.headers(api_key), timeout=30)
    assert refused.status_code == 401, refused.text
    assert second.ledger(key_id) == []
