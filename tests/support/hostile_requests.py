"""Generated hostile requests (hypothesis strategies) and what every refusal of one must look like.

Each strategy draws a ``HostileRequest`` that the API must refuse with a 4xx: random bytes, cut-off and lying
multipart bodies, wrong boundaries, huge and repeated headers, base64 of things that are not audio, audio whose
header lies, and unicode and NUL in every field. The requests that carry a field the API must refuse carry real
audio (a short WAV) beside it, so a refusal that did not happen shows up as a call to the model. The integration
suite sends them to the handler; the end-to-end suite sends some of them over HTTP to the local stack.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from infery.domain.audio import sniff_audio_format
from infery.domain.errors import InferyError
from infery.domain.ids import UPLOAD_ID_PATTERN
from infery.domain.languages import WHISPER_LANGUAGE_CODES
from infery.http.request_parsing import check_webhook_url

TRANSCRIPTIONS = "/v1/audio/transcriptions"
TRANSLATIONS = "/v1/audio/translations"
UPLOADS = "/v1/uploads"
TRANSCRIPTION_JOBS = "/v1/audio/transcriptions/jobs"
TRANSLATION_JOBS = "/v1/audio/translations/jobs"
AUDIO_POSTS = (TRANSCRIPTIONS, TRANSLATIONS, TRANSCRIPTION_JOBS, TRANSLATION_JOBS)
SYNC_POSTS = (TRANSCRIPTIONS, TRANSLATIONS)
ALL_POSTS = (*AUDIO_POSTS, UPLOADS)
# the names a deployment's model answers to (tests/integration's and the local stack's model, OpenAI's alias, and
# the aliases of template.yaml's default ModelAliases)
MODEL_NAMES = frozenset({"whisper-1", "whisper-tiny.en", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"})
RESPONSE_FORMATS = frozenset({"json", "text", "srt", "verbose_json", "vtt"})
ERROR_FIELDS = {"message", "type", "param", "code"}
ERROR_TYPES = {"invalid_request_error", "insufficient_quota", "rate_limit_error"}
# What a message for a person never holds: Python's names for its errors, tracebacks, errno text, our storage's
# URIs and ARNs, a repr of bytes, parser internals, pydantic's own markers.
INTERNAL_DETAIL = re.compile(
    r"Traceback|File \"|\bErrno\b|s3://|arn:aws|\b[A-Z][A-Za-z]*(?:Error|Exception)\b|(?:^|(?<=[\s(\[=:,]))b'[^']*'|"
    r"object has no attribute|object at 0x|NoneType|botocore|boto3|toolbelt|MultipartDecoder|json\.decoder|"
    r"errors\.pydantic\.dev|input_value=|input_type=|\[type=|codec can't|surrogates not allowed")
MESSAGE_MAX_CHARACTERS = 600


@dataclass
class HostileRequest:
    """One request as it reaches the API: method, path, headers in order (repeats kept), the raw body."""

    category: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    method: str = "POST"
    # the statuses this request may get (any 4xx when empty) and, when one is certain, the error code
    statuses: frozenset[int] = field(default_factory=frozenset)
    code: str | None = None

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis prints a falsifying example
        printer.text(repr(self))

    def __repr__(self) -> str:  # keep it readable: the first 300 bytes of the body, each header cut at 120
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"..."
        headers = [(name, value if len(value) <= 120 else value[:120] + "...") for name, value in self.headers]
        return (f"HostileRequest({self.category!r}, {self.method} {self.path}, headers={headers!r}, "
                f"body[{len(self.body)}]={body!r}, statuses={sorted(self.statuses)}, code={self.code!r})")


def check_refusal(status: int, headers: dict[str, str], body: bytes, request: HostileRequest) -> dict[str, Any]:
    """The answer to a hostile request: a 4xx in OpenAI's error shape, with a message a person can read.

    ``headers`` are the response's, with lower-case names. Returns the error object.
    """
    assert 400 <= status < 500, f"{status} for {request!r}: {body[:500]!r}"
    if request.statuses:
        assert status in request.statuses, f"{status} for {request!r}: {body[:500]!r}"
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert headers.get("x-request-id"), headers
    assert "x-infery-credits-used" not in headers, headers
    payload = json.loads(body)
    assert set(payload) == {"error"}, payload
    error = payload["error"]
    assert set(error) == ERROR_FIELDS, error
    assert error["type"] in ERROR_TYPES, error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or re.fullmatch(r"[a-z0-9_]+", error["code"]), error
    if request.code is not None:
        assert error["code"] == request.code, (error, request)
    check_message(error["message"])
    return error


def check_message(message: Any) -> None:
    """A sentence for a person: plain text, not too long, no control characters, no internal detail."""
    assert isinstance(message, str) and message.strip(), message
    assert len(message) <= MESSAGE_MAX_CHARACTERS, message[:MESSAGE_MAX_CHARACTERS]
    controls = [character for character in message if unicodedata.category(character) in ("Cc", "Cs")]
    assert not controls, f"control characters {controls!r} in {message!r}"
    found = INTERNAL_DETAIL.search(message)
    assert found is None, f"internal detail {found.group(0)!r} in {message!r}"


# ---------------------------------------------------------------------------------------------------------------
# bytes: real audio, audio whose header lies, things that are not audio


def wav(seconds: float = 0.5, rate: int = 16_000, *, channels: int = 1, bits: int = 16,
        declared_data_bytes: int | None = None, data: bytes | None = None) -> bytes:
    """A PCM WAV of silence (or of ``data``), whose header may declare any rate and data size."""
    block = channels * max(1, bits // 8)
    samples = bytes(int(seconds * rate) * block) if data is None else data
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    size = len(samples) if declared_data_bytes is None else declared_data_bytes
    chunks = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + samples
    return b"RIFF" + struct.pack("<I", len(chunks)) + chunks


REAL_AUDIO = wav()  # half a second of 16 kHz mono silence: audio the model would take


def flac(rate: int, total_samples: int, tail: bytes, *, channels: int = 1, bits: int = 16) -> bytes:
    """fLaC and a STREAMINFO block declaring ``rate`` and ``total_samples``, then ``tail`` as the frames."""
    packed = rate << 44 | (channels - 1) << 41 | (bits - 1) << 36 | total_samples
    info = struct.pack(">HH", 4096, 4096) + bytes(6) + packed.to_bytes(8, "big") + bytes(16)
    return b"fLaC" + b"\x80" + len(info).to_bytes(3, "big") + info + tail


def webm(duration: float, tail: bytes, *, timecode_scale: int = 1_000_000) -> bytes:
    """An EBML header (DocType webm), then a Segment whose Info declares ``duration`` ticks."""
    doctype = b"\x42\x82\x84webm"
    header = b"\x1a\x45\xdf\xa3" + bytes([0x80 | (4 + len(doctype))]) + b"\x42\x86\x81\x01" + doctype
    info = b"\x2a\xd7\xb1\x83" + timecode_scale.to_bytes(3, "big") + b"\x44\x89\x88" + struct.pack(">d", duration)
    info_element = b"\x15\x49\xa9\x66" + b"\x01" + len(info).to_bytes(7, "big") + info
    return header + b"\x18\x53\x80\x67" + b"\x01" + b"\xff" * 7 + info_element + tail


def mp3_with_xing(frames: int, tail: bytes) -> bytes:
    """An MPEG-1 layer III frame (128 kbps, 44.1 kHz) whose Xing header declares ``frames`` frames."""
    head = b"\xff\xfb\x90\x64" + bytes(32) + b"Xing" + struct.pack(">II", 1, frames)
    return head + bytes(417 - len(head)) + b"\xff\xfb\x90\x64" + bytes(413) + tail


def is_audio(data: bytes) -> bool:
    try:
        sniff_audio_format(data)
    except InferyError:
        return False
    return True


not_audio = st.one_of(
    st.binary(min_size=1, max_size=2048),
    st.text(min_size=1, max_size=500).map(str.encode),
    st.sampled_from([b"\x89PNG\r\n\x1a\n" + bytes(64), b"%PDF-1.7\n" + bytes(64), b"PK\x03\x04" + bytes(64),
                     b"\x00\x00\x00\x18ftypavif" + bytes(64), b"\x1a\x45\xdf\xa3\x84\x42\x82\x81m" + bytes(32),
                     b"RIFF\x24\x00\x00\x00AVI " + bytes(32), b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(32),
                     b"<?xml version='1.0'?><svg/>", b"#!/bin/sh\nrm -rf /\n", b"\xff\xf1\x50\x80" + bytes(64)]),
).filter(lambda data: not is_audio(data))

tails = st.binary(max_size=512)


@st.composite
def lying_audio(draw: st.DrawFn) -> tuple[bytes, str]:
    """Audio whose header declares what the API refuses before any credit is held: (bytes, expected code)."""
    kind = draw(st.sampled_from(["wav-rate", "flac-rate", "flac-length", "webm-length", "mp3-length"]))
    if kind == "wav-rate":
        rate = draw(st.integers(1, 7_999))
        data = draw(st.binary(min_size=2, max_size=2048))
        declared = draw(st.one_of(st.none(), st.integers(0, 2**32 - 1)))
        return wav(rate=rate, data=data, declared_data_bytes=declared,
                   channels=draw(st.integers(1, 8)), bits=draw(st.sampled_from([8, 16, 24, 32]))), \
            "sample_rate_too_low"
    if kind == "flac-rate":
        return flac(draw(st.integers(1, 7_999)), draw(st.integers(1, 2**36 - 1)), draw(tails)), "sample_rate_too_low"
    if kind == "flac-length":
        rate = draw(st.sampled_from([8_000, 16_000, 44_100, 48_000, 96_000]))
        total = draw(st.integers(int(rate * 36_001), 2**36 - 1))  # past a job's 10 hours (MaxJobAudioSeconds)
        return flac(rate, total, draw(tails)), "audio_too_long"
    if kind == "webm-length":
        return webm(draw(st.floats(36_001_000, 1e15)), draw(tails)), "audio_too_long"
    # 1152 samples a frame at 44.1 kHz: past 10 hours from 1,378,200 frames
    return mp3_with_xing(draw(st.integers(1_378_200, 2**32 - 1)), draw(tails)), "audio_too_long"


@st.composite
def undecodable_audio(draw: st.DrawFn) -> bytes:
    """Bytes that sniff as a supported format, with a header that passes every check, and no decodable audio:
    only the model finds out (the stand-in answers as the model server does)."""
    garbage = draw(st.binary(min_size=16, max_size=2048))
    kind = draw(st.sampled_from(["flac", "mp3", "ogg", "webm", "mp4"]))
    if kind == "flac":
        return flac(16_000, draw(st.integers(1, 16_000 * 60)), garbage)
    if kind == "mp3":
        return b"\xff\xfb\x90\x64" + garbage
    if kind == "ogg":
        return b"OggS" + garbage
    if kind == "webm":
        return webm(draw(st.floats(1, 60_000)), garbage)
    return b"\x00\x00\x00\x18ftypisom" + bytes(12) + garbage


# ---------------------------------------------------------------------------------------------------------------
# text: unicode and NUL, for every field

_NASTY = ["\x00", "\x00\x00", "\x1b[31m", "\r\n", "\n", "\t", "\x7f", "\u202e", "\ufeff", "\u200b", "\u2028", "😀",
          "🏳️‍🌈", "ǅ", "\uffff", "\U0010ffff", "𝕨𝕙𝕚𝕤𝕡𝕖𝕣", "İ", "ß", "%00", "../", "..\\", "'", '"', "\\", "${jndi:x}",
          "<script>", "NaN", "-0", "1e309", "null", "whisper-1", "en", "json", "word", "upl_", "https://", "=?utf-8?"]
hostile_text = st.one_of(
    st.text(max_size=24),
    st.lists(st.one_of(st.sampled_from(_NASTY), st.text(max_size=4)), min_size=1, max_size=6).map("".join),
    st.text(st.characters(max_codepoint=0x20), min_size=1, max_size=8),
)
# JSON can carry what UTF-8 cannot: unpaired surrogates (\ud800), as a JSON escape
json_hostile_text = st.one_of(hostile_text, st.sampled_from(["\ud800", "a\udfffb", "\udc00\ud800"]))


def _not(valid: Any) -> Any:
    return lambda value: not valid(value)


def _valid_language(value: str) -> bool:
    return value.strip().lower() in WHISPER_LANGUAGE_CODES


def _valid_temperature(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and 0 <= number <= 1


def _valid_webhook(value: str) -> bool:
    try:
        check_webhook_url(value, allow_private_addresses=True, allow_http=True)
    except InferyError:
        return False
    return True


def _has_control(value: str) -> bool:
    return any(unicodedata.category(character) == "Cc" for character in value)


_BIDI_CONTROLS = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]


def _acceptable_filename(value: str) -> bool:
    """No control character and no bidi embedding, override or isolate (they make a name display as another)."""
    return not _has_control(value) and not any(character in _BIDI_CONTROLS for character in value)


# ---------------------------------------------------------------------------------------------------------------
# bodies


def multipart(boundary: str, parts: list[tuple[str, bytes | str, str | None]], *, closing: bool = True) -> bytes:
    """A form as clients send it: one part per (name, value, filename); str values as UTF-8, unpaired surrogates
    and all (they become bytes no decoder takes). Quotes and line breaks in names are percent-encoded, as
    browsers do, so a hostile name is never read as another field's."""
    out = bytearray()
    for name, value, filename in parts:
        disposition = f'form-data; name="{_percent_quoted(name)}"'
        if filename is not None:
            disposition += f'; filename="{_percent_quoted(filename)}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode("utf-8", "surrogatepass")
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + (value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value) + b"\r\n"
    if closing:
        out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def _percent_quoted(text: str) -> str:
    return text.replace("%", "%25").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def json_bytes(payload: Any, ascii_only: bool) -> bytes:
    return json.dumps(payload, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


boundaries = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'()+_,-./:=?"),
                     min_size=1, max_size=70).filter(lambda value: not value.endswith(" "))
json_content_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "Application/JSON"])


def _auth(api_key: str) -> tuple[str, str]:
    return "Authorization", f"Bearer {api_key}"


@dataclass
class Form:
    """A request's fields before they are encoded as multipart or JSON."""

    fields: dict[str, Any]
    audio: bytes | None = REAL_AUDIO
    filename: str | None = "speech.wav"
    audio_spelling: str = "audio"  # JSON: "audio" or "file_base64"

    def multipart(self, boundary: str) -> bytes:
        parts: list[tuple[str, bytes | str, str | None]] = []
        if self.audio is not None:
            parts.append(("file", self.audio, self.filename if self.filename is not None else "speech.wav"))
        for name, value in self.fields.items():
            values = value if isinstance(value, list) else [value]
            field_name = "timestamp_granularities[]" if name == "timestamp_granularities" else name
            parts.extend((field_name, _form_text(item), None) for item in values)
        return multipart(boundary, parts)

    def json(self, ascii_only: bool) -> bytes:
        payload = dict(self.fields)
        if self.audio is not None:
            payload[self.audio_spelling] = base64.b64encode(self.audio).decode()
            if self.filename is not None:
                payload["filename"] = self.filename
        return json_bytes(payload, ascii_only)


def _form_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


@st.composite
def encoded(draw: st.DrawFn, form: Form, path: str, api_key: str, category: str,
            statuses: frozenset[int] = frozenset(), code: str | None = None,
            json_only: bool = False) -> HostileRequest:
    """``form`` as a multipart or a JSON request to ``path``, with the key. ``json_only``: as JSON with every
    character outside ASCII escaped (\\ud800 survives only as an escape: raw, it is not UTF-8, and API Gateway
    hands a JSON body to Lambda as text, with such bytes replaced)."""
    if json_only or draw(st.booleans()):
        body = form.json(ascii_only=json_only or draw(st.booleans()))
        content_type = draw(json_content_types)
    else:
        boundary = draw(boundaries)
        body = form.multipart(boundary)
        content_type = f"multipart/form-data; boundary={boundary}"
    return HostileRequest(category, path, [_auth(api_key), ("Content-Type", content_type)], body,
                          statuses=statuses, code=code)


# ---------------------------------------------------------------------------------------------------------------
# the strategies: each draws a request that must be refused


@st.composite
def random_bodies(draw: st.DrawFn, api_key: str) -> HostileRequest:
    """Random bytes under any Content-Type, to every POST."""
    path = draw(st.sampled_from(ALL_POSTS))
    content_type = draw(st.one_of(
        st.none(), json_content_types, st.sampled_from(["application/octet-stream", "text/plain", "audio/wav",
                                                        "application/x-www-form-urlencoded", "multipart/mixed"]),
        boundaries.map(lambda boundary: f"multipart/form-data; boundary={boundary}"), hostile_text))
    body = draw(st.one_of(st.binary(max_size=4096), hostile_text.map(lambda text: text.encode("utf-8"))))
    if path == UPLOADS:  # no body at all is a valid upload request; so is any JSON object of valid fields
        body = body if body.strip() else b"\x00" + body
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            parsed = None
        if isinstance(parsed, dict):
            body = b"\x00" + body
    headers = [_auth(api_key)] + ([("Content-Type", content_type)] if content_type is not None else [])
    return HostileRequest("random bytes", path, headers, body)


@st.composite
def oversized_bodies(draw: st.DrawFn, api_key: str) -> HostileRequest:
    """Bodies past the synchronous limit (4 MiB of audio) and up to Lambda's 6 MB payload: refused before they are
    parsed, and without a copy of them per step."""
    path = draw(st.sampled_from(ALL_POSTS))
    size = draw(st.integers(4_400_000, 6_000_000))
    filler = bytes([draw(st.integers(0, 255))]) * size
    shape = draw(st.sampled_from(["multipart", "json-base64", "json-prompt"]))
    if shape == "multipart":
        boundary = draw(boundaries)
        content_type = f"multipart/form-data; boundary={boundary}"
        body = multipart(boundary, [("model", "whisper-1", None), ("file", filler, "big.wav")],
                         closing=draw(st.booleans()))
    elif shape == "json-base64":
        content_type = "application/json"
        body = b'{"model": "whisper-1", "audio": "' + b"A" * size + b'"}'
    else:
        content_type = "application/json"
        body = b'{"model": "whisper-1", "prompt": "' + b"p" * size + b'"}'
    return HostileRequest("oversized body", path, [_auth(api_key), ("Content-Type", content_type)], body)


@st.composite
def cut_off_multipart(draw: st.DrawFn, api_key: str) -> HostileRequest:
    """A whole, valid form with real audio, cut anywhere before the end of its closing boundary."""
    path = draw(st.sampled_from(AUDIO_POSTS))
    boundary = draw(boundaries)
    fields = {"model": "whisper-1", **draw(st.fixed_dictionaries({}, optional={"response_format": st.just("text"),
                                                                                 "temperature": st.just("0.2")}))}
    body = Form(fields).multipart(boundary)
    cut = draw(st.integers(0, len(body) - len(b"\r\n") - 1))  # "--boundary--" incomplete, or never reached
    return HostileRequest("cut-off multipart", path, [_auth(api_key), ("Content-Type",
                                                                      f"multipart/form-data; boundary={boundary}")],
                          body[:cut], statuses=frozenset({400}), code="invalid_multipart")


@st.composite
def wrong_boundaries(draw: st.DrawFn, api_key: str) -> HostileRequest:
    """A valid form with real audio whose Content-Type names another boundary (or none, or an impossible one)."""
    path = draw(st.sampled_from(AUDIO_POSTS))
    actual = draw(boundaries)
    declared = draw(st.one_of(
        boundaries.filter(lambda other: other != actual),
        st.just(actual[:-1]).filter(bool),                       # a prefix of the real one
        st.just(actual + "x").filter(lambda other: len(other) <= 70),  # the real one, extended
        st.just(actual.swapcase()).filter(lambda other: other != actual),
        st.text(min_size=71, max_size=300).map(lambda text: "b" + text),  # longer than RFC 2046 allows
        hostile_text,
    ).filter(lambda text: _as_read(text) != actual))
    shape = draw(st.sampled_from(["plain", "quoted", "missing", "empty", "wrong-first", "no-equals"]))
    content_type = {"plain": f"multipart/form-data; boundary={declared}",
                    "quoted": f'multipart/form-data; boundary="{declared}"',
                    "missing": "multipart/form-data",
                    "empty": "multipart/form-data; boundary=",
                    "wrong-first": f"multipart/form-data; boundary={declared}; boundary={actual}",
                    "no-equals": f"multipart/form-data; boundary {actual}"}[shape]
    body = Form({"model": "whisper-1"}).multipart(actual)
    return HostileRequest("wrong boundary", path, [_auth(api_key), ("Content-Type", content_type)], body,
                          statuses=frozenset({400}), code="invalid_multipart")


_LIES = ["no-name", "no-disposition", "no-blank-line", "text-as-audio", "png-as-wav", "invalid-utf8-field",
         "last-file-not-audio", "word-without-verbose-json", "upload-id-and-file", "preamble-only",
         "closing-first", "nested-boundary-in-name", "empty-file", "only-closing"]


@st.composite
def lying_multipart(draw: st.DrawFn, api_key: str) -> HostileRequest:
    """Hand-made forms with real audio and one lie: parts without a name or without headers, a text file sent as
    audio, a field that is not UTF-8, two files, a body that ends where it starts."""
    path = draw(st.sampled_from(AUDIO_POSTS))
    boundary = draw(boundaries)
    lie = draw(st.sampled_from(_LIES))
    audio_part = ("file", REAL_AUDIO, draw(st.sampled_from(["speech.wav", "a.mp3", "x", ""])))
    model = ("model", "whisper-1", None)
    delimiter = f"--{boundary}\r\n".encode()
    closing = f"--{boundary}--\r\n".encode()
    if lie == "no-name":
        body = delimiter + b'Content-Disposition: form-data; filename="a.wav"\r\n\r\n' + REAL_AUDIO + b"\r\n" + \
            multipart(boundary, [model])
    elif lie == "no-disposition":
        body = delimiter + b"Content-Type: audio/wav\r\n\r\n" + REAL_AUDIO + b"\r\n" + multipart(boundary, [model])
    elif lie == "no-blank-line":
        body = multipart(boundary, [audio_part], closing=False) + delimiter + \
            b'Content-Disposition: form-data; name="model"\r\nwhisper-1\r\n' + closing
    elif lie == "text-as-audio":
        body = multipart(boundary, [("file", draw(not_audio), "speech.wav"), model])
    elif lie == "png-as-wav":
        body = multipart(boundary, [("file", b"\x89PNG\r\n\x1a\n" + draw(st.binary(max_size=256)), "song.wav"),
                                    model])
    elif lie == "invalid-utf8-field":
        name = draw(st.sampled_from(["model", "prompt", "language", "response_format", "temperature"]))
        value = draw(st.binary(min_size=1, max_size=32).filter(_not_utf8))
        fields = [audio_part, model] if name != "model" else [audio_part]
        body = multipart(boundary, [*fields, (name, value, None)])
    elif lie == "last-file-not-audio":
        body = multipart(boundary, [audio_part, model, ("file", draw(not_audio), "second.wav")])
    elif lie == "word-without-verbose-json":
        body = multipart(boundary, [audio_part, model, ("timestamp_granularities[]", "word", None),
                                    ("response_format", draw(st.sampled_from(["json", "text", "srt", "vtt"])), None)])
    elif lie == "upload-id-and-file":
        body = multipart(boundary, [audio_part, model, ("upload_id", "upl_" + "0" * 32, None)])
    elif lie == "preamble-only":
        body = b"This is the preamble; the parts never come.\r\n" + draw(st.binary(max_size=64))
    elif lie == "closing-first":
        body = closing + multipart(boundary, [audio_part, model])
    elif lie == "nested-boundary-in-name":
        body = multipart(boundary, [audio_part, (f"--{boundary}", "whisper-1", None)])
    elif lie == "empty-file":
        body = multipart(boundary, [("file", b"", "speech.wav"), model])
    else:  # only-closing: a form without parts
        body = closing
    if lie == "word-without-verbose-json" and path in (TRANSLATIONS, TRANSLATION_JOBS):
        pass  # timestamp_granularities is not a translation field: refused as unknown, still a 400
    return HostileRequest(f"lying multipart ({lie})", path,
                          [_auth(api_key), ("Content-Type", f"multipart/form-data; boundary={boundary}")], body)


def _as_read(declared: str) -> str:
    """The boundary a parser reads from ``boundary=<declared>``: up to the next ';', trimmed, unquoted."""
    value = declared.split(";", 1)[0].strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@st.composite
def base64_of_non_audio(draw: st.DrawFn, api_key: str) -> HostileRequest:
    """JSON whose audio is base64 of something that is not audio, or is not base64 at all."""
    path = draw(st.sampled_from(AUDIO_POSTS))
    data = draw(not_audio)
    encoded_text = base64.b64encode(data).decode()
    shape = draw(st.sampled_from(["plain", "data-url", "wrapped", "urlsafe", "unpadded", "spaced", "junk-tail",
                                  "number", "list", "object", "hostile"]))
    if shape == "data-url":
        value: Any = f"data:audio/wav;base64,{encoded_text}"
    elif shape == "wrapped":
        value = "\n".join(encoded_text[i:i + 76] for i in range(0, len(encoded_text), 76))
    elif shape == "urlsafe":
        value = base64.urlsafe_b64encode(data).decode()
    elif shape == "unpadded":
        value = encoded_text.rstrip("=")
    elif shape == "spaced":
        value = " ".join(encoded_text)
    elif shape == "junk-tail":
        value = encoded_text + draw(hostile_text)
    elif shape == "number":
        value = draw(st.one_of(st.integers(), st.floats(allow_nan=False)))
    elif shape == "list":
        value = list(data[:16])
    elif shape == "object":
        value = {"data": encoded_text}
    else:
        value = draw(json_hostile_text)
    payload = {"model": "whisper-1", draw(st.sampled_from(["audio", "file_base64"])): value}
    return HostileRequest("base64 of non-audio", path,
                          [_auth(api_key), ("Content-Type", draw(json_content_types))],
                          json_bytes(payload, ascii_only=draw(st.booleans())))


@st.composite
def audio_with_lying_headers(draw: st.DrawFn, api_key: str, paths: tuple[str, ...] = AUDIO_POSTS
                             ) -> HostileRequest:
    """Audio whose header says 1 Hz or more than ten hours: refused before any credit is held."""
    path = draw(st.sampled_from(paths))
    audio, code = draw(lying_audio())
    form = Form({"model": "whisper-1"}, audio=audio, filename=draw(st.sampled_from(["a.wav", "a.flac", "x"])),
                audio_spelling=draw(st.sampled_from(["audio", "file_base64"])))
    return draw(encoded(form, path, api_key, "audio with lying headers", frozenset({400}), code))


# json.dumps cannot write an integer past Python's digit limit either: a marker, replaced in the encoded body
_HUGE_NUMBER_MARK = "<a number with 5,000 digits>"


def _with_huge_numbers(body: bytes) -> bytes:
    return body.replace(json.dumps(_HUGE_NUMBER_MARK).encode(), b"9" * 5000)


# Each poison is one field the API must refuse; a request carries one poison, real audio and other fields that
# hold unicode and NUL but are acceptable on their own (a prompt may say anything).
_POISONS_SYNC = ["model", "no-model", "response-format", "temperature", "filename-control", "filename-long",
                 "prompt-long", "unknown-field", "not-audio", "empty-audio", "no-audio", "upload-id-bad",
                 "upload-id-unknown", "upload-id-and-file", "both-audio-spellings", "granularity", "surrogate",
                 "filename-bidi", "repeated-field", "second-file", "huge-number"]
_POISONS_ONLY_SYNC = ["webhook-on-sync"]
_POISONS_TRANSCRIBE = ["language"]
_POISONS_TRANSLATE = ["language-on-translation"]
_POISONS_JOB = ["webhook"]


@st.composite
def poisoned_forms(draw: st.DrawFn, api_key: str, paths: tuple[str, ...] = AUDIO_POSTS) -> HostileRequest:
    """Unicode and NUL in every field; one field the API must refuse; real audio (unless the poison is the audio)."""
    path = draw(st.sampled_from(paths))
    transcribe = path in (TRANSCRIPTIONS, TRANSCRIPTION_JOBS)
    job = path.endswith("/jobs")
    fields: dict[str, Any] = {"model": "whisper-1"}
    optional = draw(st.fixed_dictionaries({}, optional={
        "prompt": json_hostile_text, "response_format": st.sampled_from(sorted(RESPONSE_FORMATS)),
        "temperature": st.sampled_from(["0", "0.5", "1", 0.25])}))
    fields.update(optional)
    form = Form(fields, filename=draw(st.one_of(st.just("speech.wav"), hostile_text.filter(
        lambda name: _acceptable_filename(name) and len(name) <= 255))))
    poisons = _POISONS_SYNC + (_POISONS_TRANSCRIBE if transcribe else _POISONS_TRANSLATE) + \
        (_POISONS_JOB if job else _POISONS_ONLY_SYNC)
    poison = draw(st.sampled_from(poisons))
    json_only = False
    if poison == "model":
        fields["model"] = draw(json_hostile_text.filter(lambda name: name not in MODEL_NAMES))
    elif poison == "no-model":
        del fields["model"]
    elif poison == "surrogate":  # JSON can escape half a character (\ud800); no text field may hold one
        json_only = True
        broken = draw(hostile_text) + "\ud800"
        if draw(st.booleans()):
            form.filename = broken
        else:
            fields[draw(st.sampled_from(["prompt", "model"]))] = broken
    elif poison == "language":
        fields["language"] = draw(json_hostile_text.filter(_not(_valid_language)))
    elif poison == "language-on-translation":
        fields["language"] = draw(st.sampled_from(["en", "de"]))
    elif poison == "response-format":
        fields["response_format"] = draw(json_hostile_text.filter(lambda value: value not in RESPONSE_FORMATS))
    elif poison == "temperature":
        fields["temperature"] = draw(st.one_of(json_hostile_text, st.floats(), st.booleans(), st.integers(2),
                                               st.integers(max_value=-1)).filter(_not(_valid_temperature)))
    elif poison == "granularity":
        fields["timestamp_granularities"] = draw(st.lists(
            json_hostile_text.filter(lambda value: value not in ("word", "segment")), min_size=1, max_size=3))
    elif poison == "filename-control":
        # not a line break: a form carries it percent-encoded (%0A), as browsers send it
        form.filename = draw(hostile_text) + draw(st.sampled_from(["\x00", "\t", "\x1b", "\x7f", "\x01"])) + ".wav"
    elif poison == "filename-bidi":  # a right-to-left override shows "x\u202evaw.exe" as "xexe.wav"
        form.filename = draw(hostile_text) + draw(st.sampled_from(_BIDI_CONTROLS)) + "vaw.exe"
    elif poison == "repeated-field":  # a form sends it twice (the last used to win); JSON gets a list, not a text
        name = draw(st.sampled_from(["model", "prompt", "response_format", "temperature"]))
        value = fields.get(name, "whisper-1" if name == "model" else "json" if name == "response_format" else "0")
        fields[name] = [value, value]
    elif poison == "second-file":  # a form with two file parts; in JSON, a field named file is unknown
        fields["file"] = "RIFF"
    elif poison == "huge-number":  # past Python's int digits limit: json.loads raises ValueError, not a decode error
        json_only = True
        fields[draw(st.sampled_from(["temperature", "prompt", "model"]))] = _HUGE_NUMBER_MARK
    elif poison == "filename-long":
        form.filename = draw(st.text(min_size=1, max_size=8)) * 300
    elif poison == "prompt-long":
        fields["prompt"] = draw(st.text(min_size=1, max_size=8)) * 1001
    elif poison == "unknown-field":
        allowed = {"model", "prompt", "response_format", "temperature", "language", "timestamp_granularities",
                   "timestamp_granularities[]", "file", "audio", "file_base64", "filename", "upload_id",
                   "webhook_url", "chunking_strategy", "include", "include[]", "stream"}
        name = draw(json_hostile_text.filter(lambda name: name not in allowed and name.strip()))
        fields[name] = draw(json_hostile_text)
    elif poison == "not-audio":
        form.audio = draw(not_audio)
    elif poison == "empty-audio":
        form.audio = b""
    elif poison == "no-audio":
        form.audio = None
    elif poison == "upload-id-bad":
        form.audio = None
        fields["upload_id"] = draw(json_hostile_text.filter(lambda value: not UPLOAD_ID_PATTERN.fullmatch(value)))
    elif poison == "upload-id-unknown":
        form.audio = None
        fields["upload_id"] = "upl_" + draw(st.text("0123456789abcdef", min_size=32, max_size=32))
    elif poison == "upload-id-and-file":
        fields["upload_id"] = "upl_" + "f" * 32
    elif poison == "both-audio-spellings":
        json_only = True
        fields["file_base64"] = base64.b64encode(REAL_AUDIO).decode()
    elif poison == "webhook-on-sync":
        fields["webhook_url"] = "http://127.0.0.1:9/hook"
    elif poison == "webhook":
        fields["webhook_url"] = draw(st.one_of(
            json_hostile_text, st.sampled_from(["ftp://example.com/x", "http://user:pw@example.com/",
                                                "https://example.com:99999/", "javascript:alert(1)", "//example.com",
                                                "https://", "https:// example.com/", "http://[::1/"]),
            st.just("https://example.com/" + "a" * 2100)).filter(_not(_valid_webhook)))
    request = draw(encoded(form, path, api_key, f"unicode and NUL, poisoned {poison}", json_only=json_only))
    request.body = _with_huge_numbers(request.body)
    return request


_UPLOAD_POISONS = ["model", "language", "response-format", "temperature", "granularity", "word-without-verbose",
                   "filename-control", "filename-long", "prompt-long", "unknown-field", "webhook", "start-job",
                   "surrogate", "not-an-object", "invalid-json", "not-json", "filename-bidi", "huge-number"]


@st.composite
def poisoned_uploads(draw: st.DrawFn, api_key: str) -> HostileRequest:
    """POST /v1/uploads bodies with unicode and NUL in every field and one field the API must refuse."""
    fields: dict[str, Any] = draw(st.fixed_dictionaries({}, optional={
        "prompt": json_hostile_text, "model": st.sampled_from(sorted(MODEL_NAMES)),
        "filename": hostile_text.filter(_acceptable_filename),
        "start_job": st.booleans(), "response_format": st.sampled_from(sorted(RESPONSE_FORMATS - {"verbose_json"}))}))
    poison = draw(st.sampled_from(_UPLOAD_POISONS))
    content_type = draw(json_content_types)
    ascii_only = draw(st.booleans())
    body: bytes | None = None
    if poison == "model":
        fields["model"] = draw(json_hostile_text.filter(lambda name: name not in MODEL_NAMES))
    elif poison == "language":
        fields["language"] = draw(json_hostile_text.filter(_not(_valid_language)))
    elif poison == "response-format":
        fields["response_format"] = draw(json_hostile_text.filter(lambda value: value not in RESPONSE_FORMATS))
    elif poison == "temperature":
        fields["temperature"] = draw(st.one_of(json_hostile_text, st.floats(), st.booleans(), st.integers(2))
                                     .filter(_not(_valid_temperature)))
    elif poison == "granularity":
        fields["timestamp_granularities"] = draw(st.one_of(
            st.lists(json_hostile_text.filter(lambda value: value not in ("word", "segment")), min_size=1,
                     max_size=3), json_hostile_text, st.integers()))
    elif poison == "word-without-verbose":
        fields |= {"timestamp_granularities": ["word"], "response_format": draw(st.sampled_from(["json", "srt"]))}
    elif poison == "surrogate":
        ascii_only = True
        fields[draw(st.sampled_from(["prompt", "model", "filename", "webhook_url"]))] = "\udfff" + draw(hostile_text)
    elif poison == "filename-control":
        fields["filename"] = draw(hostile_text) + "\x00" + draw(hostile_text)
    elif poison == "filename-bidi":
        fields["filename"] = draw(hostile_text) + draw(st.sampled_from(_BIDI_CONTROLS)) + draw(hostile_text)
    elif poison == "huge-number":
        fields[draw(st.sampled_from(["temperature", "start_job", "prompt"]))] = _HUGE_NUMBER_MARK
    elif poison == "filename-long":
        fields["filename"] = draw(st.text(min_size=1, max_size=4)) * 256
    elif poison == "prompt-long":
        fields["prompt"] = draw(st.text(min_size=1, max_size=8)) * 1001
    elif poison == "unknown-field":
        allowed = {"model", "prompt", "response_format", "temperature", "language", "timestamp_granularities",
                   "filename", "start_job", "webhook_url"}
        fields[draw(st.one_of(st.sampled_from(["audio", "file", "upload_id", "file_base64", "stream", "key_id"]),
                              json_hostile_text.filter(lambda name: name not in allowed)))] = draw(json_hostile_text)
    elif poison == "webhook":
        fields["webhook_url"] = draw(st.one_of(json_hostile_text, st.integers(), st.just(
            "https://example.com/" + "a" * 2100)).filter(lambda value: not isinstance(value, str)
                                                          or not _valid_webhook(value)))
    elif poison == "start-job":
        fields["start_job"] = draw(st.one_of(json_hostile_text, st.integers(), st.none(), st.floats(allow_nan=False),
                                             st.lists(st.booleans(), max_size=2)))
    elif poison == "not-an-object":
        body = json_bytes(draw(st.one_of(st.lists(json_hostile_text, max_size=3), json_hostile_text, st.integers(),
                                         st.none(), st.booleans())), draw(st.booleans()))
    elif poison == "invalid-json":
        text = json.dumps(fields or {"prompt": "x"})
        body = text[:draw(st.integers(1, len(text) - 1))].encode() + draw(st.sampled_from([b"", b"\x00", b"\xff"]))
    else:  # not-json: the same object, but the Content-Type is something else
        content_type = draw(st.sampled_from(["text/plain", "multipart/form-data; boundary=x",
                                             "application/x-www-form-urlencoded", "application/jsonp"]))
        body = json_bytes(fields or {"prompt": "hello"}, ascii_only=True)
    if body is None:
        body = _with_huge_numbers(json_bytes(fields, ascii_only=ascii_only))
    return HostileRequest(f"uploads, poisoned {poison}", UPLOADS, [_auth(api_key), ("Content-Type", content_type)],
                          body)


@st.composite
def with_hostile_headers(draw: st.DrawFn, base: st.SearchStrategy[HostileRequest], api_key: str,
                         over_http: bool = False) -> HostileRequest:
    """A refused request, plus huge and repeated headers and a Content-Length that lies.

    ``over_http``: within what an HTTP front door passes on at all (API Gateway refuses a header past 10 KB
    itself; Python's http.server takes 100 headers), and with the Content-Length sent instead of the true one."""
    huge, many = (8_000, 60) if over_http else (64_000, 300)
    request = draw(base)
    headers = list(request.headers)
    for change in draw(st.lists(st.sampled_from(["repeat-content-type", "repeat-authorization", "huge-header",
                                                 "many-headers", "huge-content-type", "content-length",
                                                 "huge-idempotency-key", "hostile-idempotency-key",
                                                 "hostile-header-values", "upper-case-names"]),
                                min_size=1, max_size=4, unique=True)):
        if change == "repeat-content-type":
            original = next((value for name, value in headers if name.lower() == "content-type"), "text/plain")
            if over_http:  # the local gateway decides binary or text by the first, the handler reads the last
                other = ("Content-Type", original)
            else:
                other = ("Content-Type", draw(st.one_of(json_content_types, hostile_text,
                                                        st.just("multipart/form-data"))))
            headers.insert(draw(st.integers(0, len(headers))), other)
        elif change == "repeat-authorization":
            headers.insert(draw(st.integers(0, len(headers))),
                           ("Authorization", draw(st.sampled_from([f"Bearer {api_key}", "Bearer inf_" + "x" * 46,
                                                                   "Basic Zm9vOmJhcg==", "Bearer", ""]))))
        elif change == "huge-header":
            headers.append((draw(st.sampled_from(["X-Padding", "User-Agent", "Accept", "Cookie"])),
                            "A" * draw(st.integers(huge // 8, huge))))
        elif change == "many-headers":
            headers.extend((f"X-Junk-{index}", str(index)) for index in range(draw(st.integers(many // 6, many))))
        elif change == "huge-content-type":
            name, value = next(((n, v) for n, v in headers if n.lower() == "content-type"),
                               ("Content-Type", "application/json"))
            headers.append((name, value + "; x=" + "y" * draw(st.integers(1_000, huge))))
        elif change == "content-length":
            headers.append(("Content-Length", str(draw(st.one_of(st.integers(0, 2**63), st.just(len(request.body) + 1),
                                                               st.just(max(0, len(request.body) - 1)))))))
        elif change == "huge-idempotency-key":
            headers.append(("Idempotency-Key", "k" * draw(st.integers(256, huge))))
        elif change == "hostile-idempotency-key":
            headers.append(("Idempotency-Key", draw(hostile_text)))
        elif change == "hostile-header-values":
            headers.append((draw(st.sampled_from(["X-Request-Id", "X-Forwarded-For", "Origin", "Accept-Language"])),
                            draw(hostile_text)))
        elif change == "upper-case-names":
            headers = [(name.upper(), value) for name, value in headers]
    return HostileRequest(f"hostile headers + {request.category}", request.path, headers, request.body,
                          statuses=frozenset(), code=None)


@st.composite
def bad_keys(draw: st.DrawFn, base: st.SearchStrategy[HostileRequest]) -> HostileRequest:
    """A refused request whose Authorization is unicode, NUL, huge or not a key: 401."""
    request = draw(base)
    value = draw(st.one_of(
        hostile_text.map(lambda text: f"Bearer {text}"), hostile_text,
        st.sampled_from(["Bearer inf_\x00" + "a" * 45, "Bearer inf_" + "ä" * 46, "bearer  inf_", "Bearer " + "A" * 9000,
                         "Bearer inf_" + "0" * 46, "Token inf_abc", "Bearer sk-proj-" + "x" * 40])))
    headers = [(name, value if name.lower() == "authorization" else other) for name, other in request.headers]
    return HostileRequest(f"bad key + {request.category}", request.path, headers, request.body,
                          statuses=frozenset({401}))
