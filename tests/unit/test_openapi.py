"""The committed openapi.json is what the code generates, and its schemas fit what the code sends."""

from __future__ import annotations

import json

import pytest
from infery.domain.errors import InvalidRequest
from infery.domain.inference import Task
from infery.domain.jobs import JobStatus, new_job
from infery.domain.transcription import TranscriptionOptions
from infery.http.openapi import EXCLUDED_ROUTES, OPERATIONS, RouteNotDescribed, openapi_document
from infery.http.openapi_schemas import Error, JobView, TranscriptionJson, UploadRequest
from pydantic import ValidationError

from tools.generate_openapi import DOCUMENT, generated


def test_the_committed_openapi_json_is_what_the_code_generates():
    assert DOCUMENT.read_text(encoding="utf-8") == generated(), (
        "openapi.json is stale: run `make openapi` and commit it"
    )


def test_every_route_of_the_handler_is_described_or_excluded():
    document = json.loads(generated())
    described = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert described == set(OPERATIONS)
    assert not described & EXCLUDED_ROUTES


def test_a_route_without_a_contract_fails_the_generation():
    with pytest.raises(RouteNotDescribed, match="DELETE.*/v1/jobs/{job_id}"):
        openapi_document([*OPERATIONS, ("DELETE", "/v1/jobs/{job_id}")])
    with pytest.raises(RouteNotDescribed, match="described but not routed"):
        openapi_document(list(OPERATIONS)[1:])


def test_a_job_as_the_api_shows_it_fits_the_job_schema():
    options = TranscriptionOptions(task=Task.TRANSCRIBE, model="whisper-1")
    job = new_job(
        job_id="job_" + "0" * 32,
        key_id="key_0123456789abcdef",
        key_hash="h" * 64,
        options=options,
        status=JobStatus.QUEUED,
        source_uri="s3://bucket/uploads/key/upl.wav",
        upload_id=None,
        filename="a.wav",
        webhook_url=None,
    )
    JobView.model_validate(job.public_view())  # extra="forbid": a field the view gained is a failure here


def test_an_error_body_fits_the_error_schema():
    Error.model_validate(InvalidRequest("Bad.", param="model", code="invalid_value").to_body())


@pytest.mark.parametrize(
    "body",
    [
        {"model": "whisper-1", "prompt": "x" * 1001},
        {"model": "whisper-1", "filename": "a\x00.wav"},
        {"model": "whisper-1", "stream": "yes please"},
        {"model": "whisper-1", "chunking_strategy": {"type": "server_vad", "threshold": 2}},
        {"model": "whisper-1", "chunking_strategy": {"type": "server_vad", "eagerness": "high"}},
        {"model": "whisper-1", "include": ["tokens"]},
        {"model": "", "audio": "UklGRg=="},
    ],
)
def test_the_request_schemas_refuse_what_the_api_refuses(body):
    with pytest.raises(ValidationError):
        TranscriptionJson.model_validate(body)


def test_an_empty_upload_request_is_valid():
    assert UploadRequest.model_validate({}).start_job is True
