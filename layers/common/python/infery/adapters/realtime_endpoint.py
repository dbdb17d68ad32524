"""Calls the Whisper SageMaker endpoint and turns its failures into clear API errors."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from pydantic import ValidationError

from infery.domain.errors import InvalidRequest, ModelFailed, ModelTimeout, ModelUnavailable
from infery.domain.inference import InferenceError, InferenceRequest, InferenceResult

# What the model server says about the audio, passed on to the client as its own mistake (4xx).
_MODEL_ERROR_PARAMS = {
    "unsupported_language": "language",
    "invalid_speaker_reference": "known_speaker_references",
    "diarization_unavailable": "response_format",
}
CLIENT_ERROR_CODES = {
    "undecodable_audio",
    "unsupported_language",
    "invalid_request",
    "audio_too_long",
    "audio_too_long_for_sync",
    "sample_rate_too_low",
    "audio_longer_than_declared",
    "audio_changed",
    # speaker diarization: a voice sample the model cannot use, or a deployment without diarization
    "invalid_speaker_reference",
    "diarization_unavailable",
}
UNAVAILABLE_CODES = {
    "ServiceUnavailable",
    "ModelNotReadyException",
    "ThrottlingException",
    "InternalDependencyException",
    "ValidationError",
}


class WhisperEndpoint:
    def __init__(self, runtime_client: Any, endpoint_name: str) -> None:
        self._client = runtime_client
        self._endpoint_name = endpoint_name

    def infer(self, request: InferenceRequest) -> InferenceResult:
        try:
            response = self._client.invoke_endpoint(
                EndpointName=self._endpoint_name,
                ContentType="application/json",
                Accept="application/json",
                Body=request_body(request),
            )
            body = response["Body"].read()
        except ReadTimeoutError as exc:
            raise ModelTimeout(
                "The model did not answer in time; nothing was charged. Retry, or send long "
                "audio through the upload flow."
            ) from exc
        except (ResponseStreamingError, IncompleteReadError) as exc:
            raise ModelFailed(
                "The model's answer was cut off before it ended; nothing was charged. Retry the request."
            ) from exc
        except (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, HTTPClientError) as exc:
            # HTTPClientError last: the base of every other transport failure botocore raises
            raise ModelUnavailable(
                "The model endpoint cannot be reached right now; nothing was charged. Retry in a moment."
            ) from exc
        except ClientError as exc:
            raise _error_from_client_error(exc) from exc
        try:
            return InferenceResult.model_validate_json(body)
        except ValidationError as exc:
            raise ModelFailed("The model returned a response that could not be read; nothing was charged.") from exc


# how much of the base64 text is copied into the body at a time
_CHUNK_CHARACTERS = 1 << 18


def request_body(request: InferenceRequest) -> bytes | bytearray:
    """The request as the endpoint's JSON body, the same JSON as ``request.model_dump_json()``.

    Audio sent inline is most of the body: its base64 text, which needs no escaping in JSON, is copied into the
    body a slice at a time, and the rest of the request is serialised around it. The body is then the one full
    copy of the text, where serialising the whole request to a str and encoding it would make two more.
    """
    audio = request.audio
    if audio is None or not audio.isascii() or '"' in audio or "\\" in audio:
        return request.model_dump_json().encode()  # by reference, or text that is not base64: serialised as is
    head = b'{"audio":"'
    rest = b'",' + request.model_dump_json(exclude={"audio"}).encode()[1:]  # the other fields, and the closing }
    body = bytearray(len(head) + len(audio) + len(rest))
    body[: len(head)] = head
    position = len(head)
    for start in range(0, len(audio), _CHUNK_CHARACTERS):
        chunk = audio[start : start + _CHUNK_CHARACTERS].encode("ascii")
        body[position : position + len(chunk)] = chunk
        position += len(chunk)
    body[position:] = rest
    return body


def _error_from_client_error(exc: ClientError) -> Exception:
    code = exc.response.get("Error", {}).get("Code", "")
    if code == "ModelError":
        status = int(exc.response.get("OriginalStatusCode") or 500)
        model_error = _parse_model_error(exc.response.get("OriginalMessage"))
        if 400 <= status < 500 and model_error and model_error.code in CLIENT_ERROR_CODES:
            param = _MODEL_ERROR_PARAMS.get(model_error.code, "file")
            return InvalidRequest(model_error.error, param=param, code=model_error.code)
        return ModelFailed("The model failed to transcribe this audio; nothing was charged.")
    if code in UNAVAILABLE_CODES:
        return ModelUnavailable(
            "The model endpoint is not available right now; nothing was charged. Retry in a moment."
        )
    return ModelFailed("The model endpoint returned an error; nothing was charged.")


def _parse_model_error(original_message: str | None) -> InferenceError | None:
    if not original_message:
        return None
    try:
        return InferenceError.model_validate(json.loads(original_message))
    except (ValueError, ValidationError):
        return None
