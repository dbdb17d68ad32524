"""Through the real handler: the web console's static files, GET /v1/jobs (a key's own jobs) and the usage CSV."""

from __future__ import annotations

import csv
import io
import time

import pytest

from tests.support.api import assert_error, assert_ok
from tests.support.model_replies import model_answer

JOBS = "/v1/jobs"


@pytest.fixture
def api(load_api, closed_port_url):
    """The handler, for requests that never reach the model."""
    return load_api(closed_port_url)


def create_upload_job(api, api_key: str, filename: str) -> str:
    reply = api.call(
        "POST",
        "/v1/uploads",
        body=f'{{"filename": "{filename}"}}'.encode(),
        content_type="application/json",
        api_key=api_key,
    )
    assert reply.status == 201, reply.text
    return reply.json()["job_id"]


# --- the console ---------------------------------------------------------------------------------------------------


def test_the_console_page_and_its_files_are_served_without_a_key(api):
    page = api.call("GET", "/console")
    assert_ok(page)
    assert page.header("content-type") == "text/html; charset=utf-8"
    assert "<title>infery console</title>" in page.text and 'src="console/console.js"' in page.text
    policy = page.header("content-security-policy")
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.header("x-content-type-options") == "nosniff"
    for name, content_type in (("console.js", "text/javascript"), ("console.css", "text/css")):
        asset = api.call("GET", f"/console/{name}", resource="/console/{asset}")
        assert_ok(asset)
        assert asset.header("content-type").startswith(content_type) and len(asset.text) > 1000


@pytest.mark.parametrize("name", ["app.py", "requirements.txt", "..", "%2e%2e%2fapp.py", "x" * 300])
def test_only_the_consoles_own_files_are_served(api, name):
    reply = assert_error(api.call("GET", f"/console/{name}", resource="/console/{asset}"), 404, "unknown_url")
    assert "x" * 41 not in reply["message"]


# --- GET /v1/jobs --------------------------------------------------------------------------------------------------


def test_a_key_lists_its_own_jobs_newest_first_without_their_secrets(api, accounts):
    api_key, _ = accounts.new_key(100)
    other_key, _ = accounts.new_key(100)
    created = []
    for name in ("first.wav", "second.wav", "third.wav"):
        created.append(create_upload_job(api, api_key, name))
        time.sleep(0.01)  # created_at has milliseconds: three distinct times
    others = create_upload_job(api, other_key, "not-yours.wav")

    reply = api.call("GET", JOBS, api_key=api_key)
    assert_ok(reply)
    listing = reply.json()
    assert listing["object"] == "list" and listing["has_more"] is False
    assert [job["id"] for job in listing["data"]] == created[::-1]
    assert others not in {job["id"] for job in listing["data"]}
    newest = listing["data"][0]
    assert (newest["object"], newest["status"], newest["filename"]) == (
        "transcription.job",
        "awaiting_upload",
        "third.wav",
    )
    for hidden in ("key_hash", "webhook_secret", "lease_until", "result_key", "source_uri", "result"):
        assert hidden not in newest

    limited = api.call("GET", JOBS + "?limit=2", api_key=api_key).json()
    assert [job["id"] for job in limited["data"]] == created[:0:-1] and limited["has_more"] is True
    assert api.call("GET", JOBS, api_key=other_key).json()["data"][0]["id"] == others


def test_a_key_without_jobs_gets_an_empty_list(api, accounts):
    api_key, _ = accounts.new_key(5)
    assert api.call("GET", JOBS, api_key=api_key).json() == {"object": "list", "data": [], "has_more": False}


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "1e2", "9" * 40])
def test_a_limit_outside_1_to_100_is_a_400(api, accounts, limit):
    api_key, _ = accounts.new_key(5)
    assert_error(api.call("GET", f"{JOBS}?limit={limit}", api_key=api_key), 400, "invalid_value", param="limit")


def test_listing_jobs_needs_a_key(api):
    assert_error(api.call("GET", JOBS), 401, "missing_api_key")


# --- GET /v1/usage?format=csv --------------------------------------------------------------------------------------


def test_the_usage_csv_is_the_periods_ledger(fake_runtime, load_api, accounts, wav):
    api = load_api(fake_runtime(200, model_answer(12.0))[0])
    api_key, item = accounts.new_key(100)
    assert_ok(api.transcribe(api_key, wav))
    reply = api.call("GET", "/v1/usage?days=7&format=csv", api_key=api_key)
    assert_ok(reply)
    assert reply.header("content-type") == "text/csv; charset=utf-8"
    assert reply.header("content-disposition") == f'attachment; filename="infery-usage-{item.key_id}-7d.csv"'
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    assert [row["kind"] for row in rows] == ["topup", "reserve", "settle"]
    assert sum(int(row["credits"]) for row in rows) == 100 - 3 == accounts.balance(item)
    assert {row["key_id"] for row in rows} == {item.key_id}

    report = api.call("GET", "/v1/usage?days=7", api_key=api_key).json()  # JSON stays the default
    assert report["by_day_and_model"][0]["credits"] == 3


def test_an_unknown_usage_format_is_a_400(api, accounts):
    api_key, _ = accounts.new_key(5)
    assert_error(api.call("GET", "/v1/usage?format=xml", api_key=api_key), 400, "invalid_value", param="format")
