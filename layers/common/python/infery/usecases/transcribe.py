"""The transcription use case (a synchronous request): reserve credits, infer, settle (or refund on any failure of
ours), render. A request sent with an Idempotency-Key keeps its result, so a retry is answered from it, charged once.
"""

from __future__ import annotations

from collections.abc import Callable

from infery.domain.errors import InternalError
from infery.domain.formats import render_for
from infery.domain.ids import attempt_id
from infery.domain.inference import InferenceResult
from infery.domain.keys import ApiKeyItem
from infery.domain.ledger import LedgerKind
from infery.domain.transcription import LoadedAudio, TranscriptionOptions
from infery.usecases import charging
from infery.usecases.charging import TranscriptionOutcome, TranscriptionTerms
from infery.usecases.ports import Credits, RealTimeEndpoint, Results


class TranscriptionService:
    def __init__(
        self,
        terms: TranscriptionTerms,
        credits: Credits,
        endpoint: RealTimeEndpoint,
        results: Results,
        *,
        max_sync_diarized_audio_seconds: float | None = None,
    ) -> None:
        self.terms = terms
        self.credits = credits
        self.endpoint = endpoint
        self.results = results
        # a lower ceiling for a call that asks for speakers: diarization runs after Whisper, within the same limit
        self.max_sync_diarized_audio_seconds = max_sync_diarized_audio_seconds

    def sync_ceiling(self, options: TranscriptionOptions) -> float:
        """The most seconds of audio this synchronous call transcribes: what the model finishes within the API's
        time limit, and less when speakers are asked for."""
        ceiling = self.terms.max_sync_audio_seconds
        if options.diarize and self.max_sync_diarized_audio_seconds is not None:
            return min(ceiling, self.max_sync_diarized_audio_seconds)
        return ceiling

    def transcribe(
        self,
        key: ApiKeyItem,
        options: TranscriptionOptions,
        audio: LoadedAudio,
        *,
        request_id: str,
        check_client_waiting: Callable[[], object] | None = None,
    ) -> TranscriptionOutcome:
        """Reserve, infer, settle. ``check_client_waiting`` runs once the model has answered, before the charge is
        final: it raises when the client no longer waits for the answer, and the reservation is refunded."""

        def before_settle(_: InferenceResult) -> None:
            if check_client_waiting is not None:
                check_client_waiting()

        return self._transcribe(key, options, audio, request_id=request_id, before_settle=before_settle)

    def check_balance(self, key: ApiKeyItem, options: TranscriptionOptions) -> None:
        """402 now for a key that cannot pay the smallest charge: before audio sent by URL is fetched and stored."""
        charging.check_least_charge(self.credits, self.terms, key, options.model, needed_for="a transcription by url")

    def transcribe_once(
        self,
        key: ApiKeyItem,
        options: TranscriptionOptions,
        audio: LoadedAudio | Callable[[], LoadedAudio],
        *,
        idempotency_id: str,
        check_client_waiting: Callable[[], object] | None = None,
    ) -> TranscriptionOutcome:
        """``transcribe`` for a request sent with an Idempotency-Key: its credits are reserved under the key's
        ``idempotency_id``, not under the gateway's request id, so a retry after any failure is charged at most once;
        its result is stored under that id before the settle.

        Charged already (the answer was lost after the settle): the stored result is rendered again, nothing is
        charged, and ``audio``, when it is a function that loads it (a fetch by URL), is never called. Refunded
        before (the model failed): the retry runs again under a new attempt's id."""
        entries = self.credits.entries_for_request(key.key_id, idempotency_id, parts=key.ledger_parts)
        settled = next((entry for entry in entries if entry.kind is LedgerKind.SETTLE), None)
        if settled is not None:
            result = self.results.find_result(self.results.result_key(key.key_id, idempotency_id))
            if result is None:
                raise InternalError(
                    "This request was charged, but its result was lost; contact the operator with its Idempotency-Key."
                )
            credits_used = settled.billed_credits or 0
            rendered = render_for(result, options, credits_used=credits_used)
            return TranscriptionOutcome(rendered, credits_used, self.credits.balance(key.key_hash), result.duration)
        attempts = sum(1 for entry in entries if entry.kind is LedgerKind.RESERVE)
        request_id = attempt_id(idempotency_id, attempts + 1)

        def store_then_check(result: InferenceResult) -> None:
            # stored before the settle: a charged request always has its result to replay
            self.results.put_result(key.key_id, idempotency_id, result)
            if check_client_waiting is not None:
                check_client_waiting()

        loaded = audio() if callable(audio) else audio
        return self._transcribe(key, options, loaded, request_id=request_id, before_settle=store_then_check)

    def _transcribe(
        self,
        key: ApiKeyItem,
        options: TranscriptionOptions,
        audio: LoadedAudio,
        *,
        request_id: str,
        before_settle: Callable[[InferenceResult], object],
    ) -> TranscriptionOutcome:
        max_seconds = self.sync_ceiling(options)
        reservation = charging.reserve(
            self.credits,
            self.terms,
            key,
            options.model,
            audio,
            request_id=request_id,
            max_seconds=max_seconds,
            diarize=options.diarize,
        )
        try:
            request = charging.inference_request(options, audio, reservation, max_sync_audio_seconds=max_seconds)
            result = self.endpoint.infer(request)
        except BaseException as failure:
            charging.refund(self.credits, reservation, failure)
            raise
        return charging.settle(
            self.credits, self.terms.pricing, reservation, options, result, before_settle=before_settle
        )
