"""OpenAI's newer transcription fields through the local stack, with the official openai SDK unchanged:
stream=True (transcript.text.delta / transcript.text.done events), include=["logprobs"], chunking_strategy in both
forms, and a model alias; each charged once. Bad values are 400s that charge nothing."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests

from tests.support.speech import word_recall
from tests.support.stack import RunningStack

pytestmark = pytest.mark.e2e

CREDITS = 1_000
SECONDS_PER_CREDIT = 5  # template.yaml's SecondsPerCredit default
VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 250}


class Key:
    """A key of this module's own, its balance read back from the stack's key row and ledger."""

    def __init__(self, stack: RunningStack, name: str) -> None:
        self.stack = stack
        self.key_id, self.api_key = stack.create_key(name, CREDITS)
        self.client = stack.client(api_key=self.api_key)

    def balance(self) -> int:
        return int(self.stack.key_row(self.key_id)["credits"])

    def settles(self) -> list[dict]:
        return [entry for entry in self.stack.ledger(self.key_id) if entry["kind"] == "settle"]


@pytest.fixture(scope="module")
def key(stack: RunningStack) -> Key:
    return Key(stack, "newer-fields")


@pytest.fixture(scope="module")
def wav(speech_files: dict[str, Path]) -> bytes:
    return speech_files["wav"].read_bytes()


@pytest.fixture
def charged_once(key: Key) -> Iterator[list[int]]:
    """What the test charged: exactly one settle more, billed per started 5 s of the audio it says it heard."""
    before_balance, before_settles = key.balance(), len(key.settles())
    charged: list[int] = []
    yield charged
    settles = key.settles()[before_settles:]
    assert len(settles) == 1, settles
    billed = int(settles[0]["billed_credits"])
    assert billed == math.ceil(float(settles[0]["audio_seconds"]) / SECONDS_PER_CREDIT) >= 1
    assert key.balance() == before_balance - billed
    assert charged in ([], [billed])  # what the answer said it cost, when it says


def test_stream_true_yields_the_sdks_own_events_and_charges_once(key, wav, charged_once):
    with key.client.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("speech.wav", wav), stream=True
    ) as stream:
        events = list(stream)
    *deltas, done = events
    assert deltas and all(isinstance(event, openai.types.audio.TranscriptionTextDeltaEvent) for event in deltas)
    assert isinstance(done, openai.types.audio.TranscriptionTextDoneEvent)
    assert done.text == "".join(event.delta for event in deltas)
    assert word_recall(done.text) >= 0.7, done.text
    assert done.usage is not None and done.usage.type == "duration"
    charged_once.append(done.credits_used)  # our extra field, kept by the SDK's model


def test_include_logprobs_gives_openais_shape(key, wav, charged_once):
    transcript = key.client.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=("speech.wav", wav), include=["logprobs"], response_format="json"
    )
    assert transcript.logprobs and all(entry.logprob <= 0 for entry in transcript.logprobs)
    # each token's bytes, in order, spell the transcript (the SDK types a json answer's bytes as floats)
    spelled = b"".join(bytes(int(byte) for byte in entry.bytes) for entry in transcript.logprobs)
    assert spelled.decode().strip() == transcript.text
    charged_once.append(transcript.credits_used)


def test_stream_with_logprobs_gives_each_delta_its_tokens(key, wav, charged_once):
    stream = key.client.audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", wav), stream=True, include=["logprobs"], chunking_strategy=VAD
    )
    *deltas, done = list(stream)
    assert all(event.logprobs for event in deltas)
    assert [entry.token for event in deltas for entry in event.logprobs] == [entry.token for entry in done.logprobs]
    charged_once.append(done.credits_used)


@pytest.mark.parametrize("chunking_strategy", ["auto", VAD, {"type": "server_vad"}], ids=["auto", "vad", "defaults"])
def test_chunking_strategy_in_both_forms_transcribes(key, wav, charged_once, chunking_strategy):
    transcript = key.client.audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", wav), chunking_strategy=chunking_strategy
    )
    assert word_recall(transcript.text) >= 0.7, transcript.text
    charged_once.append(transcript.credits_used)


def test_chunking_strategy_in_a_json_body(key, stack, wav, charged_once):
    import base64

    response = requests.post(
        f"{stack.base_url}/audio/transcriptions",
        json={"model": "whisper-1", "audio": base64.b64encode(wav).decode(), "chunking_strategy": VAD},
        headers=stack.headers(key.api_key),
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert word_recall(response.json()["text"]) >= 0.7
    charged_once.append(response.json()["credits_used"])


def test_models_lists_the_aliases(key):
    names = [model.id for model in key.client.models.list()]
    assert {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"} <= set(names)
    assert key.client.models.retrieve("gpt-4o-transcribe").id == "gpt-4o-transcribe"


@pytest.mark.parametrize(
    ("arguments", "param", "code"),
    [
        ({"chunking_strategy": {"type": "server_vad", "threshold": 1.5}}, "chunking_strategy", "invalid_value"),
        (
            {"chunking_strategy": {"type": "server_vad", "silence_duration_ms": -1}},
            "chunking_strategy",
            "invalid_value",
        ),
        ({"chunking_strategy": {"type": "semantic_vad"}}, "chunking_strategy", "invalid_value"),
        ({"include": ["logprobs"], "response_format": "verbose_json"}, "include", "invalid_value"),
        ({"stream": True, "response_format": "srt"}, "stream", "invalid_value"),
        ({"model": "gpt-5-transcribe"}, "model", "model_not_found"),
    ],
    ids=["threshold", "negative-ms", "vad-type", "logprobs-verbose", "stream-srt", "unknown-model"],
)
def test_bad_values_are_400_and_charge_nothing(key, wav, arguments, param, code):
    before = key.balance(), len(key.stack.ledger(key.key_id))
    with pytest.raises(openai.BadRequestError) as raised:
        key.client.audio.transcriptions.create(**{"model": "whisper-1", "file": ("speech.wav", wav), **arguments})
    error = raised.value.body
    assert (raised.value.status_code, error["param"], error["code"]) == (400, param, code)
    assert (key.balance(), len(key.stack.ledger(key.key_id))) == before
