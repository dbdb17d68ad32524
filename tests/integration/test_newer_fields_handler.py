"""OpenAI's newer fields through the transcribe handler (moto and the real tiny.en model): a stream of events,
log probabilities, server_vad cuts and alias model names, each charged once; bad values refused before the model
and the books."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.api import MODEL_NAME, TRANSCRIPTIONS, assert_error, assert_ok, assert_refunded
from tests.support.model_replies import MODEL_ERROR_500, MODEL_ERROR_HEADERS
from tests.support.speech import word_recall

SEEDED = 100
VAD = {"type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 200, "silence_duration_ms": 300}
# what the openai SDK sends for chunking_strategy=VAD, include=["logprobs"], stream=True
SDK_FORM_FIELDS = {
    **{f"chunking_strategy[{name}]": str(value) for name, value in VAD.items()},
    "include[]": ["logprobs"],
    "stream": "true",
}


def _events(body: str) -> list[dict[str, Any]]:
    return [json.loads(block.removeprefix("data: ")) for block in body.split("\n\n") if block]


def _charged_once(accounts, item, reply) -> int:
    """One reserve and one settle under the request's id, the headers and the balance agreeing; the credits."""
    credits_used = int(reply.header("x-infery-credits-used"))
    entries = accounts.request_entries(item, reply.request_id)
    assert set(entries) == {"reserve", "settle"}, entries
    assert entries["settle"]["model"] == MODEL_NAME
    assert accounts.balance(item) == SEEDED - credits_used == int(reply.header("x-infery-credits-balance"))
    assert accounts.open_reservations(item) == []
    return credits_used


def test_the_sdks_form_with_every_newer_field_streams_events_and_is_charged_once(api, accounts, wav):
    api_key, item = accounts.new_key(SEEDED)
    reply = api.transcribe(api_key, wav, model="gpt-4o-transcribe", **SDK_FORM_FIELDS)
    assert_ok(reply)
    assert reply.header("content-type").startswith("text/event-stream")
    events = _events(reply.text)
    *deltas, done = events
    assert deltas and {event["type"] for event in deltas} == {"transcript.text.delta"}
    assert done["type"] == "transcript.text.done"
    assert done["text"] == "".join(event["delta"] for event in deltas)
    assert word_recall(done["text"]) >= 0.7, done["text"]
    assert done["logprobs"] == [item for event in deltas for item in event["logprobs"]]
    assert all(entry["logprob"] <= 0 for entry in done["logprobs"])
    credits_used = _charged_once(accounts, item, reply)
    assert done["credits_used"] == credits_used
    assert done["usage"]["type"] == "duration" and done["usage"]["seconds"] > 10


def test_json_with_logprobs_answers_openais_shape(api, accounts, wav):
    api_key, item = accounts.new_key(SEEDED)
    reply = api.transcribe_json(api_key, wav, include=["logprobs"], chunking_strategy="auto")
    assert_ok(reply)
    body = reply.json()
    assert set(body) == {"text", "logprobs", "credits_used"}
    assert all(set(entry) == {"token", "logprob", "bytes"} for entry in body["logprobs"])
    # the tokens, joined, are the text
    assert b"".join(bytes(entry["bytes"]) for entry in body["logprobs"]).decode().strip() == body["text"]
    _charged_once(accounts, item, reply)


def test_a_plain_request_has_no_logprobs(api, accounts, wav):
    api_key, _ = accounts.new_key(SEEDED)
    reply = api.transcribe(api_key, wav)
    assert_ok(reply)
    assert set(reply.json()) == {"text", "credits_used"}


def test_models_lists_the_aliases_and_each_is_accepted(api, accounts):
    api_key, _ = accounts.new_key(SEEDED)
    listed = [model["id"] for model in api.call("GET", "/v1/models", api_key=api_key).json()["data"]]
    assert listed == [
        MODEL_NAME,
        "whisper-1",
        "gpt-4o-transcribe",
        "gpt-4o-mini-transcribe",
        "gpt-4o-transcribe-diarize",
    ]
    for name in listed:
        assert api.call("GET", f"/v1/models/{name}", api_key=api_key).json()["id"] == name
    assert_error(api.call("GET", "/v1/models/gpt-5-transcribe", api_key=api_key), 404, "model_not_found")


@pytest.fixture
def refusing(fake_runtime, load_api, accounts):
    url, fake = fake_runtime(424, MODEL_ERROR_500, MODEL_ERROR_HEADERS)
    with accounts.new_key_refused_before_the_model(SEEDED, fake) as api_key:
        yield load_api(url), api_key


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"chunking_strategy": "manual"}, "chunking_strategy", "invalid_value"),
        (
            {"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "1.5"},
            "chunking_strategy",
            "invalid_value",
        ),
        (
            {"chunking_strategy[type]": "server_vad", "chunking_strategy[prefix_padding_ms]": "-5"},
            "chunking_strategy",
            "invalid_value",
        ),
        (
            {"chunking_strategy[type]": "server_vad", "chunking_strategy[window]": "3"},
            "chunking_strategy",
            "invalid_value",
        ),
        ({"include[]": ["logprobs"], "response_format": "verbose_json"}, "include", "invalid_value"),
        ({"include[]": ["everything"]}, "include", "invalid_value"),
        ({"stream": "true", "response_format": "srt"}, "stream", "invalid_value"),
        ({"stream": "perhaps"}, "stream", "invalid_value"),
        ({"model": "gpt-5-transcribe"}, "model", "model_not_found"),
    ],
    ids=repr,
)
def test_bad_values_are_400_and_reach_neither_the_model_nor_the_books(refusing, wav, fields, param, code):
    api, api_key = refusing
    assert_error(api.transcribe(api_key, wav, **fields), 400, code, param=param, error_type="invalid_request_error")


def test_a_stream_the_model_fails_is_an_error_answer_and_refunded(fake_runtime, load_api, accounts, wav):
    url, _ = fake_runtime(424, MODEL_ERROR_500, MODEL_ERROR_HEADERS)
    api = load_api(url)
    api_key, item = accounts.new_key(SEEDED)
    reply = api.transcribe(api_key, wav, stream="true", path=TRANSCRIPTIONS)
    assert_error(reply, 502, "model_error")  # JSON, not an event stream: nothing was streamed yet
    assert_refunded(accounts, item, reply)
    assert accounts.balance(item) == SEEDED
