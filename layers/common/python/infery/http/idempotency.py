"""Idempotency-Key: a POST sent again with the same key (per API key) gets the first answer back and changes nothing.

The records are powertools Idempotency's, in DynamoDB; this module reads the header, says what makes two requests
the same, runs a request's work at most once, and maps powertools' refusals to the API's errors. powertools is
imported on the first request that sends the header: a cold start does not pay for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from infery.domain.errors import Conflict, InternalError, InvalidRequest

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from infery.domain.transcription import TranscriptionRequest
    from infery.wiring import Wiring

# An Idempotency-Key's record is a DynamoDB item (400 KB at most): a larger answer is rendered again on replay
# from the result stored in S3 before the charge, not stored in the record.
INLINE_ANSWER_CHARACTERS = 256 * 1024
# powertools names each record after the module and name of the function it runs once; the records have been
# named after the handler module's "_execute_once" since the first deployment, so a retry sent across a
# deployment still finds its record.
RECORD_FUNCTION_NAME = "_execute_once"


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """The request's Idempotency-Key header, checked; None when it was not sent."""
    value = headers.get("idempotency-key")
    if value is None:
        return None
    if not 1 <= len(value) <= 255 or not value.isprintable():
        raise InvalidRequest(
            "The Idempotency-Key header must be 1 to 255 printable characters.",
            param="Idempotency-Key",
            code="invalid_idempotency_key",
        )
    return value


def request_fingerprint(request: TranscriptionRequest) -> str:
    """What makes two requests the same, independent of how they were encoded (multipart boundaries differ)."""
    # a request without a URL keeps the fingerprint it had before URLs were taken
    options = request.model_dump(exclude={"audio"} if request.url else {"audio", "url"}, mode="json")
    # the fields a fingerprint has had since the first deployment, so a retry sent across a deployment still matches
    options |= {
        "audio_format": request.audio.format.value if request.audio else None,
        "audio_s3_uri": None,
        "audio_s3_etag": None,
    }
    # the newer fields (left out of dumps) change the answer: in the fingerprint when given, so a request without
    # them keeps the fingerprint it always had
    chunking = request.chunking_strategy
    newer = {
        "chunking_strategy": chunking.model_dump() if isinstance(chunking, BaseModel) else chunking,
        "include": sorted(set(request.include)),
        "stream": request.stream,
    }
    options |= {name: value for name, value in newer.items() if value}
    digest = hashlib.sha256(request.audio.whole if request.audio else b"")
    digest.update(json.dumps(options, sort_keys=True).encode())
    return digest.hexdigest()


def route_fingerprint(path: str, *parts: str | bytes) -> str:
    """What makes two requests the same: the route and what was asked, however it was encoded."""
    digest = hashlib.sha256(path.encode())
    for part in parts:
        digest.update(b"\0" + (part if isinstance(part, bytes) else part.encode()))
    return digest.hexdigest()


class _Work:
    """A request's work, run at most once: it keeps the whole answer it made for this response, and gives the
    record a copy without a body too large for it."""

    def __init__(self, work: Callable[[], dict[str, Any]], request_id: str) -> None:
        self.work = work
        self.request_id = request_id
        self.answer: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any]:
        self.answer = {**self.work(), "request_id": self.request_id}
        if len(self.answer.get("body", "")) > INLINE_ANSWER_CHARACTERS:
            return {**self.answer, "body": None}
        return self.answer


class Idempotency:
    """Runs a request's work once per (API key, Idempotency-Key), with the wiring's powertools store and config;
    one per handler instance (``handler_module``: the name its records are made under)."""

    def __init__(self, wiring: Wiring, handler_module: str) -> None:
        self.wiring = wiring
        self.handler_module = handler_module

    @cached_property
    def _execute_once(self) -> Callable[..., dict[str, Any]]:
        from aws_lambda_powertools.utilities.idempotency import idempotent_function

        def execute_once(idempotent_request: dict[str, str], run: _Work) -> dict[str, Any]:
            return run()

        execute_once.__module__, execute_once.__qualname__ = self.handler_module, RECORD_FUNCTION_NAME
        wrapped: Callable[..., dict[str, Any]] = idempotent_function(
            data_keyword_argument="idempotent_request",
            persistence_store=self.wiring.idempotency_store,
            config=self.wiring.idempotency_config,
        )(execute_once)
        return wrapped

    def prepare(self) -> None:
        """Build the once-runner and its store now (before a SnapStart snapshot), not on the first request."""
        self._execute_once  # noqa: B018 - built for its side effect

    def once(
        self,
        key_id: str,
        idempotency_key: str | None,
        *,
        request_id: str,
        lambda_context: LambdaContext,
        fingerprint: Callable[[], str],
        work: Callable[[], dict[str, Any]],
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """``work()``'s answer, once per (key, Idempotency-Key) when the header was sent: a retry gets the first
        answer back, with headers that say it is a replay, and changes nothing. ``fingerprint()`` (a hash of the
        whole request) is computed only then. A replayed answer whose body was too large for its record has
        ``body`` None: the caller renders it again."""
        if idempotency_key is None:
            return work(), {}
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyPersistenceLayerError,
            IdempotencyValidationError,
        )

        # the remaining time of this invocation: a record left in progress by a timed-out one expires with it
        self.wiring.idempotency_config.register_lambda_context(lambda_context)
        run = _Work(work, request_id)
        try:
            request = {"key_id": key_id, "idempotency_key": idempotency_key, "request_sha256": fingerprint()}
            recorded = self._execute_once(idempotent_request=request, run=run)
        except IdempotencyAlreadyInProgressError as exc:
            raise Conflict(
                "A request with this Idempotency-Key is still running. Retry once it has finished.",
                param="Idempotency-Key",
                code="idempotency_key_in_progress",
            ) from exc
        except IdempotencyValidationError as exc:
            raise InvalidRequest(
                "This Idempotency-Key was used with a different request. Use a new key for a new request.",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            ) from exc
        except IdempotencyPersistenceLayerError as exc:
            if "to success" not in str(exc):
                raise
            # the work was done (and a transcription charged) but its answer could not be recorded: say so, not
            # "nothing was charged"; a retry with the same key is charged nothing more
            raise InternalError(
                "The request was processed, but its answer could not be saved. Retry with the same "
                "Idempotency-Key in a minute to get it; you will not be charged again.",
                code="answer_not_saved",
            ) from exc
        # the answer this request made, whole; or the recorded one
        answer = run.answer if run.answer is not None else recorded
        if answer["request_id"] == request_id:  # made now, or this very request delivered again
            return answer, {}
        # the first answer, replayed: this request changed nothing
        return answer, {"idempotent-replayed": "true", "x-infery-original-request-id": answer["request_id"]}
