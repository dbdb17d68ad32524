"""The local stack driven as a user would: the official openai SDK (multipart) and raw HTTP (JSON base64)."""

from __future__ import annotations

import base64
import json
import re
import threading
from pathlib import Path

import openai
import pytest
import requests

from tests.support.builders import OPENAI_SEGMENT_FIELDS
from tests.support.speech import ENCODINGS, KEY_WORDS, word_recall
from tests.support.stack import RunningStack

pytestmark = pytest.mark.e2e

MIN_WORD_RECALL = 0.7
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
SRT_CUE = re.compile(r"^\d+\n\d{2}:\d{2}:\d{2},\d{3} --> \d{2}:\d{2}:\d{2},\d{3}\n.+\n$", re.MULTILINE)
VTT_CUE = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{3} --> \d{2}:\d{2}:\d{2}\.\d{3}\n.+$", re.MULTILINE)
# espeak-ng speaks the script in about 11.7 s: three started 5 s blocks
EXPECTED_CREDITS = 3


class BalanceTracker:
    """Follows the key's balance through the x-infery-credits-* headers, checking every step adds up."""

    def __init__(self, starting: int) -> None:
        self.expected = starting
        self.lock = threading.Lock()

    def check(self, headers) -> int:
        used = int(headers["x-infery-credits-used"])
        balance = int(headers["x-infery-credits-balance"])
        with self.lock:
            # concurrent tests are not run here, so each balance is the last one minus this charge
            assert balance == self.expected - used, f"balance {balance} after {self.expected} - {used}"
            self.expected = balance
        return used


@pytest.fixture(scope="module")
def balance(stack: RunningStack) -> BalanceTracker:
    return BalanceTracker(stack.starting_credits)


def _assert_transcript(text: str) -> None:
    assert word_recall(text) >= MIN_WORD_RECALL, f"transcript misses too many of {KEY_WORDS}: {text!r}"


def _check_rendered(response_format: str, payload, words_requested: bool = False) -> None:
    if response_format == "json":
        _assert_transcript(payload.text)
        assert payload.credits_used == EXPECTED_CREDITS  # our extra field, kept by the SDK's model
    elif response_format == "verbose_json":
        _assert_transcript(payload.text)
        assert payload.language == "en"
        assert 11 < payload.duration < 13
        assert payload.segments and all(segment.end > segment.start for segment in payload.segments)
        assert [segment.id for segment in payload.segments] == list(range(len(payload.segments)))
        if words_requested:
            assert payload.words and all(word.end >= word.start for word in payload.words)
            starts = [word.start for word in payload.words]
            assert starts == sorted(starts)
    elif response_format == "text":
        assert isinstance(payload, str) and payload.endswith("\n")
        _assert_transcript(payload)
    elif response_format == "srt":
        assert SRT_CUE.search(payload), payload
        assert payload.startswith("1\n00:00:0")
        _assert_transcript(payload)
    else:
        assert payload.startswith("WEBVTT\n\n"), payload
        assert VTT_CUE.search(payload), payload
        _assert_transcript(payload)


@pytest.mark.parametrize("response_format", RESPONSE_FORMATS)
def test_openai_sdk_transcribes_in_every_response_format(stack, balance, speech_files, response_format):
    client = stack.client()
    with speech_files["mp3"].open("rb") as audio:
        raw = client.audio.transcriptions.with_raw_response.create(
            model="whisper-1",
            file=audio,
            response_format=response_format,
            timestamp_granularities=["word", "segment"] if response_format == "verbose_json" else openai.omit,
        )
    assert raw.headers["x-request-id"]
    assert balance.check(raw.headers) == EXPECTED_CREDITS
    expected_type = "application/json" if response_format in ("json", "verbose_json") else "text/plain"
    assert raw.headers["content-type"].startswith(expected_type)
    _check_rendered(response_format, raw.parse(), words_requested=True)


@pytest.mark.parametrize("audio_format", sorted(ENCODINGS))
def test_openai_sdk_transcribes_every_audio_format(stack, balance, speech_files, audio_format):
    client = stack.client()
    path: Path = speech_files[audio_format]
    with path.open("rb") as audio:
        raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=audio)
    balance.check(raw.headers)
    _check_rendered("json", raw.parse())


def _post_json(stack: RunningStack, body: dict, api_key: str | None = None, path: str = "/audio/transcriptions"):
    return requests.post(
        f"{stack.base_url}{path}",
        json=body,
        timeout=60,
        headers={"Authorization": f"Bearer {api_key or stack.api_key}"},
    )


def _json_audio_body(spelling: str, path: Path, **fields) -> dict:
    encoded = base64.b64encode(path.read_bytes()).decode()
    audio = {"audio": encoded} if spelling == "audio" else {"file_base64": encoded, "filename": path.name}
    return {"model": "whisper-1", **audio, **fields}


@pytest.mark.parametrize("spelling", ["audio", "file_base64"])
@pytest.mark.parametrize("response_format", RESPONSE_FORMATS)
def test_json_base64_in_every_response_format(stack, balance, speech_files, spelling, response_format):
    extra = {"timestamp_granularities": ["word"]} if response_format == "verbose_json" else {}
    response = _post_json(
        stack, _json_audio_body(spelling, speech_files["wav"], response_format=response_format, **extra)
    )
    assert response.status_code == 200, response.text
    assert balance.check(response.headers) == EXPECTED_CREDITS
    if response_format in ("json", "verbose_json"):
        body = response.json()
        assert body["credits_used"] == EXPECTED_CREDITS
        _assert_transcript(body["text"])
        if response_format == "verbose_json":
            assert set(body["segments"][0]) >= OPENAI_SEGMENT_FIELDS
            assert body["words"] and {"word", "start", "end"} == set(body["words"][0])
    else:
        assert response.headers["content-type"].startswith("text/plain")
        _check_rendered(response_format, response.text)


@pytest.mark.parametrize("spelling", ["audio", "file_base64"])
@pytest.mark.parametrize("audio_format", sorted(ENCODINGS))
def test_json_base64_in_every_audio_format(stack, balance, speech_files, spelling, audio_format):
    response = _post_json(stack, _json_audio_body(spelling, speech_files[audio_format]))
    assert response.status_code == 200, response.text
    balance.check(response.headers)
    _assert_transcript(response.json()["text"])


def test_translation_and_models_through_the_sdk(stack, balance, speech_files):
    client = stack.client()
    with speech_files["flac"].open("rb") as audio:
        raw = client.audio.translations.with_raw_response.create(model="whisper-1", file=audio)
    balance.check(raw.headers)
    _assert_transcript(raw.parse().text)
    model_ids = [model.id for model in client.models.list()]
    assert "whisper-1" in model_ids and "whisper-tiny.en" in model_ids
    assert client.models.retrieve("whisper-1").id == "whisper-1"


def test_concurrent_requests_all_succeed_and_are_each_charged(stack, balance, speech_files):
    # not checked through the tracker's strict ordering: the final balance must add up instead
    results: list[requests.Response] = []

    def send() -> None:
        results.append(_post_json(stack, _json_audio_body("audio", speech_files["ogg"])))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [response.status_code for response in results] == [200] * 4
    used = sum(int(response.headers["x-infery-credits-used"]) for response in results)
    lowest_balance = min(int(response.headers["x-infery-credits-balance"]) for response in results)
    assert lowest_balance == balance.expected - used
    balance.expected = lowest_balance
    for response in results:
        _assert_transcript(response.json()["text"])


def test_credits_used_is_the_documented_price_of_the_duration(stack, balance, speech_files):
    response = _post_json(stack, _json_audio_body("audio", speech_files["wav"], response_format="verbose_json"))
    body = response.json()
    assert body["credits_used"] == -(-body["duration"] // 5)  # one credit per started 5 s
    balance.check(response.headers)


def test_responses_are_valid_json_with_request_ids(stack):
    response = requests.get(
        f"{stack.base_url}/models", headers={"Authorization": f"Bearer {stack.api_key}"}, timeout=10
    )
    assert response.status_code == 200
    assert json.loads(response.text)["object"] == "list"
    assert response.headers["x-request-id"]
