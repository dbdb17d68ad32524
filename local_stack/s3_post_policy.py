"""The local S3 enforces a presigned POST's signed policy, as S3 does; moto's server stores whatever it is sent.

On AWS, S3 refuses a browser-form upload (POST Object, signature version 4) unless its ``policy`` is signed
(``x-amz-signature``: HMAC-SHA256 of the base64 policy with the SigV4 key of the access key in
``x-amz-credential``), has not expired, and allows the form: every condition holds (exact match, ``starts-with``,
``content-length-range`` on the file's size) and every field but ``file``, ``policy``, ``x-amz-signature`` and
``x-ignore-*`` is named by a condition. Signature version 2 (``AWSAccessKeyId``, ``signature``: base64 HMAC-SHA1 of
the policy with the secret) is checked too: it is what boto3's ``generate_presigned_post`` signs in us-east-1 unless
the client asks for ``s3v4``, so it is what the API hands out. Without this, a client could write locally under
another key's prefix, past the size limit, or with no signature at all, and a job then ran on another key's account.

``PostPolicyApp`` stands in front of moto. It reads the form as it streams in: the fields come first and the file
last (S3 ignores any field after it). It checks the fields before it takes the file, counts the file against the
policy's size range while it spools it (in memory up to 1 MiB, then in a temporary file), and hands moto a form of
exactly the fields it checked and the file. A refusal answers with S3's status, error code and message (AWS's POST
policy documentation, and the errors S3 is seen to return for each case).

The access key it knows is the one this process was given (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``), read at each request: the local stack gives moto the credentials it gives every handler.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import IO, Any
from xml.etree import ElementTree

from botocore.auth import HmacV1Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from werkzeug.http import dump_options_header, parse_options_header
from werkzeug.sansio.multipart import NEED_DATA, Data, Epilogue, Event, Field, File, MultipartDecoder
from werkzeug.wsgi import get_input_stream

ALGORITHM = "AWS4-HMAC-SHA256"
# S3's limit on the form fields before the file (MaxPostPreDataLengthExceeded past it)
MAX_FIELDS_BYTES = 20 * 1024
# how much of a refused body is still read, so that the client gets the answer instead of a reset connection
MAX_DRAINED_BYTES = 256 * 1024 * 1024
_CHUNK_BYTES = 64 * 1024
_SPOOLED_IN_MEMORY_BYTES = 1024 * 1024


class PostRefused(Exception):
    """S3's refusal of a POST Object: its status, error code, message and the error's other elements."""

    def __init__(self, status: int, code: str, message: str, **details: object) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def xml(self) -> bytes:
        error = ElementTree.Element("Error")
        for name, value in {"Code": self.code, "Message": self.message, **self.details}.items():
            ElementTree.SubElement(error, name).text = str(value)
        return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(error)


def _invalid_according_to_policy(reason: str) -> PostRefused:
    return PostRefused(403, "AccessDenied", f"Invalid according to Policy: {reason}")


def _invalid_policy(reason: str) -> PostRefused:
    return PostRefused(400, "InvalidPolicyDocument", f"Invalid Policy: {reason}")


def _missing_field(name: str) -> PostRefused:
    return PostRefused(
        400,
        "InvalidArgument",
        f"Bucket POST must contain a field named '{name}'.  If it is specified, please check the order of the fields.",
        ArgumentName=name,
        ArgumentValue="",
    )


def _malformed() -> PostRefused:
    return PostRefused(
        400, "MalformedPOSTRequest", "The body of your POST request is not well-formed multipart/form-data."
    )


@dataclass(frozen=True)
class KnownCredentials:
    secret_key: str
    token: str | None = None


CredentialsLookup = Callable[[str], KnownCredentials | None]


def credentials_from_environment(access_key: str) -> KnownCredentials | None:
    """This process's credentials when ``access_key`` is theirs (read now: a test may set them after the start)."""
    if not access_key or access_key != os.environ.get("AWS_ACCESS_KEY_ID"):
        return None
    return KnownCredentials(os.environ.get("AWS_SECRET_ACCESS_KEY", ""), os.environ.get("AWS_SESSION_TOKEN") or None)


def policy_signature_v2(policy: str, secret_key: str) -> str:
    """The signature version 2 of a POST policy (base64 HMAC-SHA1), as botocore computes it."""
    return str(HmacV1Auth(Credentials("", secret_key)).sign_string(policy))


def policy_signature(policy: str, secret_key: str, day: str, region: str) -> str:
    """The signature version 4 of a POST policy: botocore's own derivation, for the credential scope's day and
    region (what ``generate_presigned_post`` signs with)."""
    request = AWSRequest()
    request.context["timestamp"] = day  # SigV4 takes the scope's day from the request's timestamp
    return str(SigV4Auth(Credentials("", secret_key), "s3", region).signature(policy, request))


@dataclass(frozen=True)
class SizeRange:
    """The file sizes a policy allows (its content-length-range conditions, all of them)."""

    minimum: int = 0
    maximum: int | None = None

    def check(self, size: int) -> None:
        if self.maximum is not None and size > self.maximum:
            raise PostRefused(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size",
                ProposedSize=size,
                MaxSizeAllowed=self.maximum,
            )
        if size < self.minimum:
            raise PostRefused(
                400,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size",
                ProposedSize=size,
                MinSizeAllowed=self.minimum,
            )


@dataclass(frozen=True)
class _Condition:
    operator: str  # "eq" or "starts-with"
    name: str  # as the policy writes it, without its "$"
    value: str

    def holds(self, values: list[str]) -> bool:
        if self.operator == "eq":
            return bool(values) and all(value == self.value for value in values)
        # an absent field starts with "" only: starts-with "" is how a policy allows any value
        return all(value.startswith(self.value) for value in values or [""])

    def __str__(self) -> str:
        return json.dumps([self.operator, f"${self.name}", self.value])


def _size_range(condition: list[Any]) -> tuple[int, int]:
    if len(condition) != 3 or any(
        not isinstance(bound, int) or isinstance(bound, bool) or bound < 0 for bound in condition[1:]
    ):
        raise _invalid_policy(f"Invalid content-length-range: {json.dumps(condition)}")
    return condition[1], condition[2]


def _match(condition: object) -> _Condition:
    """An exact-match ({"field": value}, ["eq", "$field", value]) or starts-with condition."""
    if isinstance(condition, dict):
        if len(condition) != 1:
            raise _invalid_policy(
                "Invalid Simple-Condition: Simple-Conditions must have exactly one property specified."
            )
        ((name, value),) = condition.items()
        operator, field = "eq", f"${name}"
    elif isinstance(condition, list) and len(condition) == 3 and isinstance(condition[0], str):
        operator, field, value = condition[0].lower(), condition[1], condition[2]
    else:
        operator, field, value = "", "", None
    if operator not in ("eq", "starts-with") or not isinstance(field, str) or not field.startswith("$"):
        raise _invalid_policy(f"Invalid Condition: {json.dumps(condition)}")
    if not isinstance(value, str):
        raise _invalid_policy(f"Condition value must be a string: {json.dumps(condition)}")
    return _Condition(operator, field[1:], value)


def _parse_conditions(conditions: object) -> tuple[list[_Condition], SizeRange]:
    if not isinstance(conditions, list):
        raise _invalid_policy("Policy missing conditions.")
    matches: list[_Condition] = []
    minimum, maximum = 0, None
    for condition in conditions:
        if isinstance(condition, list) and condition and condition[0] == "content-length-range":
            low, high = _size_range(condition)
            minimum, maximum = max(minimum, low), high if maximum is None else min(maximum, high)
        else:
            matches.append(_match(condition))
    return matches, SizeRange(minimum, maximum)


def _decode_policy(encoded: str) -> dict[str, Any]:
    try:
        policy = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):  # not base64, not UTF-8, not JSON (a 5,000-digit number too)
        raise _invalid_policy("Invalid JSON.") from None
    if not isinstance(policy, dict):
        raise _invalid_policy("Invalid JSON.")
    return policy


def _check_expiration(policy: dict[str, Any], now: datetime) -> None:
    expiration = policy.get("expiration")
    if not isinstance(expiration, str):
        raise _invalid_policy("Policy missing expiration.")
    try:
        expires = datetime.fromisoformat(expiration)
    except ValueError:
        raise _invalid_policy(f"Invalid 'expiration' value: '{expiration}'") from None
    if expires.tzinfo is None:  # ISO 8601 GMT is what S3 asks for
        expires = expires.replace(tzinfo=UTC)
    if expires <= now:
        raise _invalid_according_to_policy("Policy expired.")


def _known_credentials(form: dict[str, list[str]], access_key: str, lookup: CredentialsLookup) -> KnownCredentials:
    known = lookup(access_key)
    token = form.get("x-amz-security-token", [None])[0]
    if known is None or (known.token is not None and token is None):  # a session's key is nothing without its token
        raise PostRefused(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            AWSAccessKeyId=access_key,
        )
    if token is not None and not hmac.compare_digest(token.encode(), (known.token or "").encode()):
        raise PostRefused(400, "InvalidToken", "The provided token is malformed or otherwise invalid.")
    return known


def _signature_does_not_match() -> PostRefused:
    return PostRefused(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    )


def _check_v4_signature(form: dict[str, list[str]], lookup: CredentialsLookup) -> None:
    algorithm, credential = form["x-amz-algorithm"][0], form["x-amz-credential"][0]
    if algorithm != ALGORITHM:
        raise PostRefused(
            400,
            "InvalidArgument",
            f'X-Amz-Algorithm only supports "{ALGORITHM}"',
            ArgumentName="X-Amz-Algorithm",
            ArgumentValue=algorithm,
        )
    scope = credential.split("/")
    if len(scope) != 5 or not scope[0] or scope[3] != "s3" or scope[4] != "aws4_request":
        raise PostRefused(
            400,
            "InvalidArgument",
            "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
            'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".',
            ArgumentName="X-Amz-Credential",
            ArgumentValue=credential,
        )
    access_key, day, region = scope[:3]
    known = _known_credentials(form, access_key, lookup)
    expected = policy_signature(form["policy"][0], known.secret_key, day, region)
    if not hmac.compare_digest(expected.encode(), form["x-amz-signature"][0].encode()):
        raise _signature_does_not_match()


def _check_v2_signature(form: dict[str, list[str]], lookup: CredentialsLookup) -> None:
    access_key = form["awsaccesskeyid"][0]
    known = _known_credentials(form, access_key, lookup)
    expected = policy_signature_v2(form["policy"][0], known.secret_key)
    if not hmac.compare_digest(expected.encode(), form["signature"][0].encode()):
        raise _signature_does_not_match()


@dataclass(frozen=True)
class _Scheme:
    """A way to sign a POST: the fields it needs (in the order S3 asks for them), those its policy need not name,
    and its signature check."""

    required: tuple[str, ...]
    unnamed: frozenset[str]
    check_signature: Callable[[dict[str, list[str]], CredentialsLookup], None]


_V4 = _Scheme(
    ("policy", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature"),
    frozenset({"policy", "x-amz-signature"}),
    _check_v4_signature,
)
_V2 = _Scheme(
    ("awsaccesskeyid", "policy", "signature"), frozenset({"policy", "awsaccesskeyid", "signature"}), _check_v2_signature
)
# how S3's documentation spells the fields it says are missing
_SPELLING = {
    "policy": "Policy",
    "x-amz-algorithm": "X-Amz-Algorithm",
    "x-amz-credential": "X-Amz-Credential",
    "x-amz-date": "X-Amz-Date",
    "x-amz-signature": "X-Amz-Signature",
    "awsaccesskeyid": "AWSAccessKeyId",
    "signature": "Signature",
}


def _scheme(form: dict[str, list[str]]) -> _Scheme:
    if any(name in form for name in _V4.required if name != "policy"):
        return _V4
    if any(name in form for name in _V2.required):
        return _V2  # a policy without any signature field: S3 asks for the AWSAccessKeyId first
    raise PostRefused(403, "AccessDenied", "Access Denied")  # anonymous: no bucket here is public-writable


def check_form(
    fields: list[tuple[str, str]],
    *,
    bucket: str,
    filename: str,
    now: datetime,
    credentials_for: CredentialsLookup = credentials_from_environment,
) -> SizeRange:
    """Refuse (PostRefused) as S3 does unless these form fields, those before the file in their order, make a
    signed POST that their policy allows into ``bucket``; return the sizes the file may have.

    Signature version 4, or 2 (what boto3's presigned POSTs are in the regions that still take it, us-east-1 among
    them). Field names are case-insensitive, as S3 takes them; a field sent twice must pass its conditions twice.
    ``filename`` is the file's name, which stands for ``${filename}`` in the key."""
    form: dict[str, list[str]] = {}
    for name, value in fields:
        form.setdefault(name.lower(), []).append(value)
    if "key" not in form:
        raise _missing_field("key")
    scheme = _scheme(form)
    for name in scheme.required:
        if name not in form:
            raise _missing_field(_SPELLING[name])
    scheme.check_signature(form, credentials_for)
    policy = _decode_policy(form["policy"][0])
    _check_expiration(policy, now)
    conditions, sizes = _parse_conditions(policy.get("conditions"))
    # what the conditions are checked against: the key as it will be stored, and the bucket posted to
    subject = {**form, "key": [key.replace("${filename}", filename) for key in form["key"]]}
    subject["bucket"] = [bucket, *form.get("bucket", [])]
    for condition in conditions:
        if not condition.holds(subject.get(condition.name.lower(), [])):
            raise _invalid_according_to_policy(f"Policy Condition failed: {condition}")
    named = {condition.name.lower() for condition in conditions}
    extra = [name for name in form if name not in named | scheme.unnamed and not name.startswith("x-ignore-")]
    if extra:
        raise _invalid_according_to_policy(f"Extra input fields: {', '.join(extra)}")
    return sizes


def bucket_of(environ: dict[str, Any]) -> str:
    """The bucket a POST goes to: the path's first segment (path style, as the local stack's URLs are), else the
    host's first label (virtual-hosted style)."""
    segment = str(environ.get("PATH_INFO", "")).lstrip("/").split("/", 1)[0]
    return segment or str(environ.get("HTTP_HOST", "")).split(".", 1)[0]


class _Body:
    """What moto is given: a multipart form written as it is checked, in memory up to 1 MiB, then on disk."""

    def __init__(self, boundary: bytes) -> None:
        self.boundary = boundary
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOLED_IN_MEMORY_BYTES)  # noqa: SIM115

    def part(self, name: str, filename: str | None = None, value: bytes = b"") -> None:
        options = {"name": name} if filename is None else {"name": name, "filename": filename}
        disposition = dump_options_header("form-data", options)
        self.file.write(b"--%s\r\nContent-Disposition: %s\r\n\r\n%s" % (self.boundary, disposition.encode(), value))

    def end_part(self) -> None:
        self.file.write(b"\r\n")

    def finish(self) -> int:
        self.file.write(b"--%s--\r\n" % self.boundary)
        length = self.file.tell()
        self.file.seek(0)
        return length


class _Stream:
    """The request body as multipart events, counting what it reads."""

    def __init__(self, environ: dict[str, Any], boundary: bytes) -> None:
        self._input = get_input_stream(environ)  # no further than Content-Length, or to the end of a chunked body
        self._decoder = MultipartDecoder(boundary)
        self.bytes_read = 0

    def events(self) -> Iterator[Event]:
        while True:
            try:
                event = self._decoder.next_event()
            except ValueError:  # the body ended inside a part, or a part has no Content-Disposition
                raise _malformed() from None
            if event is NEED_DATA:
                chunk = self._input.read(_CHUNK_BYTES)
                self.bytes_read += len(chunk)
                self._decoder.receive_data(chunk or None)
                continue
            yield event
            if isinstance(event, Epilogue):
                return

    def drain(self) -> None:
        """Read what is left of the body (up to a limit) and drop it."""
        while self.bytes_read < MAX_DRAINED_BYTES and (chunk := self._input.read(_CHUNK_BYTES)):
            self.bytes_read += len(chunk)


class PostPolicyApp:
    """WSGI middleware: a multipart POST (S3's POST Object) reaches ``app`` only if S3 would accept it."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        credentials_for: CredentialsLookup = credentials_from_environment,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._app = app
        self._credentials_for = credentials_for
        self._clock = clock

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        content_type, options = parse_options_header(environ.get("CONTENT_TYPE"))
        if environ.get("REQUEST_METHOD") != "POST" or content_type != "multipart/form-data":
            return self._app(environ, start_response)
        if not options.get("boundary"):
            return _answer(_malformed(), start_response)
        stream = _Stream(environ, options["boundary"].encode("latin-1"))
        body = _Body(options["boundary"].encode("latin-1"))
        try:
            try:
                length = self._receive(stream, body, bucket_of(environ))
            except PostRefused as refusal:
                return _answer(refusal, start_response)
            finally:
                stream.drain()
            checked = {
                **environ,
                "wsgi.input": body.file,
                "wsgi.input_terminated": False,
                "CONTENT_LENGTH": str(length),
            }
            checked.pop("HTTP_TRANSFER_ENCODING", None)
            return list(self._app(checked, start_response))  # moto has read the body when this returns
        finally:
            body.file.close()

    def _receive(self, stream: _Stream, body: _Body, bucket: str) -> int:
        """Check the form as it arrives and write it into ``body``; its length."""
        fields: list[tuple[str, str]] = []
        value = bytearray()
        fields_bytes = 0
        sizes: SizeRange | None = None
        file_bytes = 0
        for event in stream.events():
            if isinstance(event, Field | File) and event.name.lower() == "file":
                filename = event.filename if isinstance(event, File) else ""
                sizes = check_form(
                    fields, bucket=bucket, filename=filename, now=self._clock(), credentials_for=self._credentials_for
                )
                for name, text in fields:
                    body.part(name, value=text.encode())
                    body.end_part()
                body.part(event.name, filename)
            elif isinstance(event, Field | File):
                fields.append((event.name, ""))
                value.clear()
            elif isinstance(event, Data) and sizes is not None:
                file_bytes += len(event.data)
                if sizes.maximum is not None and file_bytes > sizes.maximum:
                    raise PostRefused(
                        400,
                        "EntityTooLarge",
                        "Your proposed upload exceeds the maximum allowed size",
                        ProposedSize=file_bytes + _rest_of_the_file(stream),
                        MaxSizeAllowed=sizes.maximum,
                    )
                body.file.write(event.data)
                if not event.more_data:
                    break  # S3 ignores the fields after the file
            elif isinstance(event, Data) and fields:
                fields_bytes += len(event.data)
                if fields_bytes > MAX_FIELDS_BYTES:
                    raise PostRefused(
                        400,
                        "MaxPostPreDataLengthExceeded",
                        "Your POST request fields preceeding the upload file was too large.",
                        MaxPostPreDataLength=MAX_FIELDS_BYTES,
                    )
                value.extend(event.data)
                if not event.more_data:
                    try:
                        fields[-1] = (fields[-1][0], value.decode())
                    except UnicodeDecodeError:
                        raise _malformed() from None
        if sizes is None:  # no file: what is wrong with the fields comes first, as it would with one
            check_form(fields, bucket=bucket, filename="", now=self._clock(), credentials_for=self._credentials_for)
            raise PostRefused(
                400,
                "InvalidArgument",
                "POST requires exactly one file upload per request.",
                ArgumentName="file",
                ArgumentValue=0,
            )
        sizes.check(file_bytes)
        body.end_part()
        return body.finish()


def _rest_of_the_file(stream: _Stream) -> int:
    """The bytes of the file part still to come, counted and dropped (as far as the drain limit)."""
    rest = 0
    for event in stream.events():
        if not isinstance(event, Data) or stream.bytes_read > MAX_DRAINED_BYTES:
            break
        rest += len(event.data)
        if not event.more_data:
            break
    return rest


def _answer(refusal: PostRefused, start_response: Callable[..., Any]) -> list[bytes]:
    body = refusal.xml()
    status = HTTPStatus(refusal.status)
    start_response(
        f"{status.value} {status.phrase}", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
    )
    return [body]
