"""Pricing: what audio costs in credits, and how much a request reserves before the model has heard it.

Plain values, read from the settings (settings.py builds its price table from these types); the credit store
applies what they compute.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

# Whisper's decoded duration differs from a container's by a few frames (MP3 padding, AAC priming):
# the reservation covers that, so settling almost never needs more than was reserved.
_DURATION_MARGIN_RATIO = 1.02
_DURATION_MARGIN_SECONDS = 0.5


class ModelPrice(BaseModel):
    seconds_per_credit: float = Field(gt=0)
    min_credits_per_request: int | None = Field(default=None, ge=0)


class Pricing(BaseModel):
    """1 credit per started ``seconds_per_credit`` of audio, at least a minimum; models may be priced apart."""

    seconds_per_credit: float = Field(gt=0)
    min_credits_per_request: int = Field(ge=0)
    model_prices: dict[str, ModelPrice] = Field(default_factory=dict)
    # Speaker diarization's surcharge: one more credit per started this many seconds of diarized audio (None: free)
    diarization_seconds_per_credit: float | None = Field(default=None, gt=0)
    # The slowest bitrate we expect speech to be encoded at; bounds the duration of a file that does not declare it.
    min_bits_per_second_for_unknown_duration: int = Field(default=16_000, gt=0)

    def _price(self, model: str | None) -> tuple[float, int]:
        price = self.model_prices.get(model or "")
        if price is None:
            return self.seconds_per_credit, self.min_credits_per_request
        minimum = (
            self.min_credits_per_request if price.min_credits_per_request is None else price.min_credits_per_request
        )
        return price.seconds_per_credit, minimum

    def credits_for(self, audio_seconds: float, model: str | None = None, *, diarize: bool = False) -> int:
        seconds_per_credit, minimum = self._price(model)
        # a small tolerance so 10.0000001 s of float noise is not billed as a started third block
        started_blocks = math.ceil(audio_seconds / seconds_per_credit - 1e-6)
        surcharge = 0
        if diarize and self.diarization_seconds_per_credit is not None:
            surcharge = math.ceil(audio_seconds / self.diarization_seconds_per_credit - 1e-6)
        return max(minimum, started_blocks) + surcharge

    def seconds_to_reserve(self, audio_bytes: int, declared_seconds: float | None) -> float:
        """The seconds of audio a reservation pays for, taken before inference; the model refuses audio longer.

        The header's duration when it declares one (silence compresses far below any bitrate, so the file's size
        says nothing then); else a bound from the size at the lowest bitrate speech is encoded at."""
        if declared_seconds is not None:
            return declared_seconds * _DURATION_MARGIN_RATIO + _DURATION_MARGIN_SECONDS
        return audio_bytes * 8 / self.min_bits_per_second_for_unknown_duration

    def reservation_for(self, audio_bytes: int, declared_seconds: float | None, model: str | None = None) -> int:
        """An upper bound of what the audio will cost, taken before inference."""
        return max(1, self.credits_for(self.seconds_to_reserve(audio_bytes, declared_seconds), model))
