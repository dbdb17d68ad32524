"""Request bodies built the way clients build them."""

from __future__ import annotations

import base64
import json

from urllib3 import encode_multipart_formdata


def multipart_body(audio: bytes | None, filename: str = "speech.wav", **fields) -> tuple[str, bytes]:
    """(content type, body) as the openai SDK sends it; list values repeat the field, e.g. timestamp_granularities[]."""
    parts: list[tuple[str, object]] = []
    if audio is not None:
        parts.append(("file", (filename, audio, "application/octet-stream")))
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            parts.append((name, str(item)))
    body, content_type = encode_multipart_formdata(parts)
    return content_type, body


def json_body(audio: bytes | None = None, spelling: str = "audio", **fields) -> tuple[str, bytes]:
    payload = dict(fields)
    if audio is not None:
        payload[spelling] = base64.b64encode(audio).decode()
    return "application/json", json.dumps(payload).encode()
