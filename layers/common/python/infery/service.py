"""The transcription use case: reserve credits, infer, settle (or refund on any failure of ours), render."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .credits import CreditStore, Pricing, Reservation
from .duration import probe_duration
from .endpoint_client import WhisperEndpoint
from .errors import InternalError, InvalidRequest
from .formats import RenderedTranscript, render_transcript
from .inference import InferenceRequest, InferenceResult
from .keys import ApiKeyItem, KeyStore, check_model_allowed
from .observability import logger
from .settings import Settings
from .transcription_request import TranscriptionRequest


@dataclass(frozen=True)
class TranscriptionOutcome:
    rendered: RenderedTranscript
    credits_used: int
    balance_after: int
    audio_seconds: float


class ModelCatalog:
    """The models this deployment serves: its default model, and aliases such as OpenAI's ``whisper-1``."""

    def __init__(self, default_model: str, aliases: tuple[str, ...]) -> None:
        self.default_model = default_model
        self.aliases = aliases

    def names(self) -> list[str]:
        return [self.default_model, *self.aliases]

    def resolve(self, requested: str) -> str:
        if requested == self.default_model or requested in self.aliases:
            return self.default_model
        raise InvalidRequest(
            f"The model '{requested}' does not exist on this deployment. Available models: "
            f"{', '.join(self.names())}.", param="model", code="model_not_found")

    def canonical(self, name: str) -> str:
        """The deployed model a name stands for (itself when it is no name of ours)."""
        return self.default_model if name in self.names() else name

    def describe(self, name: str) -> dict[str, Any]:
        self.resolve(name)  # raises for unknown names
        return {"id": name, "object": "model", "created": 0, "owned_by": "infery"}


class TranscriptionService:
    def __init__(self, settings: Settings, keys: KeyStore, credits: CreditStore, endpoint: WhisperEndpoint) -> None:
        self.keys = keys
        self.credits = credits
        self.endpoint = endpoint
        self.catalog = ModelCatalog(settings.default_model, settings.model_aliases)
        self.pricing = Pricing(seconds_per_credit=settings.seconds_per_credit,
                               min_credits_per_request=settings.min_credits_per_request,
                               model_prices=settings.model_prices)

    def transcribe(self, key: ApiKeyItem, request: TranscriptionRequest, *, request_id: str,
                   before_settle: Callable[[InferenceResult], None] | None = None) -> TranscriptionOutcome:
        """Reserve, infer, settle. ``before_settle`` (a job storing its result) runs before the charge is final:
        if it fails, the reservation is refunded like any other failure."""
        model = self.catalog.resolve(request.model)
        check_model_allowed(key, request.model, model, self.catalog.canonical)
        if request.audio_format is None:
            raise InternalError("The request's audio was not loaded before transcription.")
        declared_seconds = probe_duration(request.audio, request.audio_format)
        reservation = self.credits.reserve(
            key, self.pricing.reservation_for(len(request.audio), declared_seconds, model),
            request_id=request_id, model=model)
        try:
            result = self.endpoint.infer(InferenceRequest(
                # by reference when the audio is in S3: the endpoint's 6 MB body limit does not apply then
                audio=None if request.audio_s3_uri else base64.b64encode(request.audio).decode(),
                audio_s3_uri=request.audio_s3_uri,
                task=request.task,
                language=request.language,
                prompt=request.prompt,
                temperature=request.temperature,
                word_timestamps=request.word_timestamps,
            ))
            credits_used = self.pricing.credits_for(result.duration, model)
            # rendered before settling, so a failure here costs the client nothing
            rendered = render_transcript(result, request.response_format, task=request.task,
                                         credits_used=credits_used, include_words=request.word_timestamps)
            if before_settle is not None:
                before_settle(result)
        except BaseException as failure:
            self._refund(reservation, failure)
            raise
        charge = self.credits.settle(reservation, credits_used, audio_seconds=result.duration)
        if charge.unpaid_credits:
            logger.warning("settled below the real cost", extra={"unpaid_credits": charge.unpaid_credits,
                                                                  "reserved": reservation.credits})
        return TranscriptionOutcome(rendered, credits_used, charge.balance_after, result.duration)

    def _refund(self, reservation: Reservation, failure: BaseException) -> None:
        try:
            self.credits.refund(reservation, reason=f"{type(failure).__name__}: {getattr(failure, 'code', '')}")
        except Exception:
            # the reservation stays open and the reconciler gives it back; the client's error is the one to show
            logger.exception("refund failed; the reconciler will release the reservation")
