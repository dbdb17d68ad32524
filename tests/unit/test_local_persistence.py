"""local_stack.persistence: which requests mark moto's state changed, and how a snapshot is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_stack import persistence
from local_stack.persistence import MotoState, changed_service


def _signed(service: str) -> str:
    return (
        f"AWS4-HMAC-SHA256 Credential=local/20261204/us-east-1/{service}/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=abc"
    )


@pytest.mark.parametrize(
    ("environ", "service"),
    [
        ({"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.TransactWriteItems"}, "dynamodb"),
        ({"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.PutItem"}, "dynamodb"),
        ({"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "AmazonSQS.SendMessage"}, "sqs"),
        ({"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "AmazonSQS.DeleteMessage"}, "sqs"),
        ({"REQUEST_METHOD": "PUT"}, "s3"),
        ({"REQUEST_METHOD": "DELETE"}, "s3"),
        ({"REQUEST_METHOD": "POST"}, "sns"),  # the query protocol: Publish, Subscribe ... in the body
    ],
)
def test_a_change_marks_the_service_its_signature_names(environ, service):
    signed_for = {"HTTP_X_AMZ_TARGET": ""} | environ
    signed_for["HTTP_AUTHORIZATION"] = _signed(service)
    assert changed_service(signed_for) == service


@pytest.mark.parametrize(
    "environ",
    [
        {"REQUEST_METHOD": "GET"},
        {"REQUEST_METHOD": "HEAD"},
        {"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.GetItem"},
        {"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.Query"},
        {"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.Scan"},
        {"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.TransactGetItems"},
        {"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.DescribeTable"},
        # the stack's pollers ask several times a second: an idle stack writes nothing
        {"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "AmazonSQS.ReceiveMessage"},
        {"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "AmazonSQS.GetQueueUrl"},
    ],
)
def test_a_read_marks_nothing(environ):
    assert changed_service({**environ, "HTTP_AUTHORIZATION": _signed("dynamodb")}) is None


def test_an_unsigned_change_marks_every_service():
    # a browser's presigned POST upload carries its signature in the form, not in a header
    assert changed_service({"REQUEST_METHOD": "POST"}) == "*"


def test_only_changes_schedule_a_save(tmp_path: Path):
    state = MotoState(tmp_path)
    state.request_served({"REQUEST_METHOD": "GET"})
    assert not state._pending.is_set()
    state.request_served({"REQUEST_METHOD": "PUT", "HTTP_AUTHORIZATION": _signed("s3")})
    assert state._pending.is_set() and state._changed == {"s3"}


def test_a_failed_write_leaves_the_last_snapshot_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    snapshot = tmp_path / "dynamodb.pickle"
    persistence._write_atomically(snapshot, b"the last save")

    def full_disk(_: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(persistence.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        persistence._write_atomically(snapshot, b"half of the next one")
    assert snapshot.read_bytes() == b"the last save"
    assert [path.name for path in tmp_path.iterdir()] == ["dynamodb.pickle"]  # no temporary file left behind


def test_a_failed_save_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    state = MotoState(tmp_path)
    state.request_served({"REQUEST_METHOD": "PUT", "HTTP_AUTHORIZATION": _signed("s3")})
    monkeypatch.setattr(state, "_pickle", lambda changed: {"s3": b"state"})
    monkeypatch.setattr(persistence, "_write_atomically", lambda path, data: (_ for _ in ()).throw(OSError(28, "full")))
    with pytest.raises(OSError):
        state.save()
    assert state._changed == {"s3"} and state._pending.is_set()
