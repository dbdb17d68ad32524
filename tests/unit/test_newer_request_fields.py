"""OpenAI's newer transcription fields: chunking_strategy, include[]=logprobs and stream, as its SDK sends them, the
model names an operator aliases, and the event stream the SDK reads back."""

from __future__ import annotations

import json

import httpx2
import openai
import pytest
from infery.domain.errors import InferyError, InvalidRequest
from infery.domain.formats import EVENT_STREAM_CONTENT_TYPE, render_for
from infery.domain.inference import Task, TokenLogprob, VadCuts
from infery.domain.ledger import Reservation
from infery.domain.transcription import LoadedAudio, ServerVadChunking, TranscriptionOptions, TranscriptionRequest
from infery.http.idempotency import request_fingerprint
from infery.http.request_parsing import parse_transcription_request
from infery.usecases.charging import ModelCatalog, inference_request

from tests.support.builders import inference_result, json_body, multipart_body, segment

MAX_AUDIO_BYTES = 4 * 1024 * 1024
VAD = {"type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 250, "silence_duration_ms": 400}


@pytest.fixture(scope="module")
def wav(encoded_audio) -> bytes:
    return encoded_audio["wav"].read_bytes()


def parse(content_type: str, body: bytes, task: Task = Task.TRANSCRIBE, for_job: bool = False) -> TranscriptionRequest:
    return parse_transcription_request(
        task, content_type, body, max_audio_bytes=MAX_AUDIO_BYTES, max_upload_bytes=25_000_000, for_job=for_job
    )


def refused(content_type: str, body: bytes, task: Task = Task.TRANSCRIBE, for_job: bool = False) -> InferyError:
    with pytest.raises(InferyError) as raised:
        parse(content_type, body, task, for_job)
    return raised.value


def sdk_form(wav: bytes, **fields) -> tuple[str, bytes]:
    """The form the openai SDK sends: an object as one part per key (chunking_strategy[threshold]), a list as
    repeated name[] parts, booleans as "true"/"false"."""
    parts = {}
    for name, value in fields.items():
        if isinstance(value, dict):
            parts |= {f"{name}[{key}]": str(item) for key, item in value.items()}
        elif isinstance(value, list):
            parts[f"{name}[]"] = value
        elif isinstance(value, bool):
            parts[name] = "true" if value else "false"
        else:
            parts[name] = value
    return multipart_body(wav, model="whisper-1", **parts)


# --- parsing -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "cuts"),
    [
        ({"chunking_strategy": "auto"}, None),
        ({"chunking_strategy": VAD}, VadCuts(threshold=0.6, prefix_padding_ms=250, silence_duration_ms=400)),
        # OpenAI's defaults for what a server_vad object leaves out
        (
            {"chunking_strategy": {"type": "server_vad"}},
            VadCuts(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=200),
        ),
        ({}, None),
    ],
)
def test_chunking_strategy_as_the_sdk_sends_it_in_a_form_and_in_json(wav, fields, cuts):
    for content_type, body in (sdk_form(wav, **fields), json_body(wav, model="whisper-1", **fields)):
        request = parse(content_type, body)
        assert request.cuts == cuts


def test_a_form_may_carry_chunking_strategy_as_json_text(wav):
    # what curl -F 'chunking_strategy={"type": "server_vad", ...}' sends
    request = parse(*multipart_body(wav, model="whisper-1", chunking_strategy=json.dumps(VAD)))
    assert request.cuts == VadCuts(threshold=0.6, prefix_padding_ms=250, silence_duration_ms=400)


def test_include_and_stream_as_the_sdk_sends_them(wav):
    request = parse(*sdk_form(wav, include=["logprobs"], stream=True))
    assert (request.include, request.logprobs, request.stream) == (["logprobs"], True, True)
    request = parse(*json_body(wav, model="whisper-1", include=["logprobs"], stream=False))
    assert (request.logprobs, request.stream) == (True, False)


def test_the_newer_fields_reach_the_model_request_and_nothing_else(wav):
    request = parse(*sdk_form(wav, chunking_strategy=VAD, include=["logprobs"], stream=True))
    reservation = Reservation(
        key_id="key_1",
        key_hash="h",
        request_id="r",
        credits=3,
        model="whisper-large-v3",
        covered_seconds=12.0,
        created_at="2026-01-01T00:00:00Z",
        created_epoch=0,
    )
    model_request = inference_request(request, LoadedAudio.inline(wav), reservation)
    assert model_request.cuts == VadCuts(threshold=0.6, prefix_padding_ms=250, silence_duration_ms=400)
    assert model_request.logprobs is True
    # a job's options never hold them: they are a synchronous call's
    assert not {"chunking_strategy", "include", "stream"} & set(request.options().model_dump())
    plain = inference_request(parse(*sdk_form(wav)), LoadedAudio.inline(wav), reservation)
    assert (plain.cuts, plain.logprobs) == (None, False)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"chunking_strategy": "manual"}, "chunking_strategy"),
        ({"chunking_strategy": {"type": "client_vad"}}, "chunking_strategy"),
        ({"chunking_strategy": {"threshold": 0.5}}, "chunking_strategy"),  # no type
        ({"chunking_strategy": {**VAD, "threshold": 1.5}}, "chunking_strategy"),
        ({"chunking_strategy": {**VAD, "threshold": -0.1}}, "chunking_strategy"),
        ({"chunking_strategy": {**VAD, "threshold": "loud"}}, "chunking_strategy"),
        ({"chunking_strategy": {**VAD, "prefix_padding_ms": -1}}, "chunking_strategy"),
        ({"chunking_strategy": {**VAD, "silence_duration_ms": -200}}, "chunking_strategy"),
        ({"chunking_strategy": {**VAD, "silence_duration_ms": 2.5}}, "chunking_strategy"),
        ({"chunking_strategy": {**VAD, "silence_duration_ms": 60_000}}, "chunking_strategy"),
        ({"chunking_strategy": {**VAD, "eagerness": "high"}}, "chunking_strategy"),  # an unknown key
        ({"include": ["logprobs", "tokens"]}, "include"),
        ({"include": ["logprobs"], "response_format": "text"}, "include"),
        ({"include": ["logprobs"], "response_format": "verbose_json"}, "include"),
        ({"stream": "sometimes"}, "stream"),
        ({"stream": True, "response_format": "verbose_json"}, "stream"),
        ({"stream": True, "response_format": "srt"}, "stream"),
        ({"stream": True, "response_format": "vtt"}, "stream"),
    ],
    ids=repr,
)
def test_bad_values_are_400_naming_the_field_in_a_form_and_in_json(wav, fields, param):
    for content_type, body in (sdk_form(wav, **fields), json_body(wav, model="whisper-1", **fields)):
        error = refused(content_type, body)
        assert (type(error), error.status_code, error.param, error.code) == (
            InvalidRequest,
            400,
            param,
            "invalid_value",
        )
        assert param in error.message


@pytest.mark.parametrize(
    "payload",
    [
        {"chunking_strategy": 0.5},
        {"chunking_strategy": ["auto"]},
        {"chunking_strategy": {**VAD, "threshold": True}},  # JSON's true is no number
        {"chunking_strategy": {**VAD, "threshold": None}},
        {"include": "logprobs"},  # a list, not a string
        {"stream": [True]},
    ],
    ids=repr,
)
def test_bad_json_types_are_400(wav, payload):
    error = refused(*json_body(wav, model="whisper-1", **payload))
    assert (error.status_code, error.param, error.code) == (400, next(iter(payload)), "invalid_value")


def test_a_threshold_that_is_not_a_number_is_refused(wav):
    error = refused(*json_body(wav, model="whisper-1", chunking_strategy={**VAD, "threshold": float("nan")}))
    assert (error.param, error.code) == ("chunking_strategy", "invalid_value")


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        # the plain field and the SDK's parts of it: which one was meant is unknown
        ({"chunking_strategy": "auto", "chunking_strategy[type]": "server_vad"}, "duplicate_parameter"),
        ({"chunking_strategy": "{not json"}, "invalid_value"),
    ],
)
def test_a_form_with_two_chunking_strategies_or_broken_json_is_400(wav, parts, code):
    error = refused(*multipart_body(wav, model="whisper-1", **parts))
    assert (error.status_code, error.param, error.code) == (400, "chunking_strategy", code)


def test_a_repeated_member_of_the_chunking_object_is_400(wav):
    content_type, body = multipart_body(
        wav, model="whisper-1", **{"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": ["1", "0"]}
    )
    error = refused(content_type, body)
    assert (error.status_code, error.code) == (400, "duplicate_parameter")
    assert error.param == "chunking_strategy[threshold]"


@pytest.mark.parametrize("name", ["chunking_strategy", "include", "stream"])
def test_translations_and_jobs_refuse_them_as_unknown(wav, name):
    # the SDK sends none of them to translations; a job neither streams nor keeps them
    value = {"chunking_strategy": "auto", "include": ["logprobs"], "stream": True}[name]
    body = json_body(wav, model="whisper-1", **{name: value})
    for error in (refused(*body, task=Task.TRANSLATE), refused(*body, for_job=True)):
        assert (error.status_code, error.param, error.code) == (400, name, "unknown_parameter")


def test_the_newer_fields_change_the_idempotency_fingerprint_and_their_absence_does_not(wav):
    plain = request_fingerprint(parse(*json_body(wav, model="whisper-1")))
    assert plain == request_fingerprint(parse(*json_body(wav, model="whisper-1", stream=False, include=[])))
    others = {
        request_fingerprint(parse(*json_body(wav, model="whisper-1", **fields)))
        for fields in ({"stream": True}, {"include": ["logprobs"]}, {"chunking_strategy": VAD})
    }
    assert len(others) == 3 and plain not in others


# --- the stream and the log probabilities --------------------------------------------------------------------------


def _result_with_logprobs():
    segments = [segment(0, 0.0, 2.0, " Hello there."), segment(1, 2.0, 4.5, " Second line,\nwith a break.")]
    result = inference_result(" Hello there. Second line,\nwith a break.", segments, duration=4.5)
    tokens = [(" Hello", 0), (" there", 0), (".", 0), (" Second", 1), (" é", 1)]
    result.logprobs = [
        TokenLogprob(token=token, logprob=-0.1 * (index + 1), bytes=list(token.encode()), segment=seg)
        for index, (token, seg) in enumerate(tokens)
    ]
    return result


def _events(body: str) -> list[dict]:
    assert body.endswith("\n\n")
    blocks = body.split("\n\n")[:-1]
    assert all(block.startswith("data: ") and "\n" not in block for block in blocks)  # one line per event
    return [json.loads(block.removeprefix("data: ")) for block in blocks]


def _options(**fields) -> TranscriptionOptions:
    return TranscriptionOptions(task=Task.TRANSCRIBE, model="whisper-1", **fields)


def test_a_stream_is_a_delta_per_segment_then_done_with_the_text_and_usage():
    rendered = render_for(_result_with_logprobs(), _options(stream=True), credits_used=1)
    assert rendered.content_type == EVENT_STREAM_CONTENT_TYPE
    events = _events(str(rendered.body))
    assert [event["type"] for event in events] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    assert [event["delta"] for event in events[:2]] == ["Hello there.", " Second line,\nwith a break."]
    done = events[-1]
    assert done["text"] == "".join(event["delta"] for event in events[:2]) == "Hello there. Second line,\nwith a break."
    assert done["usage"] == {"type": "duration", "seconds": 4.5}
    assert done["credits_used"] == 1
    assert all("logprobs" not in event for event in events)


def test_a_stream_with_logprobs_gives_each_delta_its_own_tokens_and_done_all_of_them():
    rendered = render_for(_result_with_logprobs(), _options(stream=True, include=["logprobs"]), credits_used=1)
    first, second, done = _events(str(rendered.body))
    assert [item["token"] for item in first["logprobs"]] == [" Hello", " there", "."]
    assert [item["token"] for item in second["logprobs"]] == [" Second", " é"]
    assert done["logprobs"] == first["logprobs"] + second["logprobs"]
    assert done["logprobs"][-1] == {"token": " é", "logprob": pytest.approx(-0.5), "bytes": [32, 195, 169]}


def test_a_stream_asked_as_text_is_the_same_events():
    as_json = render_for(_result_with_logprobs(), _options(stream=True), credits_used=2)
    as_text = render_for(_result_with_logprobs(), _options(stream=True, response_format="text"), credits_used=2)
    assert as_json == as_text


def test_a_silent_file_streams_only_done():
    rendered = render_for(inference_result("", [], duration=3.0), _options(stream=True), credits_used=1)
    assert _events(str(rendered.body)) == [
        {"type": "transcript.text.done", "text": "", "usage": {"type": "duration", "seconds": 3.0}, "credits_used": 1}
    ]


def test_json_with_logprobs_has_them_in_openais_shape_and_without_them_has_none():
    body = render_for(_result_with_logprobs(), _options(include=["logprobs"]), credits_used=1).body
    assert isinstance(body, dict) and set(body) == {"text", "logprobs", "credits_used"}
    assert body["logprobs"][0] == {"token": " Hello", "logprob": pytest.approx(-0.1), "bytes": list(b" Hello")}
    assert render_for(_result_with_logprobs(), _options(), credits_used=1).body == {
        "text": "Hello there. Second line,\nwith a break.",
        "credits_used": 1,
    }


def test_the_openai_sdk_reads_the_stream_unchanged():
    # Given our event stream as the body of the SDK's streaming call
    rendered = render_for(_result_with_logprobs(), _options(stream=True, include=["logprobs"]), credits_used=1)

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": rendered.content_type}, content=str(rendered.body))

    client = openai.OpenAI(
        api_key="inf_test",
        base_url="http://infery.test/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )
    # When the SDK streams it
    events = list(
        client.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=("a.wav", b"RIFF"), stream=True, include=["logprobs"]
        )
    )
    # Then it yields its own event types, whole
    assert [type(event).__name__ for event in events] == [
        "TranscriptionTextDeltaEvent",
        "TranscriptionTextDeltaEvent",
        "TranscriptionTextDoneEvent",
    ]
    assert "".join(event.delta for event in events[:2]) == events[-1].text
    assert events[0].logprobs[0].token == " Hello" and events[-1].logprobs[-1].bytes == [32, 195, 169]


# --- model names -----------------------------------------------------------------------------------------------------


def test_aliases_stand_for_the_deployed_model_directly_or_through_another_alias():
    catalog = ModelCatalog("whisper-large-v3", {"gpt-4o-transcribe": "whisper-1", "gpt-4o": "gpt-4o-transcribe"})
    assert catalog.names() == ["whisper-large-v3", "whisper-1", "gpt-4o-transcribe", "gpt-4o"]
    assert {catalog.resolve(name) for name in catalog.names()} == {"whisper-large-v3"}
    assert catalog.canonical("gpt-4o") == "whisper-large-v3" and catalog.canonical("other") == "other"
    assert catalog.describe("gpt-4o") == {"id": "gpt-4o", "object": "model", "created": 0, "owned_by": "infery"}


def test_an_unknown_model_is_still_model_not_found():
    catalog = ModelCatalog("whisper-large-v3", {"gpt-4o-transcribe": "whisper-1"})
    with pytest.raises(InvalidRequest) as raised:
        catalog.resolve("gpt-4o-mini-transcribe")
    assert (raised.value.param, raised.value.code) == ("model", "model_not_found")
    assert "gpt-4o-transcribe" in raised.value.message  # the names it may use instead


@pytest.mark.parametrize(
    ("aliases", "problem"),
    [
        ({"gpt-4o": "whisper-9"}, "no model of this deployment"),
        ({"a": "b", "b": "a"}, "circle"),
        ({"a": "a"}, "circle"),
    ],
)
def test_aliases_that_lead_nowhere_fail_when_the_catalog_is_built(aliases, problem):
    with pytest.raises(ValueError, match=problem):
        ModelCatalog("whisper-large-v3", aliases)


def test_server_vad_maps_onto_the_models_cuts_one_to_one():
    chunking = ServerVadChunking(type="server_vad", threshold=0.7, prefix_padding_ms=100, silence_duration_ms=900)
    assert chunking.cuts() == VadCuts(threshold=0.7, prefix_padding_ms=100, silence_duration_ms=900)
