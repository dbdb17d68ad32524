"""The synchronous transcription use case (infery.usecases.transcribe.TranscriptionService) through in-memory fakes:
charged once for the real duration, refunded when the model fails, and, for a request sent with an Idempotency-Key,
answered again from its stored result without a second charge. No AWS, no model server."""

from __future__ import annotations

from typing import Any

import pytest
from infery.domain.errors import InsufficientCredits, InternalError, InvalidRequest, ModelFailed, ModelTimeout
from infery.domain.ids import idempotency_id
from infery.domain.inference import InferenceResult, Task
from infery.domain.transcription import LoadedAudio, TranscriptionOptions
from infery.usecases.charging import TranscriptionOutcome
from infery.usecases.transcribe import TranscriptionService

from tests.support.fakes import FakeAudio, FakeCredits, FakeRealtimeEndpoint
from tests.support.job_world import KEY, RESULT_12S, deployment_terms, wav

OPTIONS = TranscriptionOptions(task=Task.TRANSCRIBE, model="whisper-1")
ONCE = idempotency_id(KEY.key_id, "retry-me-7")


class Sync:
    """The use case over fakes: a key with 100 credits, a real-time endpoint that answers ``answer``."""

    def __init__(self, answer: InferenceResult | Exception = RESULT_12S, max_sync_audio_seconds: float = 300.0) -> None:
        self.credits = FakeCredits(balances={KEY.key_hash: 100})
        self.endpoint = FakeRealtimeEndpoint(answer)
        self.results = FakeAudio()
        self.service = TranscriptionService(
            deployment_terms(max_sync_audio_seconds=max_sync_audio_seconds), self.credits, self.endpoint, self.results
        )

    def kinds(self) -> list[tuple[str, str]]:
        return [(entry.request_id, entry.kind.value) for entry in self.credits.entries]

    def balance(self) -> int:
        return self.credits.balance(KEY.key_hash)

    def once(self, **options: Any) -> TranscriptionOutcome:
        return self.service.transcribe_once(KEY, OPTIONS, LoadedAudio.inline(wav(12.0)), idempotency_id=ONCE, **options)


def test_a_transcription_is_reserved_then_charged_once_for_its_real_duration():
    sync = Sync()
    outcome = sync.service.transcribe(KEY, OPTIONS, LoadedAudio.inline(wav(12.0)), request_id="req-1")
    # 12 s at 1 credit per started 5 s: 3 credits, the reservation (12.74 s, also 3) settled to them
    assert outcome.credits_used == 3 and outcome.balance_after == 97 and outcome.audio_seconds == 12.0
    assert outcome.rendered.body == {"text": "Hello there.", "credits_used": 3}
    assert sync.kinds() == [("req-1", "reserve"), ("req-1", "settle")] and sync.credits.charged(KEY.key_id) == 3
    [request] = sync.endpoint.requests
    assert request.audio is not None and request.audio_s3_uri is None  # sent inline
    assert request.max_sync_audio_seconds == 300.0  # the model stops where the synchronous call's ceiling is
    assert request.max_audio_seconds == pytest.approx(12.0 * 1.02 + 0.5)  # no more than the reservation pays for
    assert sync.results.results == {}  # a request without an Idempotency-Key keeps no result


def test_a_model_failure_is_refunded_and_raised():
    sync = Sync(answer=ModelFailed("The model failed; nothing was charged."))
    with pytest.raises(ModelFailed):
        sync.service.transcribe(KEY, OPTIONS, LoadedAudio.inline(wav(12.0)), request_id="req-1")
    assert sync.kinds() == [("req-1", "reserve"), ("req-1", "refund")]
    assert sync.balance() == 100 and not sync.credits.open


def test_a_client_that_stopped_waiting_is_refunded_after_the_model_answered():
    def gone() -> None:
        raise ModelTimeout("The request took longer than the API's time limit; nothing was charged.", code="timeout")

    sync = Sync()
    with pytest.raises(ModelTimeout):
        sync.service.transcribe(
            KEY, OPTIONS, LoadedAudio.inline(wav(12.0)), request_id="req-1", check_client_waiting=gone
        )
    assert len(sync.endpoint.requests) == 1 and sync.kinds() == [("req-1", "reserve"), ("req-1", "refund")]


def test_audio_over_the_sync_ceiling_is_refused_before_anything_is_reserved():
    sync = Sync(max_sync_audio_seconds=10.0)
    with pytest.raises(InvalidRequest) as refused:
        sync.service.transcribe(KEY, OPTIONS, LoadedAudio.inline(wav(12.0)), request_id="req-1")
    assert refused.value.code == "audio_too_long_for_sync" and "Nothing was charged" in refused.value.message
    assert sync.credits.entries == [] and sync.endpoint.requests == []


# --- with an Idempotency-Key (transcribe_once) -------------------------------------------------------------------


def test_the_result_is_stored_under_the_idempotency_id_before_the_charge():
    sync = Sync()
    outcome = sync.once()
    assert sync.kinds() == [(ONCE, "reserve"), (ONCE, "settle")]
    assert sync.results.results == {sync.results.result_key(KEY.key_id, ONCE): RESULT_12S}
    assert outcome.credits_used == 3 and outcome.balance_after == 97


def test_a_retry_after_a_settled_answer_replays_the_stored_result_and_charges_nothing():
    sync = Sync()
    first = sync.once()  # its answer was lost on the way back; the client retries with the same key
    sync.endpoint.answer = ModelFailed("the model is not asked again")
    replayed = sync.once()
    assert replayed == first  # the same transcript, the same credits, the balance as it is now
    assert len(sync.endpoint.requests) == 1 and sync.kinds() == [(ONCE, "reserve"), (ONCE, "settle")]
    assert sync.balance() == 97


def test_audio_given_as_a_loader_is_loaded_once_for_a_new_request_and_never_for_a_replay():
    """Audio sent by URL is fetched by its loader: a retry of a charged request fetches nothing again (the URL may
    have expired since)."""
    sync = Sync()
    loads: list[str] = []

    def fetch() -> LoadedAudio:
        loads.append("fetched")
        return LoadedAudio.inline(wav(12.0))

    first = sync.service.transcribe_once(KEY, OPTIONS, fetch, idempotency_id=ONCE)
    assert loads == ["fetched"]
    assert sync.service.transcribe_once(KEY, OPTIONS, fetch, idempotency_id=ONCE) == first
    assert loads == ["fetched"] and len(sync.endpoint.requests) == 1


def test_a_key_under_the_smallest_charge_is_402_before_its_audio_is_fetched():
    sync = Sync()
    sync.service.check_balance(KEY, OPTIONS)  # 100 credits: it may go on
    broke = KEY.model_copy(update={"credits": 0})
    with pytest.raises(InsufficientCredits) as refused:
        sync.service.check_balance(broke, OPTIONS)
    assert refused.value.headers == {"x-infery-credits-balance": "0"} and "at least 1" in refused.value.message
    with pytest.raises(InvalidRequest) as unknown:
        sync.service.check_balance(KEY, OPTIONS.model_copy(update={"model": "nope-1"}))
    assert unknown.value.code == "model_not_found"
    assert sync.kinds() == []


def test_a_sharded_key_whose_shard_read_is_short_is_judged_on_its_total():
    sync = Sync()
    sharded = KEY.model_copy(update={"credits": 0, "credit_shards": 3})  # the shard authentication read is empty
    sync.credits.balances[KEY.key_hash] = 0
    sync.credits.more_shards[KEY.key_hash] = [0, 2]
    sync.service.check_balance(sharded, OPTIONS)  # 2 credits in another shard: it may go on
    sync.credits.more_shards[KEY.key_hash] = [0, 0]
    with pytest.raises(InsufficientCredits) as refused:
        sync.service.check_balance(sharded, OPTIONS)
    assert refused.value.headers == {"x-infery-credits-balance": "0"}


def test_a_retry_after_a_refund_runs_again_under_a_new_attempt_id_and_is_charged_once():
    sync = Sync(answer=ModelFailed("The model failed; nothing was charged."))
    with pytest.raises(ModelFailed):
        sync.once()
    sync.endpoint.answer = RESULT_12S
    outcome = sync.once()
    second = f"{ONCE}.2"  # a request id is reserved once: the second attempt has its own
    assert sync.kinds() == [(ONCE, "reserve"), (ONCE, "refund"), (second, "reserve"), (second, "settle")]
    assert outcome.credits_used == 3 and sync.credits.charged(KEY.key_id) == 3 and len(sync.endpoint.requests) == 2


def test_a_result_that_cannot_be_stored_is_refunded_not_charged():
    sync = Sync()
    sync.results.fail_put_result = True
    with pytest.raises(OSError):
        sync.once()
    assert sync.kinds() == [(ONCE, "reserve"), (ONCE, "refund")] and sync.balance() == 100


def test_a_client_that_stopped_waiting_is_refunded_and_its_retry_runs_again_rather_than_replaying():
    def gone() -> None:
        raise ModelTimeout("The request took longer than the API's time limit; nothing was charged.", code="timeout")

    sync = Sync()
    with pytest.raises(ModelTimeout):
        sync.once(check_client_waiting=gone)
    assert sync.kinds() == [(ONCE, "reserve"), (ONCE, "refund")]
    # not settled, so the retry runs (and is charged) again rather than replaying what was stored
    sync.once()
    assert len(sync.endpoint.requests) == 2 and sync.credits.charged(KEY.key_id) == 3


def test_a_charged_request_whose_result_was_lost_is_a_500_that_says_so():
    sync = Sync()
    sync.once()
    sync.results.results.clear()  # the bucket lost it
    with pytest.raises(InternalError) as lost:
        sync.once()
    assert lost.value.status_code == 500
    assert lost.value.message == (
        "This request was charged, but its result was lost; contact the operator with its Idempotency-Key."
    )
    assert len(sync.endpoint.requests) == 1 and sync.kinds() == [(ONCE, "reserve"), (ONCE, "settle")]
