"""Jobs on SageMaker Asynchronous Inference: submit by S3 reference, learn the outcome from SNS.

A real-time invocation ends after 60 s, and 25 MB of low-bitrate audio holds hours of speech. The
asynchronous endpoint runs the same model and container without that limit (up to an hour per
invocation): the request body is an S3 object, the response is written to S3, and SageMaker
publishes a notification (success or failure) that reaches the worker through SNS and SQS.
"""

from __future__ import annotations

import json
import re
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from infery.adapters.realtime_endpoint import CLIENT_ERROR_CODES, UNAVAILABLE_CODES
from infery.domain.async_inference import AsyncNotification, AsyncSubmission
from infery.domain.errors import InvalidRequest, ModelFailed, ModelTimeout, ModelUnavailable
from infery.domain.inference import InferenceError, InferenceRequest, InferenceResult

ASYNC_INPUTS_PREFIX = "async-inputs/"
PROGRESS_PREFIX = "progress/"
# how SageMaker's failure notification names a 4xx the container answered ("Received client error (400) from model");
# 499 is the model server's "the caller stopped waiting", no verdict on the audio
_CLIENT_ERROR_REASON = re.compile(r"client error \((?!499)4\d\d\)", re.IGNORECASE)


def progress_uri(bucket: str, key_id: str, inference_id: str) -> str:
    """Where the model reports its progress through a job's audio (written by endpoint/whisper_server.py)."""
    return f"s3://{bucket}/{PROGRESS_PREFIX}{key_id}/{inference_id}.json"


class ProgressReader:
    """How far the model is through a job's audio (0..1), when it has said."""

    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._s3 = s3_client
        self.bucket = bucket

    def __call__(self, key_id: str, inference_id: str) -> float | None:
        bucket, key = _split_uri(progress_uri(self.bucket, key_id, inference_id))
        try:
            report = json.loads(self._s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            return min(1.0, max(0.0, float(report["windows_done"]) / float(report["windows_total"])))
        except (ClientError, BotoCoreError, ValueError, KeyError, TypeError, ZeroDivisionError):
            return None


def _split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class AsyncWhisperEndpoint:
    def __init__(
        self,
        runtime_client: Any,
        s3_client: Any,
        endpoint_name: str,
        bucket: str,
        *,
        invocation_timeout_seconds: int,
        request_ttl_seconds: int,
    ) -> None:
        self._runtime = runtime_client
        self._s3 = s3_client
        self.endpoint_name = endpoint_name
        self.bucket = bucket
        self.invocation_timeout_seconds = invocation_timeout_seconds
        self.request_ttl_seconds = request_ttl_seconds

    def progress_uri(self, key_id: str, inference_id: str) -> str:
        return progress_uri(self.bucket, key_id, inference_id)

    def submit(self, request: InferenceRequest, *, key_id: str, inference_id: str) -> AsyncSubmission:
        """Write the request body to S3 and queue it on the endpoint; the outcome arrives as a notification."""
        input_key = f"{ASYNC_INPUTS_PREFIX}{key_id}/{inference_id}.json"
        try:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=input_key,
                Body=request.model_dump_json().encode(),
                ContentType="application/json",
            )
            response = self._runtime.invoke_endpoint_async(
                EndpointName=self.endpoint_name,
                ContentType="application/json",
                Accept="application/json",
                InferenceId=inference_id,
                InputLocation=f"s3://{self.bucket}/{input_key}",
                RequestTTLSeconds=self.request_ttl_seconds,
                InvocationTimeoutSeconds=self.invocation_timeout_seconds,
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in UNAVAILABLE_CODES:
                raise ModelUnavailable("The model endpoint is not available right now; nothing was charged.") from exc
            raise ModelFailed("The model endpoint refused the job; nothing was charged.") from exc
        except BotoCoreError as exc:
            raise ModelUnavailable("The model endpoint cannot be reached right now; nothing was charged.") from exc
        return AsyncSubmission(
            inference_id=response.get("InferenceId") or inference_id,
            output_location=response.get("OutputLocation"),
            failure_location=response.get("FailureLocation"),
        )

    def result(self, notification: AsyncNotification) -> InferenceResult:
        """The transcript of a finished invocation, or the job-worded error it failed with."""
        if not notification.succeeded:
            raise self._failure(notification)
        location = notification.response_parameters.output_location
        if not location:
            raise ModelFailed("The model finished without a result; nothing was charged.")
        return self.output(location)

    def output(self, location: str) -> InferenceResult:
        """The result a successful invocation wrote to ``location``."""
        try:
            bucket, key = _split_uri(location)
            body = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            return InferenceResult.model_validate_json(body)
        except (ClientError, BotoCoreError) as exc:
            raise ModelUnavailable("The job's result could not be read from storage; nothing was charged.") from exc
        except ValidationError as exc:
            raise ModelFailed("The model returned a result that could not be read; nothing was charged.") from exc

    def _failure(self, notification: AsyncNotification) -> Exception:
        model_error = self._model_error(notification.response_parameters.failure_location)
        if model_error is not None and model_error.code in CLIENT_ERROR_CODES:
            return InvalidRequest(model_error.error, param="file", code=model_error.code)
        reason = (notification.failure_reason or "").lower()
        if _CLIENT_ERROR_REASON.search(reason):
            # the model refused the request itself (its error unreadable, or of no code we know): sent again, it
            # would be refused again, so the job ends here instead of running the model once per attempt
            return InvalidRequest(
                "The model refused this job's audio; nothing was charged. Check the file, or send it again as a "
                "new job.",
                param="file",
                code="invalid_request",
            )
        if "timeout" in reason or "timed out" in reason:
            return ModelTimeout(
                "The transcription ran past the job time limit "
                f"({self.invocation_timeout_seconds // 60} minutes); nothing was charged."
            )
        if "ttl" in reason or "expired" in reason:
            return ModelUnavailable("The job waited too long for a free model instance; nothing was charged.")
        return ModelFailed("The model failed while transcribing this job; nothing was charged.")

    def _model_error(self, failure_location: str | None) -> InferenceError | None:
        if not failure_location:
            return None
        try:
            bucket, key = _split_uri(failure_location)
            body = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            return InferenceError.model_validate(json.loads(body))
        except (ClientError, BotoCoreError, ValueError, ValidationError):
            return None
