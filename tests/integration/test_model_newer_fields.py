"""The real model server (tiny.en) with OpenAI's newer fields as the API hands them over: token log probabilities
when asked (and only then), and the cuts a request's chunking_strategy places."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from infery.domain.inference import InferenceRequest, InferenceResult, VadCuts
from whisper_server import WhisperTranscriber

from tests.support.model_server import running_model_server
from tests.support.speech import distinct_sentences, sentences_missing, synthesize_wav, timed_speech


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, WhisperTranscriber]]:
    with running_model_server() as server:
        yield server


@pytest.fixture(scope="module")
def speech() -> bytes:
    return synthesize_wav("The quick brown fox jumps over the lazy dog. Résumé and café were on the menu.")


def _invoke(url: str, audio: bytes, **fields: Any) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"audio": base64.b64encode(audio).decode(), **fields}).encode()
    request = urllib.request.Request(
        f"{url}/invocations", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310 - loopback
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_logprobs_score_every_text_token_of_the_transcript_and_change_nothing_else(served, speech):
    url, _ = served
    status, plain = _invoke(url, speech)
    assert status == 200 and plain["logprobs"] is None  # not computed unless asked
    status, scored = _invoke(url, speech, logprobs=True)
    assert status == 200
    result = InferenceResult.model_validate(scored)
    # the same decode: scoring reads the answer again, it does not write another one
    assert {**scored, "logprobs": None} == plain
    assert result.logprobs
    for segment in result.segments:
        items = [item for item in result.logprobs if item.segment == segment.id]
        # the tokens' bytes, joined, are the segment's text exactly (a token may hold part of a character)
        assert b"".join(bytes(item.bytes) for item in items).decode() == segment.text
        assert all(item.logprob <= 0 for item in items)
    assert {item.segment for item in result.logprobs} == {segment.id for segment in result.segments}
    # a clearly spoken pangram: most tokens are likely ones
    assert sum(item.logprob > -1 for item in result.logprobs) > len(result.logprobs) / 2


def test_server_vad_cuts_still_transcribe_every_sentence(served):
    url, transcriber = served
    audio, timeline = timed_speech(distinct_sentences(20))  # about 70 s: three windows
    assert timeline[-1].end > 60
    for cuts in (None, VadCuts(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=200).model_dump()):
        status, result = _invoke(url, audio, cuts=cuts)
        assert status == 200
        assert sentences_missing(timeline, result["segments"]) == []


def test_prefix_padding_moves_the_cut_towards_the_pause_before_the_speech(served):
    """The defaults cut in the middle of a pause; a padding longer than the pause cuts at its start, so the next
    window (its segments' seek) begins earlier."""
    url, _ = served
    audio, _ = timed_speech(distinct_sentences(12))  # about 40 s: two windows, 0.6 s pauses
    seeks = {}
    for name, padding in (("middle", 0), ("padded", 5_000)):
        cuts = VadCuts(threshold=0.5, prefix_padding_ms=padding, silence_duration_ms=200).model_dump()
        status, result = _invoke(url, audio, cuts=cuts)
        assert status == 200
        seeks[name] = sorted({segment["seek"] for segment in result["segments"]})
    assert len(seeks["middle"]) == len(seeks["padded"]) == 2
    # seek counts 10 ms frames: about half of the 0.6 s pause earlier
    assert 15 <= seeks["middle"][1] - seeks["padded"][1] <= 45


@pytest.mark.parametrize(
    "cuts",
    [{"threshold": 2}, {"prefix_padding_ms": -1}, {"silence_duration_ms": "long"}, {"eagerness": "high"}],
)
def test_the_model_server_refuses_cuts_out_of_range(served, speech, cuts):
    url, _ = served
    status, error = _invoke(url, speech, cuts=cuts)
    assert status == 400 and error["code"] == "invalid_request"


def test_the_contract_carries_the_fields_both_ways():
    request = InferenceRequest(audio="UklGRg==", cuts=VadCuts(threshold=0.6), logprobs=True)
    again = InferenceRequest.model_validate_json(request.model_dump_json())
    assert again.cuts == VadCuts(threshold=0.6) and again.logprobs is True
