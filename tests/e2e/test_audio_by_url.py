"""Audio by ``url`` through the whole local stack: a sync call and a job fetch from a server the test starts on
127.0.0.1, transcribe it and charge once; every bad URL gets its own 400 code (a job: its failed job's code) with
the balance unchanged.

The stack is this module's own: its fetches time out after 3 s (a server that never answers is not waited for
long), and its API and worker resolve made-up names through tests/support/fake_dns (a sitecustomize on its
PYTHONPATH), so a name that resolves to a metadata address is refused before any connection, and a connection to
such an address would be refused and recorded there, never sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.audio_server import AudioServer, serving_audio
from tests.support.speech import KEY_WORDS, SCRIPT, synthesize_wav, word_recall
from tests.support.stack import ROOT, RunningStack, running_stack
from tests.support.stack_calls import ledger_entries, wait_for_job

pytestmark = pytest.mark.e2e

FAKE_DNS_FOLDER = Path(__file__).resolve().parents[1] / "support" / "fake_dns"
METADATA_NAMES = {"metadata.infery.test": ["169.254.169.254"], "ecs-metadata.infery.test": ["fd00:ec2::254"]}
CREDITS = 1000
FETCH_TIMEOUT_SECONDS = "3"
SYNC_LIMIT_BYTES = 4 * 1024 * 1024  # MaxSyncAudioBytes' default
JOB_LIMIT_BYTES = 30_000_000  # a job's: this stack's MaxJobBytes (a deployment's is 1 GB)


@pytest.fixture(scope="module")
def speech() -> bytes:
    return synthesize_wav(SCRIPT)


@pytest.fixture(scope="module")
def audio_server(speech: bytes) -> Iterator[AudioServer]:
    with serving_audio(speech) as served:
        yield served


@pytest.fixture(scope="module")
def dns_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    log = tmp_path_factory.mktemp("fake-dns") / "connections.log"
    log.write_text("")
    return log


@pytest.fixture(scope="module")
def url_stack(dns_log: Path) -> Iterator[RunningStack]:
    with running_stack(
        credits=CREDITS,
        extra_environment={
            "PYTHONPATH": f"{ROOT / 'layers' / 'common' / 'python'}:{FAKE_DNS_FOLDER}",
            "INFERY_TEST_FAKE_DNS": json.dumps(METADATA_NAMES),
            "INFERY_TEST_FAKE_DNS_LOG": str(dns_log),
            "AUDIO_URL_TIMEOUT_SECONDS": FETCH_TIMEOUT_SECONDS,
            "AUDIO_URL_JOB_TIMEOUT_SECONDS": FETCH_TIMEOUT_SECONDS,
            "INFERY_PARAMETER_OVERRIDES": f"MaxJobBytes={JOB_LIMIT_BYTES}",
        },
    ) as running:
        yield running


@pytest.fixture(scope="module")
def key(url_stack: RunningStack) -> tuple[str, str]:
    """(key id, clear key) of a key of this module's own."""
    return url_stack.create_key("audio-by-url", CREDITS)


def balance(stack: RunningStack, key_id: str) -> int:
    return int(stack.key_row(key_id)["credits"])


def post(stack: RunningStack, api_key: str, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{stack.base_url}{path}",
        json={"model": "whisper-1", **body},
        headers=stack.headers(api_key),
        timeout=120,
    )


def assert_charged_once(stack: RunningStack, key_id: str, request_id: str) -> int:
    entries = ledger_entries(stack, key_id, request_id)
    assert [entry["kind"] for entry in entries] == ["reserve", "settle"], entries
    return int(entries[-1]["billed_credits"])


def assert_error(response: requests.Response, code: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] | {"message": ""} == {
        "message": "",
        "type": "invalid_request_error",
        "param": "url",
        "code": code,
    }


def bad_urls(limit_bytes: int) -> list[tuple[str, str]]:
    """(path on the test's server, the code it gets) of each bad URL, for a path whose byte limit is ``limit_bytes``."""
    return [
        ("/redirects/4", "url_too_many_redirects"),
        (f"/longer-than-said/{limit_bytes + 1}", "url_too_large"),
        ("/not-audio", "url_not_audio"),
        ("/never", "url_timeout"),
    ]


def text_of(job: dict[str, Any]) -> str:
    result = job["result"]
    return result["text"] if isinstance(result, dict) else str(result)


def test_a_sync_call_by_url_transcribes_and_charges_once(url_stack, key, audio_server):
    key_id, api_key = key
    before = balance(url_stack, key_id)

    response = post(url_stack, api_key, "/audio/transcriptions", {"url": audio_server.url("/redirects/2")})

    assert response.status_code == 200, response.text
    assert word_recall(response.json()["text"], KEY_WORDS) >= 0.8, response.json()
    billed = assert_charged_once(url_stack, key_id, response.headers["x-request-id"])
    assert billed == int(response.headers["x-infery-credits-used"]) >= 1
    assert balance(url_stack, key_id) == before - billed


def test_a_job_by_url_transcribes_and_charges_once(url_stack, key, audio_server):
    key_id, api_key = key
    before = balance(url_stack, key_id)

    created = post(url_stack, api_key, "/audio/transcriptions/jobs", {"url": audio_server.url("/audio")})

    assert created.status_code == 202, created.text
    job = wait_for_job(url_stack, created.json()["id"], api_key=api_key)
    assert job["status"] == "succeeded", job
    assert word_recall(text_of(job), KEY_WORDS) >= 0.8, job
    billed = assert_charged_once(url_stack, key_id, job["id"])
    assert billed == job["credits_used"] and balance(url_stack, key_id) == before - billed


@pytest.mark.parametrize(("path", "code"), bad_urls(SYNC_LIMIT_BYTES), ids=lambda value: str(value)[:24])
def test_a_bad_url_is_400_with_its_code_and_the_balance_unchanged(url_stack, key, audio_server, path, code):
    key_id, api_key = key
    before = balance(url_stack, key_id)

    response = post(url_stack, api_key, "/audio/transcriptions", {"url": audio_server.url(path)})

    assert_error(response, code)
    assert balance(url_stack, key_id) == before


@pytest.mark.parametrize(("path", "code"), bad_urls(JOB_LIMIT_BYTES), ids=lambda value: str(value)[:24])
def test_a_job_by_a_bad_url_fails_with_its_code_and_the_balance_unchanged(url_stack, key, audio_server, path, code):
    key_id, api_key = key
    before = balance(url_stack, key_id)

    created = post(url_stack, api_key, "/audio/transcriptions/jobs", {"url": audio_server.url(path)})

    assert created.status_code == 202, created.text  # the URL's form is fine: the worker finds out the rest
    job = wait_for_job(url_stack, created.json()["id"], api_key=api_key)
    assert job["status"] == "failed" and job["error"]["code"] == code, job
    assert [entry["kind"] for entry in ledger_entries(url_stack, key_id, job["id"])] == []
    assert balance(url_stack, key_id) == before


@pytest.mark.parametrize("name", sorted(METADATA_NAMES))
def test_a_name_that_resolves_to_a_metadata_address_is_refused_before_any_connection(url_stack, key, dns_log, name):
    key_id, api_key = key
    before = balance(url_stack, key_id)
    url = f"http://{name}/latest/meta-data/iam/security-credentials/"

    response = post(url_stack, api_key, "/audio/translations", {"url": url})
    created = post(url_stack, api_key, "/audio/translations/jobs", {"url": url})

    assert_error(response, "url_address_not_allowed")
    assert created.status_code == 202, created.text
    job = wait_for_job(url_stack, created.json()["id"], api_key=api_key)
    assert job["status"] == "failed" and job["error"]["code"] == "url_address_not_allowed", job
    assert dns_log.read_text() == ""  # nothing tried to connect to the address the name resolved to
    assert balance(url_stack, key_id) == before


def test_a_metadata_address_written_in_the_url_is_refused_when_the_job_is_asked_for(url_stack, key):
    _, api_key = key

    created = post(url_stack, api_key, "/audio/transcriptions/jobs", {"url": "http://169.254.169.254/latest/"})

    assert_error(created, "url_address_not_allowed")
