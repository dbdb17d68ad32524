"""The transcription use case: authenticate, check credits, infer, charge, render."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from .credits import CreditStore, Pricing
from .endpoint_client import WhisperEndpoint
from .errors import InsufficientCredits, InvalidRequest
from .formats import RenderedTranscript, render_transcript
from .inference import InferenceRequest
from .keys import ApiKeyItem, KeyStore
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
                               min_credits_per_request=settings.min_credits_per_request)

    def transcribe(self, key: ApiKeyItem, request: TranscriptionRequest, *, request_id: str) -> TranscriptionOutcome:
        model = self.catalog.resolve(request.model)
        if key.credits < max(1, self.pricing.min_credits_per_request):
            # refuse before spending GPU time on a request that could not be paid for
            raise InsufficientCredits(f"This key has {key.credits} credits left. Top up the key's credits to "
                                      "continue.", headers={"x-infery-credits-balance": str(key.credits)})
        result = self.endpoint.infer(InferenceRequest(
            audio=base64.b64encode(request.audio).decode(),
            task=request.task,
            language=request.language,
            prompt=request.prompt,
            temperature=request.temperature,
            word_timestamps=request.word_timestamps,
        ))
        credits_used = self.pricing.credits_for(result.duration)
        # charged only after a successful inference, so endpoint failures cost the client nothing
        balance_after = self.credits.charge(key, credits_used, request_id=request_id, model=model,
                                            audio_seconds=result.duration)
        rendered = render_transcript(result, request.response_format, task=request.task,
                                     credits_used=credits_used, include_words=request.word_timestamps)
        return TranscriptionOutcome(rendered, credits_used, balance_after, result.duration)
