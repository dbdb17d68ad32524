"""The operator's `infery` command (cli/infery_cli) against the template's tables in moto, with the real handler.

With KEYS_TABLE_NAME, LEDGER_TABLE_NAME and RESERVATIONS_TABLE_NAME in the environment (the aws_environment
fixture sets the function's), the command talks to those tables: what an operator does there is what the API sees.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from infery.domain.keys import generate_api_key
from infery.usecases.usage import CSV_COLUMNS
from infery_cli.__main__ import main

from tests.support.api import MODEL_NAME, assert_error, assert_ok
from tests.support.keys import spec_checksum
from tests.support.model_replies import MODEL_ERROR_500, MODEL_ERROR_HEADERS, model_answer

KEY_PATTERN = re.compile(r"^\s+(inf_[0-9A-Za-z]{46})$", re.MULTILINE)


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def infery(capsys):
    """Run `infery ARGS...` in-process, as the console script does, and capture what it printed."""

    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def create_key(infery, *options: str) -> tuple[str, str]:
    """`infery keys create --name ...`: the key (shown once) and its key_id."""
    result = infery("keys", "create", "--name", f"op-{uuid.uuid4().hex[:8]}", *options)
    assert result.code == 0, result.err
    [api_key] = KEY_PATTERN.findall(result.out)
    key_id = re.search(r"created (key_[0-9a-f]{16}) ", result.out).group(1)
    assert "only time the key is shown" in result.err
    return api_key, key_id


def key_count(accounts) -> int:
    return accounts.keys_table.scan(Select="COUNT", ConsistentRead=True)["Count"]


def shown(infery, key_id: str) -> dict[str, str]:
    result = infery("keys", "show", key_id)
    assert result.code == 0, result.err
    return dict(line.strip().split(": ", 1) for line in result.out.splitlines() if ": " in line)


def test_an_operators_whole_flow(infery, api, fake_runtime, load_api, accounts, wav, speech_files, tmp_path):
    # create, with credits; top up
    api_key, key_id = create_key(infery, "--credits", "10")
    result = infery("credits", "add", key_id, "5", "--note", "invoice 2026-11")
    assert result.code == 0 and result.out.strip().endswith("balance 15"), result
    item = accounts.keys.get(key_id)
    assert item.key_id == key_id and accounts.balance(item) == 15

    # the customer uses the key: two real transcriptions, and one the endpoint fails (refunded)
    replies = [api.transcribe(api_key, wav), api.transcribe_json(api_key, speech_files["mp3"].read_bytes())]
    for reply in replies:
        assert_ok(reply)
    failing_url, _ = fake_runtime(424, MODEL_ERROR_500, MODEL_ERROR_HEADERS)
    failed = load_api(failing_url).transcribe(api_key, wav)
    assert_error(failed, 502, "model_error")
    used = {reply.request_id: int(reply.header("x-infery-credits-used")) for reply in replies}
    balance = 15 - sum(used.values())
    assert accounts.balance(item) == balance and replies[-1].header("x-infery-credits-balance") == str(balance)

    # revoke: the next request is refused
    result = infery("keys", "revoke", key_id)
    assert result.code == 0 and f"revoked {key_id}" in result.out
    assert_error(api.transcribe(api_key, wav), 401, "revoked_api_key")
    details = shown(infery, key_id)
    assert details["status"] == "revoked" and details["credits"] == str(balance) and details["revoked_at"]
    listed = json.loads(infery("keys", "list", "--json").out)
    [mine] = [key for key in listed if key["key_id"] == key_id]
    assert mine["status"] == "revoked" and mine["credits"] == balance
    assert "key_hash" not in mine and api_key not in json.dumps(listed)

    # the CSV export agrees with the ledger, the balance and what the responses said
    export = tmp_path / "usage.csv"
    result = infery("usage", key_id, "--csv", str(export))
    assert result.code == 0 and str(export) in result.out
    rows = list(csv.DictReader(io.StringIO(export.read_text())))
    assert list(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(accounts.ledger(item)) == 2 + 3 + 2 + 1  # 2 top-ups, 3 reserves, 2 settles, 1 refund
    assert sum(int(row["credits"]) for row in rows) == accounts.ledger_sum(item) == balance
    assert {row["key_id"] for row in rows} == {key_id}
    settled = {row["request_id"]: int(row["billed_credits"]) for row in rows if row["kind"] == "settle"}
    assert settled == used
    assert [row["note"] for row in rows if row["kind"] == "topup"] == ["initial credits", "invoice 2026-11"]
    assert {row["request_id"] for row in rows if row["kind"] == "refund"} == {failed.request_id}
    assert all(row["model"] == MODEL_NAME for row in rows if row["kind"] != "topup")

    # the same export on stdout, and the JSON report
    assert infery("usage", key_id, "--csv", "-").out == export.read_bytes().decode()  # CRLF rows, as written
    report = json.loads(infery("usage", key_id).out)
    assert report["balance"] == balance and report["credits_added"] == 15
    assert report["total"]["requests"] == 2 and report["total"]["credits"] == sum(used.values())


def test_a_key_created_with_a_policy_is_enforced_by_the_api(infery, fake_runtime, load_api, accounts, wav):
    url, fake = fake_runtime(200, model_answer(4.2))
    api = load_api(url)
    api_key, key_id = create_key(
        infery, "--credits", "5", "--rate-limit", "60", "--models", "whisper-1, other", "--expires", "30d"
    )
    details = shown(infery, key_id)
    assert details["rate_limit_per_minute"] == "60" and details["allowed_models"] == "['whisper-1', 'other']"
    assert details["expires_at"] > details["created_at"]
    reply = api.transcribe(api_key, wav)
    assert_ok(reply)
    assert reply.header("x-ratelimit-limit-requests") == "60"
    assert fake.calls == 1 and accounts.balance(accounts.keys.get(key_id)) == 4
    restricted_key, _ = create_key(infery, "--credits", "5", "--models", "whisper-large-v3")
    assert_error(api.transcribe(restricted_key, wav), 403, "model_not_allowed")
    assert fake.calls == 1


def test_a_key_with_an_expiry_in_the_past_is_not_created(infery, accounts):
    keys_before = key_count(accounts)
    result = infery("keys", "create", "--name", "stale", "--credits", "5", "--expires", "2020-01-31")
    assert result.code == 1 and "in the past" in result.err and "inf_" not in result.out
    assert key_count(accounts) == keys_before


def test_a_key_that_expires_later_is_refused_once_expired(infery, accounts, fake_runtime, load_api, wav):
    url, fake = fake_runtime(200, model_answer(4.2))
    api_key, key_id = create_key(infery, "--credits", "5", "--expires", "30d")
    accounts.keys_table.update_item(
        Key={"key_hash": accounts.keys.get(key_id).key_hash},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": "2020-01-31T00:00:00.000+00:00"},
    )
    assert_error(load_api(url).transcribe(api_key, wav), 401, "expired_api_key")
    assert fake.calls == 0


def test_a_key_brought_by_the_operator_works_and_cannot_be_created_twice(infery, accounts, load_api, closed_port_url):
    own_key = generate_api_key()  # made elsewhere by infery: an operator's own key must be of the generated shape
    result = infery("keys", "create", "--name", "imported", "--key", own_key, "--credits", "3")
    assert result.code == 0 and own_key in result.out
    assert_ok(load_api(closed_port_url).call("GET", "/v1/models", api_key=own_key))
    ledger_before = accounts.ledger_size()
    again = infery("keys", "create", "--name", "imported again", "--key", own_key, "--credits", "3")
    assert again.code == 1 and "exists already" in again.err
    assert accounts.ledger_size() == ledger_before  # the failed create topped nothing up


def test_a_top_up_with_a_request_id_counts_once(infery, accounts):
    _, key_id = create_key(infery, "--credits", "10")
    for _ in range(2):
        assert infery("credits", "add", key_id, "5", "--request-id", "invoice-42").code == 0
    item = accounts.keys.get(key_id)
    assert accounts.balance(item) == 15 and len(accounts.ledger(item, "topup")) == 2


def test_a_retried_top_up_says_it_added_nothing(infery):
    _, key_id = create_key(infery, "--credits", "10")
    infery("credits", "add", key_id, "5", "--request-id", "invoice-43")
    again = infery("credits", "add", key_id, "5", "--request-id", "invoice-43")
    assert again.code == 0 and "balance 15" in again.out
    assert "added 5 credits" not in again.out


@pytest.mark.parametrize(
    "argv",
    [
        ("credits", "add", "key_0000000000000000", "5"),
        ("credits", "add", "{key_id}", "0"),
        ("credits", "add", "{key_id}", "-3"),
        ("keys", "show", "key_0000000000000000"),
        ("keys", "revoke", "key_0000000000000000"),
        ("usage", "key_0000000000000000"),
        ("usage", "{key_id}", "--since", "last tuesday"),
        ("usage", "{key_id}", "--until", "2026-13-45"),
        ("keys", "create", "--name", "bad-expiry", "--expires", "next year"),
        ("keys", "create", "--name", "bad-key", "--key", "inf_short"),
        ("keys", "create", "--name", "bad-key", "--key", "sk-notinfery0123456789"),
        ("keys", "create", "--name", "bad-limit", "--rate-limit", "-1"),
        ("keys", "create", "--name", "zero-limit", "--rate-limit", "0"),
        ("keys", "create", "--name", "own-shape-key", "--key", "inf_my_local_key_0123456789"),
        ("keys", "create", "--name", "weak-key", "--key", "inf_" + "0" * 40 + spec_checksum("0" * 40)),
    ],
    ids=[
        "unknown-key-top-up",
        "zero-credits",
        "negative-credits",
        "unknown-key-show",
        "unknown-key-revoke",
        "unknown-key-usage",
        "bad-since",
        "bad-until",
        "bad-expiry",
        "short-key",
        "foreign-key",
        "negative-limit",
        "zero-limit",
        "own-shape-key",
        "weak-key",
    ],
)
def test_operator_mistakes_exit_1_with_a_message_and_change_nothing(infery, accounts, argv):
    _, key_id = create_key(infery, "--credits", "10")
    keys_before, ledger_before = key_count(accounts), accounts.ledger_size()
    result = infery(*(argument.format(key_id=key_id) for argument in argv))
    assert result.code == 1, result
    assert result.err.startswith("infery: ") and "Traceback" not in result.err and result.out == ""
    assert key_count(accounts) == keys_before and accounts.ledger_size() == ledger_before
    assert accounts.balance(accounts.keys.get(key_id)) == 10


@pytest.mark.parametrize(
    "argv",
    [("keys", "create"), ("credits", "add", "key_x", "five"), ("keys", "forget")],
    ids=["no-name", "credits-not-a-number", "unknown-command"],
)
def test_malformed_commands_are_usage_errors(infery, argv):
    with pytest.raises(SystemExit) as exited:
        infery(*argv)
    assert exited.value.code == 2


def test_local_reads_the_state_file_that_make_serve_writes(
    infery, accounts, monkeypatch, tmp_path, function_environment
):
    _, key_id = create_key(infery, "--credits", "4")
    environment = {
        name: function_environment[name] for name in ("KEYS_TABLE_NAME", "LEDGER_TABLE_NAME", "RESERVATIONS_TABLE_NAME")
    }
    state_file = tmp_path / "local-stack.json"
    state_file.write_text(
        json.dumps(
            {"environment": {**environment, "AWS_ENDPOINT_URL_DYNAMODB": os.environ["AWS_ENDPOINT_URL_DYNAMODB"]}}
        )
    )
    monkeypatch.setenv("INFERY_STATE_FILE", str(state_file))
    for name in environment:
        monkeypatch.delenv(name)  # restored after the test, whatever --local put there
    result = infery("--local", "keys", "show", key_id)
    assert result.code == 0 and "credits: 4" in result.out

    monkeypatch.setenv("INFERY_STATE_FILE", str(Path(tmp_path / "missing.json")))
    missing = infery("--local", "keys", "list")
    assert missing.code == 1 and "make serve" in missing.err


def test_until_is_exclusive_says_so_and_an_empty_period_is_refused(infery, tmp_path):
    _, key_id = create_key(infery, "--credits", "10")  # a top-up entry, made today
    today = datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)
    empty = infery("usage", key_id, "--since", str(today), "--until", str(today))
    assert empty.code == 1 and "--until is exclusive" in empty.err and "pass the next day" in empty.err

    before_today = infery("usage", key_id, "--until", str(today), "--csv", str(tmp_path / "before.csv"))
    assert before_today.code == 0, before_today.err
    assert "wrote 0 ledger entries" in before_today.out and "up to (not including)" in before_today.out

    with_today = infery(
        "usage", key_id, "--since", str(today), "--until", str(tomorrow), "--csv", str(tmp_path / "today.csv")
    )
    assert with_today.code == 0 and "wrote 1 ledger entries" in with_today.out
    assert list(csv.DictReader(io.StringIO((tmp_path / "today.csv").read_text())))[0]["kind"] == "topup"
