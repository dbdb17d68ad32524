"""A job's failed asynchronous invocation: a 4xx the model answered is the job's final error (never retried), even
when its error body cannot be read; a 5xx stays a failure of ours, retried while attempts remain."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from infery.adapters.async_endpoint import AsyncWhisperEndpoint
from infery.domain.async_inference import AsyncNotification
from infery.domain.errors import InvalidRequest, ModelFailed

FAILURE_LOCATION = "s3://audio-bucket/async-failures/job_1-error.out"


class FailureBodies:
    """An S3 client holding the failure body the model wrote, or none (a read that fails)."""

    def __init__(self, body: dict[str, Any] | None) -> None:
        self.body = body

    def get_object(self, **_: Any) -> dict[str, Any]:
        if self.body is None:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
        return {"Body": io.BytesIO(json.dumps(self.body).encode())}


def _failed(status: int, body: dict[str, Any] | None) -> Exception:
    endpoint = AsyncWhisperEndpoint(
        None,
        FailureBodies(body),
        "whisper-async",
        "audio-bucket",
        invocation_timeout_seconds=3600,
        request_ttl_seconds=60,
    )
    side = "client" if 400 <= status < 500 else "server"
    notification = AsyncNotification.model_validate(
        {
            "inferenceId": "job_1#1",
            "invocationStatus": "Failed",
            "eventSource": "aws:sagemaker",
            "failureReason": f"ClientError: Received {side} error ({status}) from model. See the endpoint's logs.",
            "responseParameters": {"failureLocation": FAILURE_LOCATION},
        }
    )
    with pytest.raises(Exception) as raised:
        endpoint.result(notification)
    return raised.value


def test_the_models_own_refusal_keeps_its_code():
    error = _failed(400, {"error": "The audio could not be decoded.", "code": "undecodable_audio"})
    assert isinstance(error, InvalidRequest) and error.status_code == 400
    assert error.code == "undecodable_audio" and error.param == "file"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(None, id="failure-body-unreadable"),
        pytest.param({"error": "no such thing", "code": "something_new"}, id="code-we-do-not-know"),
    ],
)
@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_4xx_without_a_code_we_know_is_still_the_jobs_final_error(status, body):
    error = _failed(status, body)
    assert isinstance(error, InvalidRequest) and error.status_code == 400, error  # a 4xx: the job is not retried
    assert error.code == "invalid_request" and error.param == "file"
    assert "nothing was charged" in error.message


@pytest.mark.parametrize("status", [500, 503, 499])
def test_a_5xx_or_a_cancelled_call_stays_a_failure_of_ours(status):
    error = _failed(status, None)
    assert isinstance(error, ModelFailed) and error.status_code >= 500
