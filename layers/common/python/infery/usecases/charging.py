"""What a transcription costs and how it is charged, for a synchronous request and for a job alike: the deployment's
terms (its models, prices and audio limits), credits reserved before the model runs, settled to the real duration
after it, or refunded.

Each use case hands in its own credits port; none reaches through another use case for it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from infery.domain.diarization import known_speakers_for_model
from infery.domain.duration import check_decodable, probe_duration, probe_sample_rate
from infery.domain.errors import InsufficientCredits, InvalidRequest
from infery.domain.formats import RenderedTranscript, render_for
from infery.domain.inference import InferenceRequest, InferenceResult
from infery.domain.keys import ApiKeyItem, check_model_allowed
from infery.domain.ledger import Reservation
from infery.domain.pricing import Pricing
from infery.domain.transcription import LoadedAudio, TranscriptionOptions
from infery.observability import logger
from infery.usecases.ports import Credits


@dataclass(frozen=True)
class TranscriptionOutcome:
    rendered: RenderedTranscript
    credits_used: int
    balance_after: int
    audio_seconds: float


def minutes(seconds: float) -> str:
    count = max(1, round(seconds / 60))
    return f"{count} minute{'s' if count != 1 else ''}"


# OpenAI's name for Whisper: always a name of the deployed model, so unmodified clients that ask for it get it.
OPENAI_WHISPER = "whisper-1"


class ModelCatalog:
    """The models this deployment serves: its default model, OpenAI's ``whisper-1``, and the operator's aliases
    (``MODEL_ALIASES``: each name and the name it stands for, the deployed model or another alias of it)."""

    def __init__(self, default_model: str, aliases: Mapping[str, str]) -> None:
        self.default_model = default_model
        self._stands_for = {OPENAI_WHISPER: default_model, **aliases, default_model: default_model}
        for name in aliases:
            self._follow(name)  # an alias that leads nowhere fails at start, not on a client's request

    def _follow(self, name: str) -> str:
        seen = [name]
        while name != self.default_model:
            if name not in self._stands_for:
                raise ValueError(f"model alias {seen[0]!r} stands for {name!r}, which is no model of this deployment")
            name = self._stands_for[name]
            if name in seen:
                raise ValueError(f"model aliases go round in a circle: {' -> '.join([*seen, name])}")
            seen.append(name)
        return name

    def names(self) -> list[str]:
        return [self.default_model, *(name for name in self._stands_for if name != self.default_model)]

    def resolve(self, requested: str) -> str:
        if requested in self._stands_for:
            return self._follow(requested)
        raise InvalidRequest(
            f"The model '{requested}' does not exist on this deployment. Available models: {', '.join(self.names())}.",
            param="model",
            code="model_not_found",
        )

    def canonical(self, name: str) -> str:
        """The deployed model a name stands for (itself when it is no name of ours)."""
        return self._follow(name) if name in self._stands_for else name

    def describe(self, name: str) -> dict[str, Any]:
        self.resolve(name)  # raises for unknown names
        return {"id": name, "object": "model", "created": 0, "owned_by": "infery"}


@dataclass(frozen=True)
class TranscriptionTerms:
    """What this deployment transcribes, and at what price: plain values the wiring reads from the settings."""

    catalog: ModelCatalog
    pricing: Pricing
    # the most one model invocation decodes (the container's WHISPER_MAX_AUDIO_SECONDS): a longer job runs in parts
    max_audio_seconds: float
    # no file longer than this is transcribed, by a synchronous call ...
    max_sync_audio_seconds: float
    min_audio_sample_rate: int
    # ... or by a job (its parts each under max_audio_seconds); None: the same as max_audio_seconds
    max_job_audio_seconds: float | None = None

    @property
    def max_file_seconds(self) -> float:
        """The longest file this deployment transcribes at all: a job's limit."""
        return self.max_job_audio_seconds or self.max_audio_seconds

    def check_audio_limits(
        self, audio: LoadedAudio, max_seconds: float | None = None, *, diarize: bool = False
    ) -> float | None:
        """Refuse, before any credit is held, audio that would make the model work without end: a header that
        says 1 Hz turns 4 KB into 2,000 s, no file may be longer than the deployment transcribes, and none longer
        than ``max_seconds`` (a synchronous call's ceiling: what the model finishes before the API's deadline).
        ``diarize``: speakers are asked for (the synchronous ceiling is then lower). Returns the duration the
        header declares (None when it does not say)."""
        check_decodable(audio.data, audio.format)
        declared_seconds = probe_duration(audio.data, audio.format)
        sample_rate = probe_sample_rate(audio.data, audio.format)
        if sample_rate is not None and sample_rate < self.min_audio_sample_rate:
            raise InvalidRequest(
                f"The audio's sample rate is {sample_rate} Hz; at least "
                f"{self.min_audio_sample_rate} Hz is needed to transcribe speech.",
                param="file",
                code="sample_rate_too_low",
            )
        if declared_seconds is not None and declared_seconds > self.max_file_seconds:
            raise InvalidRequest(
                f"The audio lasts {minutes(declared_seconds)}; this deployment transcribes at most "
                f"{minutes(self.max_file_seconds)} per file.",
                param="file",
                code="audio_too_long",
            )
        if declared_seconds is not None and max_seconds is not None and declared_seconds > max_seconds:
            which = "a synchronous request that asks for speakers" if diarize else "a synchronous request"
            raise InvalidRequest(
                f"The audio lasts {declared_seconds:.0f} s; {which} transcribes at most "
                f"{max_seconds:.0f} s, what the model finishes within the API's time limit. Nothing was "
                "charged. Send it as a job instead: POST /v1/audio/transcriptions/jobs (with the file, or an "
                "upload_id from POST /v1/uploads), then follow GET /v1/jobs/{job_id}.",
                param="file",
                code="audio_too_long_for_sync",
            )
        return declared_seconds


def refund_reason(failure: BaseException | str) -> str:
    """What a refund's ledger entry says: the failure's type and code, or a reason in words."""
    return failure if isinstance(failure, str) else f"{type(failure).__name__}: {getattr(failure, 'code', '')}"


def seconds_to_cover(
    terms: TranscriptionTerms, audio: LoadedAudio, max_seconds: float | None = None, *, diarize: bool = False
) -> float:
    """The seconds of audio a reservation pays for (the audio's limits checked first): its header's duration with a
    margin, or a bound from its size, and never past the ceiling (``max_seconds``, else the deployment's)."""
    declared_seconds = terms.check_audio_limits(audio, max_seconds, diarize=diarize)
    covered_seconds = terms.pricing.seconds_to_reserve(audio.size, declared_seconds)
    # a file whose header does not say, so large it could hold more than this call transcribes: the model
    # refuses what goes past the ceiling
    return min(covered_seconds, terms.max_file_seconds, max_seconds or terms.max_file_seconds)


def check_least_charge(
    credits: Credits, terms: TranscriptionTerms, key: ApiKeyItem, requested_model: str, *, needed_for: str
) -> None:
    """402 for a key whose balance is under the smallest charge a request of ``requested_model`` can have: what
    can be known before the audio is (an unknown model is refused here too). ``needed_for``: what asks, in words."""
    model = terms.catalog.resolve(requested_model)
    minimum = max(1, terms.pricing.credits_for(0, model))
    # a sharded key was read from one shard: its total decides, read only when that shard alone is short
    balance = credits.balance(key.key_hash) if key.credits < minimum and key.credit_shards > 1 else key.credits
    if balance < minimum:
        raise InsufficientCredits(
            f"This key's balance is {balance} credits; {needed_for} needs at least {minimum}. Top up the key's "
            "credits to continue.",
            headers={"x-infery-credits-balance": str(balance)},
        )


def reserve(
    credits: Credits,
    terms: TranscriptionTerms,
    key: ApiKeyItem,
    requested_model: str,
    audio: LoadedAudio,
    *,
    request_id: str,
    hold_seconds: int | Callable[[float], int] | None = None,
    max_seconds: float | None = None,
    diarize: bool = False,
) -> Reservation:
    """Check what can be checked before inference (model, audio limits), then hold an upper bound of its cost.
    ``max_seconds``: a ceiling of this call's own, below the deployment's (a synchronous call's); ``diarize``:
    speakers are asked for, at their surcharge; ``hold_seconds``: how long the credits are held, or what that is
    for the seconds covered."""
    model = terms.catalog.resolve(requested_model)
    check_model_allowed(key, requested_model, model, terms.catalog.canonical)
    covered_seconds = seconds_to_cover(terms, audio, max_seconds, diarize=diarize)
    if callable(hold_seconds):
        hold_seconds = hold_seconds(covered_seconds)
    return credits.reserve(
        key,
        terms.pricing.credits_for(covered_seconds, model, diarize=diarize),
        request_id=request_id,
        model=model,
        hold_seconds=hold_seconds,
        covered_seconds=covered_seconds,
    )


def inference_request(
    options: TranscriptionOptions,
    audio: LoadedAudio,
    reservation: Reservation,
    *,
    progress_s3_uri: str | None = None,
    max_sync_audio_seconds: float | None = None,
) -> InferenceRequest:
    """The model's request: the audio (inline, or by reference to the version that was checked), and no more
    seconds of it than the reservation pays for, so a settle never needs more than was reserved."""
    return InferenceRequest(
        # by reference when the audio is in S3: the endpoint's 6 MB body limit does not apply then
        audio=None if audio.s3_uri else base64.b64encode(audio.whole).decode(),
        audio_s3_uri=audio.s3_uri,
        audio_s3_etag=audio.s3_etag if audio.s3_uri else None,
        audio_s3_version_id=audio.s3_version_id if audio.s3_uri else None,
        max_audio_seconds=reservation.covered_seconds,
        max_sync_audio_seconds=max_sync_audio_seconds,
        task=options.task,
        language=options.language,
        prompt=options.prompt,
        temperature=options.temperature,
        word_timestamps=options.word_timestamps,
        progress_s3_uri=progress_s3_uri,
        cuts=options.cuts,
        logprobs=options.logprobs,
        diarize=options.diarize,
        known_speakers=known_speakers_for_model(options.known_speaker_names, options.known_speaker_references),
    )


def settle(
    credits: Credits,
    pricing: Pricing,
    reservation: Reservation,
    options: TranscriptionOptions,
    result: InferenceResult,
    *,
    before_settle: Callable[[InferenceResult], object] | None = None,
) -> TranscriptionOutcome:
    """Charge the real duration of a finished inference. ``before_settle`` (storing the result) runs before the
    charge is final: if it fails, or rendering does, the reservation is refunded instead."""
    try:
        credits_used = pricing.credits_for(result.duration, reservation.model, diarize=options.diarize)
        # rendered before settling, so a failure here costs the client nothing
        rendered = render_for(result, options, credits_used=credits_used)
        if before_settle is not None:
            before_settle(result)
    except BaseException as failure:
        refund(credits, reservation, failure)
        raise
    charge = credits.settle(reservation, credits_used, audio_seconds=result.duration)
    if charge.unpaid_credits:
        logger.warning(
            "settled below the real cost",
            extra={"unpaid_credits": charge.unpaid_credits, "reserved": reservation.credits},
        )
    return TranscriptionOutcome(rendered, credits_used, charge.balance_after, result.duration)


def refund(credits: Credits, reservation: Reservation, failure: BaseException) -> None:
    """Give the reservation back after a failure, which is the one the client is shown; a refund that fails is
    logged, not raised."""
    try:
        credits.refund(reservation, reason=refund_reason(failure))
    except Exception:
        # the reservation stays open and the reconciler gives it back; the client's error is the one to show
        logger.exception("refund failed; the reconciler will release the reservation")
