"""Request bodies and file headers built the way real clients and encoders build them."""

from __future__ import annotations

import base64
import json
from typing import Any

from infery.domain.inference import InferenceResult, Segment, Word
from infery.domain.ledger import LedgerEntry, LedgerKind
from infery.domain.transcription import TranscriptionRequest
from infery.settings import ApiSettings
from requests_toolbelt import MultipartEncoder
from urllib3 import encode_multipart_formdata

SDK_BOUNDARY = "infery-test-boundary-7d1f"
# the fields of each segment of a verbose_json transcription, as OpenAI answers
OPENAI_SEGMENT_FIELDS = {
    "id",
    "seek",
    "start",
    "end",
    "text",
    "tokens",
    "temperature",
    "avg_logprob",
    "compression_ratio",
    "no_speech_prob",
}


def _form_parts(audio: bytes | None, filename: str, fields: dict[str, Any]) -> list[tuple[str, Any]]:
    parts: list[tuple[str, Any]] = []
    if audio is not None:
        parts.append(("file", (filename, audio, "application/octet-stream")))
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            parts.append((name, str(item)))
    return parts


def multipart_body(audio: bytes | None, /, filename: str = "speech.wav", **fields: Any) -> tuple[str, bytes]:
    """(content type, body) as the openai SDK sends it: one part per field, list values repeat the field name.

    Pass repeated fields such as ``timestamp_granularities[]`` with ``**{"timestamp_granularities[]": [...]}``.
    """
    body, content_type = encode_multipart_formdata(_form_parts(audio, filename, fields), boundary=SDK_BOUNDARY)
    return content_type, body


def toolbelt_multipart_body(audio: bytes | None, /, filename: str = "speech.wav", **fields: Any) -> tuple[str, bytes]:
    """The same form, encoded by requests_toolbelt's MultipartEncoder (what `requests` users send)."""
    encoder = MultipartEncoder(fields=_form_parts(audio, filename, fields))
    return encoder.content_type, encoder.to_string()


def raw_multipart(boundary: str, *parts: bytes) -> bytes:
    """A hand-made multipart body, for bodies no encoder would produce; each part is headers + CRLFCRLF + content."""
    delimiter = f"--{boundary}\r\n".encode()
    return b"".join(delimiter + part + b"\r\n" for part in parts) + f"--{boundary}--\r\n".encode()


def json_body(audio: bytes | None = None, spelling: str = "audio", /, **fields: Any) -> tuple[str, bytes]:
    """(content type, body) of the JSON variant; the audio goes base64-encoded under ``spelling``."""
    payload = dict(fields)
    if audio is not None:
        payload[spelling] = base64.b64encode(audio).decode()
    return "application/json", json.dumps(payload).encode()


def id3_tag(payload_size: int, *, footer: bool = False) -> bytes:
    """An ID3v2.4 tag of ``payload_size`` bytes (syncsafe size, as cover art makes them), optionally with a footer."""
    syncsafe = bytes([(payload_size >> shift) & 0x7F for shift in (21, 14, 7, 0)])
    flags = b"\x10" if footer else b"\x00"
    tag = b"ID3\x04\x00" + flags + syncsafe + bytes(payload_size)
    return tag + (b"3DI\x04\x00" + flags + syncsafe if footer else b"")


def ftyp_box(major_brand: bytes, *compatible: bytes) -> bytes:
    """The first box of an ISO base media file (MP4, M4A, HEIC, AVIF ...)."""
    payload = major_brand + b"\x00\x00\x02\x00" + b"".join(compatible)
    return (8 + len(payload)).to_bytes(4, "big") + b"ftyp" + payload


def ebml_header(doctype: bytes) -> bytes:
    """A Matroska/WebM EBML header: EBMLVersion 1, then DocType with a one-byte size."""
    elements = b"\x42\x86\x81\x01" + b"\x42\x82" + bytes([0x80 | len(doctype)]) + doctype
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(elements)]) + elements


def audio_of(request: TranscriptionRequest) -> bytes:
    """The bytes of the audio a parsed request carries (it has some: it named no upload)."""
    assert request.audio is not None, request
    return request.audio.whole


def segment(index: int, start: float, end: float, text: str) -> Segment:
    return Segment(
        id=index,
        seek=index * 3000,
        start=start,
        end=end,
        text=text,
        tokens=[50363, 383 + index],
        temperature=0.0,
        avg_logprob=-0.25,
        compression_ratio=1.4,
        no_speech_prob=0.02,
    )


def inference_result(
    text: str, segments: list[Segment], *, words: list[Word] | None = None, language: str = "en", duration: float = 12.5
) -> InferenceResult:
    return InferenceResult(text=text, language=language, duration=duration, segments=segments, words=words)


def job_settings(bucket: str) -> ApiSettings:
    """Settings for the job use case through fakes: every name it needs, none of them reached."""
    return ApiSettings(
        keys_table_name="keys",
        ledger_table_name="ledger",
        reservations_table_name="holds",
        rate_limits_table_name="limits",
        idempotency_table_name="idem",
        sagemaker_endpoint_name="rt",
        audio_bucket_name=bucket,
        jobs_table_name="jobs",
        jobs_queue_url="https://sqs/jobs",
        sagemaker_async_endpoint_name="async",
    )


def ledger_entry(
    key_id: str,
    kind: LedgerKind,
    request_id: str,
    credits: int,
    balance_after: int | None,
    created_at: str,
    **fields: Any,
) -> LedgerEntry:
    """A ledger row as the credit store writes it: at most one of each kind per request, its id ``request_id#kind``."""
    return LedgerEntry(
        key_id=key_id,
        entry_id=f"{request_id}#{kind.value}",
        kind=kind,
        request_id=request_id,
        credits=credits,
        balance_after=balance_after,
        created_at=created_at,
        **fields,
    )
