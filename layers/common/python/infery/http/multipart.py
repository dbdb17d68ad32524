"""Reading a multipart/form-data body (the openai SDK's way of sending audio) into its named parts, with
python-multipart's streaming parser; what the fields mean is request_parsing's business."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from infery.domain.errors import InvalidRequest

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# RFC 2046: a boundary is 1 to 70 characters, and does not end with a space
_BOUNDARY_PATTERN = re.compile(r"[\x21-\x7e ]{0,69}[\x21-\x7e]")
_MULTIPART_HELP = "Send the form as multipart/form-data with its boundary, as HTTP clients and the openai SDK do."


def _multipart_boundary(content_type: str) -> bytes:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if not _BOUNDARY_PATTERN.fullmatch(value):
                raise InvalidRequest(
                    "The multipart boundary in the Content-Type must be 1 to 70 characters. " + _MULTIPART_HELP,
                    code="invalid_multipart",
                )
            return value.encode("ascii")
    raise InvalidRequest(
        "The multipart Content-Type has no boundary parameter. " + _MULTIPART_HELP, code="invalid_multipart"
    )


def _whole_multipart_body(body: bytes, boundary: bytes) -> tuple[int, int]:
    """Where the body's form is: from its first boundary to its closing one (``--boundary--``), both included.

    A body without the closing boundary was cut off (a client or proxy gave up part way): its last part would be
    a truncated file, so it is refused rather than transcribed and billed. What follows the closing boundary is
    the epilogue, which RFC 2046 says to ignore: nothing there becomes a field.
    """
    delimiter = b"--" + boundary
    if body.startswith(delimiter):
        start = 0
    else:  # a preamble before the first boundary (allowed, and ignored)
        start = body.find(b"\r\n" + delimiter)
        if start < 0:
            raise InvalidRequest(
                "The multipart body does not contain the boundary its Content-Type names. " + _MULTIPART_HELP,
                code="invalid_multipart",
            )
        start += 2
    if body.startswith(delimiter + b"--", start):  # a form without parts
        return start, start + len(delimiter) + 2
    closing = b"\r\n" + delimiter + b"--"
    end = body.find(closing, start)
    if end < 0:
        raise InvalidRequest(
            "The multipart body is incomplete: its closing boundary is missing, so the upload was "
            "probably cut off. Send the whole request again.",
            code="invalid_multipart",
        )
    return start, end + len(closing)


@dataclass
class FormPart:
    """One part of a multipart form as python-multipart reads it: its headers, then its content in pieces."""

    headers: dict[str, str] = field(default_factory=dict)
    pieces: list[bytes] = field(default_factory=list)
    header_name: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)

    def content(self) -> bytes:
        # a form written to the parser at once hands over each part's content as one piece: no copy to join
        return self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)

    def filename(self) -> str | None:
        found = re.search(r'\bfilename="([^"]*)"', self.headers.get("content-disposition", ""))
        return found.group(1) if found else None


def _form_parts(form: bytes, boundary: bytes) -> list[FormPart]:
    """The form's parts, read by python-multipart's streaming parser: the content of each part is sliced out of
    the body once, where a split of the whole body would copy it again."""
    parts: list[FormPart] = []

    def header_end() -> None:
        part = parts[-1]
        # the last of a repeated header wins, as in an email message
        part.headers[part.header_name.decode("utf-8").strip().lower()] = part.header_value.decode("utf-8").strip()
        part.header_name.clear()
        part.header_value.clear()

    callbacks: MultipartCallbacks = {
        "on_part_begin": lambda: parts.append(FormPart()),
        "on_header_field": lambda data, start, end: parts[-1].header_name.extend(data[start:end]),
        "on_header_value": lambda data, start, end: parts[-1].header_value.extend(data[start:end]),
        "on_header_end": header_end,
        "on_part_data": lambda data, start, end: parts[-1].pieces.append(data[start:end]),
    }
    # the body's size is bounded before it is parsed; a long header (a 450 KB filename) is then refused for what
    # it is, by the field's own limit, rather than as a malformed form
    parser = MultipartParser(boundary, callbacks, max_header_size=len(form))
    parser.write(form)
    parser.finalize()
    return parts


def read_form(body: bytes, content_type: str) -> Iterator[tuple[str, FormPart]]:
    """Each part of the form in ``body`` with its name, in order. The whole form is parsed (and a malformed one
    refused) before the first part is yielded; a part without a name is refused when it is reached."""
    boundary = _multipart_boundary(content_type)
    start, end = _whole_multipart_body(body, boundary)
    # the form as it came is the common case (the parser ignores what follows its closing boundary): read
    # without a copy; a preamble before the first boundary is cut off first
    form = body if start == 0 else body[start:end]
    try:
        parts = _form_parts(form, boundary)
    except (MultipartParseError, UnicodeDecodeError) as exc:  # the parser's words mean nothing to a client
        raise InvalidRequest(
            "A part of the multipart body is malformed: each part needs headers (at most 8), a blank line, "
            "then its content. " + _MULTIPART_HELP,
            code="invalid_multipart",
        ) from exc
    for part in parts:
        name_match = re.search(r'\bname="([^"]*)"', part.headers.get("content-disposition", ""))
        if not name_match:
            raise InvalidRequest("A multipart part has no name.", code="invalid_multipart")
        yield name_match.group(1), part
