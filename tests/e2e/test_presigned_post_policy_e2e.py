"""The presigned POST of POST /v1/uploads, refused by the local stack's S3 wherever S3 refuses it, end to end.

Each refusal is a form a client could send to the upload_url with the fields it was given: another key's prefix,
a file past the policy's content-length-range (26 MB, and one byte over), a field the policy does not name, a
tampered policy, an expired one, no signature, no authentication at all. Each is answered with S3's status and error
code, and nothing happens: nothing is stored in the bucket, the upload's job still awaits its file, no job is made on
another key's account, no credit moves. The upload as the API hands it out still works, at exactly the limit too.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

import pytest
import requests

from tests.support.speech import synthesize_wav
from tests.support.stack import RunningStack, running_stack

pytestmark = pytest.mark.e2e

JOB_TIMEOUT_SECONDS = 180
PARAMETER_OVERRIDES = "MaxJobBytes=25000000"


@pytest.fixture(scope="module")
def policy_stack() -> Iterator[RunningStack]:
    """A stack of this module's own: its bucket, jobs and ledger hold only what these tests did. Its jobs (and so
    its presigned POSTs) take 25 MB, not a deployment's 1 GB: a file past the limit is sent, and then one at it."""
    with running_stack(
        credits=10_000,
        extra_environment={"INFERY_PARAMETER_OVERRIDES": PARAMETER_OVERRIDES},
    ) as running:
        yield running


@pytest.fixture(scope="module")
def wav() -> bytes:
    """Real speech (about 12 s): were a refused upload stored, its job would run and charge."""
    return synthesize_wav()


@pytest.fixture(scope="module")
def victim(policy_stack: RunningStack) -> dict[str, Any]:
    """Another key, with an upload of its own waiting for its file."""
    key_id, api_key = policy_stack.create_key("victim", 100)
    return {"key_id": key_id, "api_key": api_key, "upload": create_upload(policy_stack, api_key)}


# --- helpers -------------------------------------------------------------------------------------------------


def create_upload(stack: RunningStack, api_key: str | None = None, **body: Any) -> dict[str, Any]:
    response = requests.post(
        f"{stack.base_url}/uploads",
        headers=stack.headers(api_key),
        json={"filename": "meeting.wav", **body},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()


def post_form(upload: dict[str, Any], fields: list[tuple[str, str]], content: bytes) -> requests.Response:
    """A browser's form POST to the upload_url: the fields, then the file."""
    return requests.post(upload["upload_url"], data=fields, files={"file": ("meeting.wav", content)}, timeout=120)


def s3_error(response: requests.Response) -> dict[str, str | None]:
    error = ElementTree.fromstring(response.content)
    assert error.tag == "Error", response.text
    return {child.tag: child.text for child in error}


def bucket_of(upload: dict[str, Any]) -> str:
    return urlsplit(upload["upload_url"]).path.strip("/")


def stored_versions(stack: RunningStack, upload: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    pages = (
        stack.aws_client("s3").get_paginator("list_object_versions").paginate(Bucket=bucket_of(upload), Prefix=prefix)
    )
    return [version for page in pages for version in page.get("Versions", []) + page.get("DeleteMarkers", [])]


def policy_of(upload: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(upload["fields"]["policy"]))


def signature_field(upload: dict[str, Any]) -> str:
    """boto3 signs version 2 in us-east-1 unless told otherwise; either way, the field that carries the signature."""
    return "x-amz-signature" if "x-amz-signature" in upload["fields"] else "signature"


def get_job(stack: RunningStack, job_id: str, api_key: str | None = None) -> dict[str, Any]:
    response = requests.get(f"{stack.base_url}/jobs/{job_id}", headers=stack.headers(api_key), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_job(stack: RunningStack, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    while (job := get_job(stack, job_id))["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {JOB_TIMEOUT_SECONDS} s"
        time.sleep(0.5)
    return job


def entries_of(stack: RunningStack, key_id: str, request_id: str) -> list[dict[str, Any]]:
    return [entry for entry in stack.ledger(key_id) if entry["request_id"] == request_id]


# --- the forms S3 refuses --------------------------------------------------------------------------------------

Form = tuple[list[tuple[str, str]], bytes]
Context = dict[str, Any]


def another_keys_upload_slot(upload: dict[str, Any], wav: bytes, context: Context) -> Form:
    return [*{**upload["fields"], "key": context["victim"]["upload"]["fields"]["key"]}.items()], wav


def another_keys_inbox(upload: dict[str, Any], wav: bytes, context: Context) -> Form:
    return [*{**upload["fields"], "key": f"inbox/{context['victim']['key_id']}/meeting.wav"}.items()], wav


def file_of_26_mb(upload: dict[str, Any], wav: bytes, context: Context) -> Form:
    return [*upload["fields"].items()], wav + bytes(26_000_000 - len(wav))


def one_byte_over_the_limit(upload: dict[str, Any], wav: bytes, context: Context) -> Form:
    return [*upload["fields"].items()], wav + bytes(upload["max_bytes"] + 1 - len(wav))


def an_extra_field(upload: dict[str, Any], wav: bytes, context: Context) -> Form:
    return [*upload["fields"].items(), ("x-amz-meta-billed-to", context["victim"]["key_id"])], wav


def a_tampered_policy(upload: dict[str, Any], wav: bytes, context: Context) -> Form:
    policy = policy_of(upload)
    conditions = [
        condition for condition in policy["conditions"] if isinstance(condition, dict) and "key" not in condition
    ]
    # any key and a 1 TB limit: what a client would like its policy to say
    policy["conditions"] = [*conditions, ["starts-with", "$key", ""], ["content-length-range", 1, 10**12]]
    tampered = base64.b64encode(json.dumps(policy).encode()).decode()
    return [*{**upload["fields"], "policy": tampered, "key": context["victim"]["upload"]["fields"]["key"]}.items()], wav


def an_expired_policy(upload: dict[str, Any], wav: bytes, context: Context) -> Form:
    """The same slot, the same conditions, signed with the stack's own credentials: but it expired a minute ago."""
    expired = (
        context["stack"]
        .aws_client("s3")
        .generate_presigned_post(
            Bucket=bucket_of(upload),
            Key=upload["fields"]["key"],
            Conditions=[["content-length-range", 1, upload["max_bytes"]]],
            ExpiresIn=-60,
        )
    )
    return [*expired["fields"].items()], wav


def no_signature(upload: dict[str, Any], wav: bytes, context: Context) -> Form:
    return [(name, value) for name, value in upload["fields"].items() if name != signature_field(upload)], wav


def no_authentication_at_all(upload: dict[str, Any], wav: bytes, context: Context) -> Form:
    return [("key", upload["fields"]["key"])], wav


def expected_signature_argument(upload: dict[str, Any]) -> str:
    return "X-Amz-Signature" if signature_field(upload) == "x-amz-signature" else "Signature"


# (form, S3's status, its error code, what its message or elements say)
REFUSALS: list[tuple[Callable[[dict[str, Any], bytes, Context], Form], int, str, Callable[..., bool]]] = [
    (
        another_keys_upload_slot,
        403,
        "AccessDenied",
        lambda error, upload: (
            error["Message"]
            == f'Invalid according to Policy: Policy Condition failed: ["eq", "$key", "{upload["fields"]["key"]}"]'
        ),
    ),
    (
        another_keys_inbox,
        403,
        "AccessDenied",
        lambda error, upload: error["Message"].startswith("Invalid according to Policy: Policy Condition failed:"),
    ),
    (
        file_of_26_mb,
        400,
        "EntityTooLarge",
        lambda error, upload: (
            (error["ProposedSize"], error["MaxSizeAllowed"]) == ("26000000", str(upload["max_bytes"]))
        ),
    ),
    (
        one_byte_over_the_limit,
        400,
        "EntityTooLarge",
        lambda error, upload: error["ProposedSize"] == str(upload["max_bytes"] + 1),
    ),
    (
        an_extra_field,
        403,
        "AccessDenied",
        lambda error, upload: (
            error["Message"] == "Invalid according to Policy: Extra input fields: x-amz-meta-billed-to"
        ),
    ),
    (
        a_tampered_policy,
        403,
        "SignatureDoesNotMatch",
        lambda error, upload: error["Message"].startswith("The request signature we calculated does not match"),
    ),
    (
        an_expired_policy,
        403,
        "AccessDenied",
        lambda error, upload: error["Message"] == "Invalid according to Policy: Policy expired.",
    ),
    (
        no_signature,
        400,
        "InvalidArgument",
        lambda error, upload: error["ArgumentName"] == expected_signature_argument(upload),
    ),
    (
        no_authentication_at_all,
        403,
        "AccessDenied",
        lambda error, upload: error["Message"] == "Access Denied",
    ),
]


@pytest.mark.parametrize(("make_form", "status", "code", "says"), REFUSALS, ids=[r[0].__name__ for r in REFUSALS])
def test_s3_refuses_the_form_and_nothing_is_stored_run_or_charged(
    policy_stack: RunningStack,
    victim: dict[str, Any],
    wav: bytes,
    make_form: Callable[[dict[str, Any], bytes, Context], Form],
    status: int,
    code: str,
    says: Callable[..., bool],
) -> None:
    before = policy_stack.usage()
    key_id = before["key_id"]
    upload = create_upload(policy_stack)
    fields, content = make_form(upload, wav, {"victim": victim, "stack": policy_stack})

    response = post_form(upload, fields, content)

    assert response.status_code == status, f"{response.status_code} {response.text[:500]}"
    error = s3_error(response)
    assert error["Code"] == code and says(error, upload), error
    # nothing stored: not in this key's slot, not under the other key's prefixes
    assert stored_versions(policy_stack, upload, upload["fields"]["key"]) == []
    assert stored_versions(policy_stack, upload, f"uploads/{victim['key_id']}/") == []
    assert stored_versions(policy_stack, upload, f"inbox/{victim['key_id']}/") == []
    # nothing run or charged: the job still waits for its file, the other key has only its own waiting job
    assert get_job(policy_stack, upload["job_id"])["status"] == "awaiting_upload"
    assert entries_of(policy_stack, key_id, upload["job_id"]) == []
    assert policy_stack.usage()["balance"] == before["balance"]
    victims_jobs = policy_stack.jobs_of(victim["key_id"])
    assert [job["job_id"] for job in victims_jobs] == [victim["upload"]["job_id"]], victims_jobs
    assert get_job(policy_stack, victim["upload"]["job_id"], victim["api_key"])["status"] == "awaiting_upload"
    assert [entry["kind"] for entry in policy_stack.ledger(victim["key_id"])] == ["topup"]


def test_after_every_refusal_the_upload_as_handed_out_still_runs_its_job_once(
    policy_stack: RunningStack, victim: dict[str, Any], wav: bytes
) -> None:
    before = policy_stack.usage()
    upload = create_upload(policy_stack)
    for make_form, status, _, _ in REFUSALS:
        refused = post_form(upload, *make_form(upload, wav, {"victim": victim, "stack": policy_stack}))
        assert refused.status_code == status, (make_form.__name__, refused.text)

    accepted = post_form(upload, [*upload["fields"].items()], wav)
    assert accepted.status_code == 204, accepted.text
    job = wait_for_job(policy_stack, upload["job_id"])
    assert job["status"] == "succeeded", job
    assert job["credits_used"] > 0
    entries = entries_of(policy_stack, before["key_id"], upload["job_id"])
    assert sorted(entry["kind"] for entry in entries) == ["reserve", "settle"], entries
    assert policy_stack.usage()["balance"] == before["balance"] - job["credits_used"]
    [version] = stored_versions(policy_stack, upload, upload["fields"]["key"])
    assert version["Size"] == len(wav)


def test_a_file_of_exactly_the_limit_is_accepted(policy_stack: RunningStack) -> None:
    upload = create_upload(policy_stack, start_job=False)  # for a later sync call: nothing runs on arrival
    assert ["content-length-range", 1, upload["max_bytes"]] in policy_of(upload)["conditions"]
    response = post_form(upload, [*upload["fields"].items()], bytes(upload["max_bytes"]))
    assert response.status_code == 204, response.text
    [version] = stored_versions(policy_stack, upload, upload["fields"]["key"])
    assert version["Size"] == upload["max_bytes"]
