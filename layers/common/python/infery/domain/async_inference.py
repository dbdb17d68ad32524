"""A job's run on the model's asynchronous endpoint: what submitting it returns, and how its end is announced.

SageMaker publishes a notification (success or failure) when an asynchronous invocation ends; it reaches the worker
through SNS and SQS, raw or in SNS's envelope.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class AsyncSubmission(BaseModel):
    inference_id: str
    output_location: str | None = None
    failure_location: str | None = None


class _RequestParameters(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    endpoint_name: str | None = Field(default=None, alias="endpointName")
    input_location: str | None = Field(default=None, alias="inputLocation")


class _ResponseParameters(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    output_location: str | None = Field(default=None, alias="outputLocation")
    failure_location: str | None = Field(default=None, alias="failureLocation")


class AsyncNotification(BaseModel):
    """What SageMaker publishes when an asynchronous invocation ends (the SNS message's body)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    inference_id: str = Field(alias="inferenceId")
    invocation_status: str = Field(alias="invocationStatus")  # "Completed" or "Failed"
    failure_reason: str | None = Field(default=None, alias="failureReason")
    request_parameters: _RequestParameters = Field(default_factory=_RequestParameters, alias="requestParameters")
    response_parameters: _ResponseParameters = Field(default_factory=_ResponseParameters, alias="responseParameters")

    @property
    def succeeded(self) -> bool:
        return self.invocation_status == "Completed"

    @classmethod
    def from_message_body(cls, body: str) -> AsyncNotification | None:
        """The notification in an SQS message body (raw delivery, or wrapped in SNS's envelope); None if not one."""
        try:
            payload = json.loads(body)
            if isinstance(payload, dict) and payload.get("Type") == "Notification" and "Message" in payload:
                payload = json.loads(payload["Message"])
            if not isinstance(payload, dict) or payload.get("eventSource") != "aws:sagemaker":
                return None
            return cls.model_validate(payload)
        except (ValueError, ValidationError):
            return None
