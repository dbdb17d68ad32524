"""No internal text reaches a client, whichever part of the system wrote the message.

The model server, botocore and FFmpeg write messages for operators: "[Errno 1094995529] Invalid data found when
processing input", "s3://infery-audio-123456789012-us-east-1/uploads/...". An InferyError is what a client sees
(the API's answer, a job's error), so it keeps neither errno text nor the names of our buckets and resources.
"""

from __future__ import annotations

import pytest
from infery.domain import errors

BUCKET = "infery-audio-123456789012-us-east-1"


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        (
            "The audio could not be decoded: [Errno 1094995529] Invalid data found when processing input",
            "The audio could not be decoded: Invalid data found when processing input",
        ),
        ("[Errno -11] Resource temporarily unavailable", "Resource temporarily unavailable"),
        (
            f"The audio object s3://{BUCKET}/uploads/key_0123456789abcdef/upl_00.wav cannot be read.",
            "The audio object (the stored file) cannot be read.",
        ),
        (f"Could not read 's3://{BUCKET}/inbox/key_0/a b.wav'", "Could not read '(the stored file)'"),
        (
            f"An error occurred (AccessDenied) on arn:aws:s3:::{BUCKET}/uploads/x",
            "An error occurred (AccessDenied) on (an AWS resource)",
        ),
        ("arn:aws:sagemaker:us-east-1:123456789012:endpoint/infery-whisper is busy", "(an AWS resource) is busy"),
    ],
)
def test_errno_text_s3_uris_and_arns_are_taken_out_of_every_client_message(message, kept):
    for error_class in (errors.InvalidRequest, errors.ModelFailed, errors.NotFound):
        error = error_class(message, param="file", code="undecodable_audio")
        assert error.message == kept
        assert error.to_body()["error"]["message"] == kept
        assert BUCKET not in str(error) and "Errno" not in str(error) and "123456789012" not in str(error)


def test_a_plain_message_is_left_alone():
    message = "The audio file is empty. Upload it again with POST /v1/uploads (see https://example.com/docs#s3)."
    assert errors.InvalidRequest(message).message == message
