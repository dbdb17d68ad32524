"""The transcribe handler with the real Whisper model: what a successful request returns and what it costs."""

from __future__ import annotations

import io
import json
import math

import av
import pytest

from tests.support.api import MODEL_NAME, ROOT, TRANSLATIONS, LambdaContext, Reply, assert_error, assert_ok
from tests.support.speech import word_recall

SEEDED = 100


@pytest.fixture(scope="module")
def wav_seconds(wav: bytes) -> float:
    """Counted from the decoded samples: espeak-ng streams its WAV with placeholder header sizes."""
    with av.open(io.BytesIO(wav)) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


@pytest.fixture
def seconds_per_credit(function_environment) -> float:
    return float(function_environment["SECONDS_PER_CREDIT"])


def assert_charged_once(accounts, item, reply, seconds_per_credit: float, seeded: int = SEEDED) -> dict:
    """Billed once, ceil(audio seconds / seconds per credit): a reserve and a settle in the ledger, the headers,
    the balance, and no reservation left open. Returns the settle entry."""
    credits_used = int(reply.header("x-infery-credits-used"))
    entries = accounts.request_entries(item, reply.request_id)  # the API Gateway request id names the entries
    assert set(entries) == {"reserve", "settle"}, entries
    reserve, settle = entries["reserve"], entries["settle"]
    assert [entry["request_id"] for entry in accounts.ledger(item) if entry["kind"] != "topup"] == [
        reply.request_id
    ] * 2  # nothing else was reserved or settled for this key
    audio_seconds = float(settle["audio_seconds"])
    assert credits_used == math.ceil(audio_seconds / seconds_per_credit) >= 1
    assert int(settle["billed_credits"]) == credits_used and "unpaid_credits" not in settle
    # the reservation was an upper bound; the settle gives back what it held beyond the real cost
    reserved = -int(reserve["credits"])
    assert reserved >= credits_used
    assert int(settle["credits"]) == reserved - credits_used
    balance = accounts.balance(item)
    assert balance == seeded - credits_used == int(reply.header("x-infery-credits-balance"))
    assert int(reserve["balance_after"]) == seeded - reserved and int(settle["balance_after"]) == balance
    assert reserve["model"] == settle["model"] == MODEL_NAME
    assert accounts.ledger_sum(item) == balance
    assert accounts.open_reservations(item) == []
    return settle


def test_multipart_wav_is_transcribed_and_charged_once(api, accounts, wav, wav_seconds, seconds_per_credit):
    api_key, item = accounts.new_key(SEEDED)
    reply = api.transcribe(api_key, wav)
    assert_ok(reply)
    assert reply.header("content-type").startswith("application/json")
    result = reply.json()
    assert set(result) == {"text", "credits_used"}
    assert word_recall(result["text"]) >= 0.7, result["text"]
    assert str(result["credits_used"]) == reply.header("x-infery-credits-used")
    charge = assert_charged_once(accounts, item, reply, seconds_per_credit)
    assert float(charge["audio_seconds"]) == pytest.approx(wav_seconds, abs=0.1)
    assert result["credits_used"] == 3  # the 11.7 s script: three started 5 s blocks


def test_json_base64_mp3_is_transcribed_and_charged_once(api, accounts, speech_files, wav_seconds, seconds_per_credit):
    api_key, item = accounts.new_key(SEEDED)
    reply = api.transcribe_json(api_key, speech_files["mp3"].read_bytes(), response_format="json")
    assert_ok(reply)
    result = reply.json()
    assert word_recall(result["text"]) >= 0.7, result["text"]
    assert str(result["credits_used"]) == reply.header("x-infery-credits-used")
    charge = assert_charged_once(accounts, item, reply, seconds_per_credit)
    assert float(charge["audio_seconds"]) == pytest.approx(wav_seconds, abs=0.2)  # the encoder pads a little


def test_verbose_json_with_word_timestamps(api, accounts, wav, seconds_per_credit):
    api_key, item = accounts.new_key(SEEDED)
    reply = api.transcribe(api_key, wav, response_format="verbose_json", **{"timestamp_granularities[]": ["word"]})
    assert_ok(reply)
    result = reply.json()
    assert result["task"] == "transcribe" and result["language"] == "en"
    assert word_recall(result["text"]) >= 0.7, result["text"]
    assert result["credits_used"] == math.ceil(result["duration"] / seconds_per_credit)
    charge = assert_charged_once(accounts, item, reply, seconds_per_credit)
    assert float(charge["audio_seconds"]) == pytest.approx(result["duration"])

    segments = result["segments"]
    assert segments and [segment["id"] for segment in segments] == list(range(len(segments)))
    assert all(segment["start"] <= segment["end"] <= result["duration"] + 0.5 for segment in segments)
    assert [segment["start"] for segment in segments] == sorted(segment["start"] for segment in segments)

    words = result["words"]
    assert len(words) >= 15 and all(set(word) == {"word", "start", "end"} for word in words)
    assert all(word["start"] <= word["end"] <= result["duration"] + 0.5 for word in words)
    starts = [word["start"] for word in words]
    assert starts == sorted(starts) and starts[-1] > starts[0]
    assert word_recall(" ".join(word["word"] for word in words)) >= 0.7


@pytest.mark.parametrize("response_format", ["text", "srt", "vtt"])
def test_text_formats_are_plain_text_and_still_report_credits(api, accounts, wav, seconds_per_credit, response_format):
    api_key, item = accounts.new_key(SEEDED)
    reply = api.transcribe(api_key, wav, response_format=response_format)
    assert_ok(reply)
    assert reply.header("content-type").startswith("text/plain")
    assert reply.header("x-infery-credits-used") == "3"
    assert word_recall(reply.text) >= 0.7, reply.text
    if response_format == "srt":
        assert reply.text.startswith("1\n00:00:0") and " --> " in reply.text
    if response_format == "vtt":
        assert reply.text.startswith("WEBVTT\n\n00:00:0") and " --> " in reply.text
    assert_charged_once(accounts, item, reply, seconds_per_credit)


def test_translation_route_runs_the_translate_task(api, accounts, wav, seconds_per_credit):
    api_key, item = accounts.new_key(SEEDED)
    reply = api.transcribe(api_key, wav, path=TRANSLATIONS, response_format="verbose_json")
    assert_ok(reply)
    result = reply.json()
    assert result["task"] == "translate"
    assert word_recall(result["text"]) >= 0.7, result["text"]  # English in, English out
    assert_charged_once(accounts, item, reply, seconds_per_credit)


def test_models_are_listed_and_retrieved_free_of_charge(api, accounts):
    api_key, item = accounts.new_key(SEEDED)
    listing = api.call("GET", "/v1/models", api_key=api_key)
    assert_ok(listing)
    body = listing.json()
    assert body["object"] == "list"
    # the deployed model, OpenAI's whisper-1, and template.yaml's default ModelAliases
    assert [model["id"] for model in body["data"]] == [
        MODEL_NAME,
        "whisper-1",
        "gpt-4o-transcribe",
        "gpt-4o-mini-transcribe",
        "gpt-4o-transcribe-diarize",
    ]
    assert all(model["object"] == "model" and model["owned_by"] for model in body["data"])
    for model_id in ("whisper-1", MODEL_NAME):
        retrieved = api.call("GET", f"/v1/models/{model_id}", api_key=api_key)
        assert_ok(retrieved)
        assert retrieved.json()["id"] == model_id
    assert_error(api.call("GET", "/v1/models/whisper-9", api_key=api_key), 404, "model_not_found", param="model")
    accounts.assert_untouched(item, SEEDED)


@pytest.mark.parametrize("audio_format", ["mp4", "m4a", "webm", "ogg", "flac"])
def test_every_other_container_is_transcribed(api, accounts, speech_files, seconds_per_credit, audio_format):
    api_key, item = accounts.new_key(SEEDED)
    path = speech_files[audio_format]
    reply = api.transcribe(api_key, path.read_bytes(), filename=path.name)
    assert_ok(reply)
    assert word_recall(reply.json()["text"]) >= 0.7, reply.json()["text"]
    assert_charged_once(accounts, item, reply, seconds_per_credit)


@pytest.mark.parametrize(("event_file", "charged"), [("list_models.json", 0), ("transcribe_json_base64.json", 1)])
def test_the_sample_events_run_against_the_handler(api, accounts, event_file, charged):
    """events/*.json are what README tells people to feed `sam local invoke`; they must keep working."""
    api_key, item = accounts.new_key(SEEDED)
    text = (ROOT / "events" / event_file).read_text().replace("inf_replace_with_a_key_from_make_serve", api_key)
    event = json.loads(text)
    reply = Reply(api.handler(event, LambdaContext()), event["requestContext"]["requestId"], event)
    assert_ok(reply)
    assert accounts.balance(item) == SEEDED - charged
    assert len(accounts.ledger(item, "settle")) == len(accounts.ledger(item, "reserve")) == (1 if charged else 0)
    if charged:
        assert reply.header("x-infery-credits-used") == str(charged)
        assert_charged_once(accounts, item, reply, 5.0)
