"""What a stand-in SageMaker endpoint answers: a well-formed result, or the error SageMaker wraps a model's 500 in."""

from __future__ import annotations

import json
from typing import Any

from tests.support.builders import inference_result, segment

MODEL_ERROR_500 = {
    "Message": "Received server error (500) from primary",
    "OriginalStatusCode": 500,
    "OriginalMessage": json.dumps({"error": "boom", "code": "inference_failed"}),
}
MODEL_ERROR_HEADERS = {"x-amzn-ErrorType": "ModelError"}


def model_answer(duration: float) -> dict[str, Any]:
    """A well-formed inference result from the stand-in endpoint, for ``duration`` seconds of audio."""
    answer: dict[str, Any] = json.loads(
        inference_result(
            "Hello there.", [segment(0, 0.0, duration, " Hello there.")], duration=duration
        ).model_dump_json()
    )
    return answer
