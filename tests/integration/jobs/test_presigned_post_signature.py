"""The presigned POST an upload answers with is signed with signature version 4, which every S3 bucket accepts:
boto3 signs it with version 2 in us-east-1 unless told otherwise, and S3 refuses version 2 for buckets created
since June 2020, so a new deployment's uploads would all have been refused."""

from __future__ import annotations

from tests.support.jobs import SEEDED, decoded_policy, post_upload


def test_an_upload_slot_is_signed_with_signature_version_4(jobs_api, accounts, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # where boto3 falls back to version 2
    api_key, _ = accounts.new_key(SEEDED)
    reply = post_upload(jobs_api, api_key, {"filename": "meeting.wav"})
    assert reply.status == 201, reply.text
    fields = reply.json()["fields"]
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert fields["x-amz-credential"].endswith("/s3/aws4_request") and fields["x-amz-signature"]
    assert "AWSAccessKeyId" not in fields and "signature" not in fields
    assert {"x-amz-algorithm": "AWS4-HMAC-SHA256"} in decoded_policy(reply.json())["conditions"]
