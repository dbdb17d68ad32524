"""The operator's tool as the README shows it: the real `infery` console script against a running local stack.

Every command runs `.venv/bin/infery --local ...` in a subprocess with INFERY_STATE_FILE pointing at the
stack's own state file, exactly as an operator would type it; what it says is checked against the API and
against the ledger as stored in the stack's DynamoDB.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import time
import uuid

import openai
import pytest
import requests

from tests.support.stack import INFERY_COMMAND, ROOT, RunningStack

pytestmark = pytest.mark.e2e

CSV_COLUMNS = [
    "created_at",
    "key_id",
    "kind",
    "request_id",
    "model",
    "audio_seconds",
    "credits",
    "balance_after",
    "billed_credits",
    "unpaid_credits",
    "note",
]


def _field(output: str, name: str) -> str:
    """A value from `keys show`'s "name: value" lines."""
    match = re.search(rf"^\s*{name}: (.*)$", output, re.MULTILINE)
    assert match, f"no {name} in:\n{output}"
    return match.group(1).strip()


def test_each_stack_has_a_state_file_of_its_own(stack: RunningStack):
    assert stack.state_file.exists()
    assert stack.state_file.parent != ROOT / ".infery"
    written = json.loads(stack.state_file.read_text())
    assert written["base_url"] == stack.base_url
    assert {"KEYS_TABLE_NAME", "LEDGER_TABLE_NAME", "RESERVATIONS_TABLE_NAME", "AWS_ENDPOINT_URL_DYNAMODB"} <= set(
        written["environment"]
    )


def test_the_tool_says_when_no_local_stack_is_running(tmp_path):
    environment = {**os.environ, "INFERY_STATE_FILE": str(tmp_path / "nothing-here.json")}
    result = subprocess.run(
        [str(INFERY_COMMAND), "--local", "keys", "list"], env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "no local stack is running" in result.stderr and "Traceback" not in result.stderr


def test_operator_lifecycle_of_a_key(stack: RunningStack, speech_files, tmp_path):
    name = f"acme-{uuid.uuid4().hex[:6]}"
    # create: the clear key is printed once, and the key starts with a ledgered top-up
    created = stack.infery("keys", "create", "--name", name, "--credits", "50")
    assert "only time the key is shown" in created.stderr
    [api_key] = re.findall(r"\binf_[0-9A-Za-z]{46}\b", created.stdout)
    [key_id] = re.findall(rf"created (key_[0-9a-f]{{16}}) \({re.escape(name)}\) with 50 credits", created.stdout)

    listing = stack.infery("keys", "list")
    [row] = [line.split() for line in listing.stdout.splitlines() if key_id in line]
    assert row[1:4] == [name, "active", "50"]
    listed = {key["key_id"]: key for key in json.loads(stack.infery("keys", "list", "--json").stdout)}
    assert listed[key_id]["credits"] == 50 and listed[key_id]["status"] == "active"
    assert "key_hash" not in listed[key_id]
    assert api_key not in listing.stdout and api_key not in json.dumps(listed)  # never shown again
    shown = stack.infery("keys", "show", key_id).stdout
    assert _field(shown, "credits") == "50" and _field(shown, "status") == "active" and _field(shown, "name") == name

    # the key works with the openai SDK, and each response says what it cost
    client = stack.client(api_key=api_key)
    with speech_files["mp3"].open("rb") as audio:
        first = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=audio)
    with speech_files["wav"].open("rb") as audio:
        second = client.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=audio, response_format="verbose_json"
        )
    used = {raw.headers["x-request-id"]: int(raw.headers["x-infery-credits-used"]) for raw in (first, second)}
    assert list(used.values()) == [3, 3]
    assert int(second.headers["x-infery-credits-balance"]) == 50 - 6
    assert first.parse().text and second.parse().segments

    added = stack.infery("credits", "add", key_id, "25", "--note", "invoice 2026-11")
    assert f"added 25 credits to {key_id}" in added.stdout and "balance 69" in added.stdout
    assert stack.usage(api_key)["balance"] == 69
    report = json.loads(stack.infery("usage", key_id, "--days", "30").stdout)
    assert report["key_id"] == key_id and report["balance"] == 69 and report["credits_added"] == 75
    assert report["total"]["requests"] == 2 and report["total"]["credits"] == 6

    # revoke: refused from the next request on
    revoked = stack.infery("keys", "revoke", key_id)
    assert f"revoked {key_id}" in revoked.stdout
    with pytest.raises(openai.AuthenticationError) as raised, speech_files["mp3"].open("rb") as audio:
        client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert raised.value.status_code == 401
    assert raised.value.response.json()["error"]["code"] == "revoked_api_key"
    assert api_key not in raised.value.response.text
    models = requests.get(f"{stack.base_url}/models", headers=stack.headers(api_key), timeout=30)
    assert models.status_code == 401 and models.json()["error"]["code"] == "revoked_api_key"
    assert _field(stack.infery("keys", "show", key_id).stdout, "status") == "revoked"

    # the CSV export: one row per ledger entry, adding up to the balance; settle rows bill what responses said
    export = tmp_path / "acme.csv"
    written = stack.infery("usage", key_id, "--csv", str(export))
    assert f"to {export}" in written.stdout
    with export.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == CSV_COLUMNS
        rows = list(reader)
    assert export.read_text() == stack.infery("usage", key_id, "--csv", "-").stdout
    assert {row["key_id"] for row in rows} == {key_id}
    assert sorted(row["kind"] for row in rows) == ["reserve", "reserve", "settle", "settle", "topup", "topup"]
    ledger = stack.ledger(key_id)
    final_balance = stack.key_row(key_id)["credits"]
    assert final_balance == 69
    assert sum(int(row["credits"]) for row in rows) == sum(entry["credits"] for entry in ledger) == final_balance
    billed = {row["request_id"]: int(row["billed_credits"]) for row in rows if row["kind"] == "settle"}
    assert billed == used
    assert [row["note"] for row in rows if row["kind"] == "topup"] == ["initial credits", "invoice 2026-11"]
    assert all(int(row["balance_after"]) >= 0 for row in rows)


def _at_the_start_of_a_rate_limit_window(margin: float = 8.0) -> None:
    """Rate limits count per calendar minute: wait out the end of one, so a burst lands inside a single window."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


def test_a_key_over_its_rate_limit_gets_429_in_openai_shape(stack: RunningStack):
    key_id, api_key = stack.create_key(f"limited-{uuid.uuid4().hex[:6]}", 0, "--rate-limit", "2")
    assert _field(stack.infery("keys", "show", key_id).stdout, "rate_limit_per_minute") == "2"
    _at_the_start_of_a_rate_limit_window()
    responses = [requests.get(f"{stack.base_url}/models", headers=stack.headers(api_key), timeout=30) for _ in range(3)]

    assert [response.status_code for response in responses] == [200, 200, 429], [r.text for r in responses]
    for response, remaining in zip(responses, ["1", "0", "0"], strict=True):
        assert response.headers["x-ratelimit-limit-requests"] == "2"
        assert response.headers["x-ratelimit-remaining-requests"] == remaining
        assert re.fullmatch(r"\d+(ms|s)", response.headers["x-ratelimit-reset-requests"])
    limited = responses[2]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["content-type"].startswith("application/json") and limited.headers["x-request-id"]
    error = limited.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert "2 requests per minute" in error["message"]

    # the SDK (retries off) sees a RateLimitError; a transcription is refused before anything is reserved
    with pytest.raises(openai.RateLimitError) as raised:
        stack.client(api_key=api_key).models.list()
    assert raised.value.status_code == 429
    transcription = requests.post(
        f"{stack.base_url}/audio/transcriptions",
        headers=stack.headers(api_key),
        files={"file": ("a.wav", b"RIFF")},
        data={"model": "whisper-1"},
        timeout=30,
    )
    assert transcription.status_code == 429 and transcription.headers["Retry-After"]
    assert stack.ledger(key_id) == []
