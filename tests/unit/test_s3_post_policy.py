"""local_stack.s3_post_policy: the local S3 refuses a presigned POST as S3 does, and passes what S3 would take.

The forms are made by boto3's generate_presigned_post, as storage.py makes them: signature version 2 (boto3's
default in us-east-1, what the API hands out today) and version 4 (``signature_version="s3v4"``).
"""

from __future__ import annotations

import base64
import io
import json
import tracemalloc
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from xml.etree import ElementTree

import boto3
import pytest
from botocore.config import Config
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app
from werkzeug.wrappers import Request, Response

from local_stack.s3_post_policy import (
    MAX_FIELDS_BYTES,
    KnownCredentials,
    PostPolicyApp,
    PostRefused,
    SizeRange,
    check_form,
    policy_signature,
    policy_signature_v2,
)

BUCKET = "infery-local-audiobucket"
KEY = "uploads/key_0123456789abcdef/upl_1"
OTHER_KEY = "uploads/key_fedcba9876543210/upl_2"
MAX_BYTES = 25_000_000
ACCESS_KEY, SECRET_KEY, TOKEN = "local", "local-secret", "local-token"
SCHEMES = ("v2", "v4")
BOUNDARY = "form-boundary-0123456789"


def known(access_key: str) -> KnownCredentials | None:
    return KnownCredentials(SECRET_KEY, TOKEN) if access_key == ACCESS_KEY else None


@cache
def s3_client(scheme: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY, token: str | None = TOKEN):
    """An S3 client that only signs (generate_presigned_post makes no request)."""
    return boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=token,
        config=Config(signature_version="s3v4") if scheme == "v4" else None,
    )


def presigned(scheme: str, key: str = KEY, expires_in: int = 900, maximum: int = MAX_BYTES, **client) -> dict:
    """What AudioStore.presigned_upload hands out: exactly this key, 1 byte to ``maximum``."""
    return s3_client(scheme, **client).generate_presigned_post(
        Bucket=BUCKET, Key=key, Conditions=[["content-length-range", 1, maximum]], ExpiresIn=expires_in
    )


def fields_of(post: dict, **changes: str | None) -> list[tuple[str, str]]:
    """The post's form fields in order, with some replaced (a value), removed (None) or added at the end."""
    fields = {**post["fields"], **changes}
    return [(name, value) for name, value in fields.items() if value is not None]


def expiration(post: dict) -> datetime:
    return datetime.fromisoformat(json.loads(base64.b64decode(post["fields"]["policy"]))["expiration"])


NOW = datetime.now(UTC)


def check(fields: list[tuple[str, str]], *, bucket: str = BUCKET, filename: str = "meeting.wav", now=NOW):
    return check_form(fields, bucket=bucket, filename=filename, now=now, credentials_for=known)


def refusal(fields: list[tuple[str, str]], **options: Any) -> PostRefused:
    with pytest.raises(PostRefused) as raised:
        check(fields, **options)
    return raised.value


def signature_field(scheme: str) -> str:
    return "signature" if scheme == "v2" else "x-amz-signature"


def signed(scheme: str, post: dict, policy: str) -> list[tuple[str, str]]:
    """The post's fields with another policy, signed with the right key (what only the secret's holder can do)."""
    if scheme == "v2":
        return fields_of(post, policy=policy, signature=policy_signature_v2(policy, SECRET_KEY))
    day, region = post["fields"]["x-amz-credential"].split("/")[1:3]
    return fields_of(post, policy=policy, **{"x-amz-signature": policy_signature(policy, SECRET_KEY, day, region)})


def encoded(policy: dict) -> str:
    return base64.b64encode(json.dumps(policy).encode()).decode()


# --- the policy checker --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_presigned_post_as_boto3_makes_it_is_accepted_with_its_size_range(scheme: str) -> None:
    post = presigned(scheme)
    assert check(fields_of(post)) == SizeRange(1, MAX_BYTES)


def test_boto3_signs_version_2_by_default_in_us_east_1_and_version_4_when_asked() -> None:
    assert {"AWSAccessKeyId", "signature"} <= set(presigned("v2")["fields"])
    assert {"x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature"} <= set(presigned("v4")["fields"])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_another_keys_prefix_fails_the_key_condition(scheme: str) -> None:
    refused = refusal(fields_of(presigned(scheme), key=OTHER_KEY))
    assert (refused.status, refused.code) == (403, "AccessDenied")
    assert refused.message == f'Invalid according to Policy: Policy Condition failed: ["eq", "$key", "{KEY}"]'


@pytest.mark.parametrize("scheme", SCHEMES)
def test_another_bucket_fails_the_bucket_condition(scheme: str) -> None:
    refused = refusal(fields_of(presigned(scheme)), bucket="someone-elses-bucket")
    assert refused.status == 403
    assert refused.message == f'Invalid according to Policy: Policy Condition failed: ["eq", "$bucket", "{BUCKET}"]'


@pytest.mark.parametrize("scheme", SCHEMES)
def test_an_extra_field_is_refused_but_not_an_x_ignore_one(scheme: str) -> None:
    post = presigned(scheme)
    refused = refusal(fields_of(post, **{"x-amz-meta-owner": "key_fedcba9876543210"}))
    assert (refused.status, refused.code) == (403, "AccessDenied")
    assert refused.message == "Invalid according to Policy: Extra input fields: x-amz-meta-owner"
    assert check(fields_of(post, **{"x-ignore-note": "anything"})) == SizeRange(1, MAX_BYTES)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_tampered_policy_does_not_match_its_signature(scheme: str) -> None:
    post = presigned(scheme)
    policy = json.loads(base64.b64decode(post["fields"]["policy"]))
    policy["conditions"] = [  # 1 TB instead of 25 MB
        ["content-length-range", 1, 10**12] if isinstance(condition, list) else condition
        for condition in policy["conditions"]
    ]
    refused = refusal(fields_of(post, policy=encoded(policy)))
    assert (refused.status, refused.code) == (403, "SignatureDoesNotMatch")
    assert refused.message.startswith("The request signature we calculated does not match the signature you provided")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_signature_by_an_unknown_access_key_is_refused(scheme: str) -> None:
    post = presigned(scheme, access_key="AKIDSOMEONEELSE", secret_key="their-secret")
    refused = refusal(fields_of(post))
    assert (refused.status, refused.code) == (403, "InvalidAccessKeyId")
    assert refused.details["AWSAccessKeyId"] == "AKIDSOMEONEELSE"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_right_key_signing_with_another_secret_does_not_match(scheme: str) -> None:
    refused = refusal(fields_of(presigned(scheme, secret_key="a-guess")))
    assert (refused.status, refused.code) == (403, "SignatureDoesNotMatch")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_an_expired_policy_is_refused(scheme: str) -> None:
    post = presigned(scheme, expires_in=60)
    expires = expiration(post)
    assert check(fields_of(post), now=expires - timedelta(seconds=1)) == SizeRange(1, MAX_BYTES)
    refused = refusal(fields_of(post), now=expires + timedelta(seconds=1))
    assert (refused.status, refused.code, refused.message) == (
        403,
        "AccessDenied",
        "Invalid according to Policy: Policy expired.",
    )


@pytest.mark.parametrize(("scheme", "argument"), [("v2", "Signature"), ("v4", "X-Amz-Signature")])
def test_a_post_without_its_signature_is_an_invalid_argument(scheme: str, argument: str) -> None:
    refused = refusal(fields_of(presigned(scheme), **{signature_field(scheme): None}))
    assert (refused.status, refused.code) == (400, "InvalidArgument")
    assert refused.message.startswith(f"Bucket POST must contain a field named '{argument}'.")
    assert refused.details["ArgumentName"] == argument


def test_a_policy_without_any_signature_field_asks_for_the_access_key_id() -> None:
    post = presigned("v2")
    refused = refusal(fields_of(post, AWSAccessKeyId=None, signature=None))
    assert (refused.status, refused.code, refused.details["ArgumentName"]) == (400, "InvalidArgument", "AWSAccessKeyId")


def test_a_post_with_no_authentication_at_all_is_anonymous_and_denied() -> None:
    refused = refusal([("key", KEY)])
    assert (refused.status, refused.code, refused.message) == (403, "AccessDenied", "Access Denied")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_post_without_a_key_is_an_invalid_argument(scheme: str) -> None:
    refused = refusal(fields_of(presigned(scheme), key=None))
    assert (refused.status, refused.code, refused.details["ArgumentName"]) == (400, "InvalidArgument", "key")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_session_key_needs_its_own_token(scheme: str) -> None:
    post = presigned(scheme)
    missing = refusal(fields_of(post, **{"x-amz-security-token": None}))
    assert (missing.status, missing.code) == (403, "InvalidAccessKeyId")
    wrong = refusal(fields_of(post, **{"x-amz-security-token": "another-token"}))
    assert (wrong.status, wrong.code) == (400, "InvalidToken")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_field_names_are_case_insensitive_as_s3_takes_them(scheme: str) -> None:
    fields = [(name.upper() if name != "key" else "Key", value) for name, value in fields_of(presigned(scheme))]
    assert check(fields) == SizeRange(1, MAX_BYTES)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_field_sent_twice_must_pass_its_condition_both_times(scheme: str) -> None:
    fields = [*fields_of(presigned(scheme)), ("key", OTHER_KEY)]
    refused = refusal(fields)
    assert refused.message.startswith("Invalid according to Policy: Policy Condition failed:")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_file_name_stands_for_filename_in_a_starts_with_key(scheme: str) -> None:
    post = presigned(scheme, key="uploads/key_0123456789abcdef/${filename}")
    assert check(fields_of(post), filename="meeting.wav") == SizeRange(1, MAX_BYTES)
    refused = refusal(fields_of(post, key="uploads/key_fedcba9876543210/${filename}"))
    assert refused.message == (
        'Invalid according to Policy: Policy Condition failed: ["starts-with", "$key", "uploads/key_0123456789abcdef/"]'
    )


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("not base64!", "Invalid Policy: Invalid JSON."),
        (encoded({"expiration": "2099-01-01T00:00:00Z", "conditions": [["eq", "$key", 1]]}), "Condition value"),
        (encoded({"expiration": "2099-01-01T00:00:00Z", "conditions": [{"key": KEY, "acl": "x"}]}), "Simple-Condit"),
        (encoded({"expiration": "2099-01-01T00:00:00Z", "conditions": [["content-length-range", 1, "2"]]}), "range"),
        (encoded({"expiration": "2099-01-01T00:00:00Z", "conditions": [["matches", "$key", KEY]]}), "Invalid Condi"),
        (encoded({"conditions": []}), "Invalid Policy: Policy missing expiration."),
        (encoded({"expiration": "soon", "conditions": []}), "Invalid Policy: Invalid 'expiration' value: 'soon'"),
        (encoded({"expiration": "2099-01-01T00:00:00Z"}), "Invalid Policy: Policy missing conditions."),
        (base64.b64encode(b'{"expiration": ' + b"9" * 5000 + b"}").decode(), "Invalid Policy: Invalid JSON."),
    ],
)
def test_a_signed_policy_that_is_not_a_policy_is_an_invalid_policy_document(scheme: str, policy: str, message: str):
    refused = refusal(signed(scheme, presigned(scheme), policy))
    assert (refused.status, refused.code) == (400, "InvalidPolicyDocument")
    assert message in refused.message


def test_sizes_are_checked_against_the_range_at_its_bounds() -> None:
    sizes = SizeRange(1, MAX_BYTES)
    sizes.check(1)
    sizes.check(MAX_BYTES)
    with pytest.raises(PostRefused) as too_large:
        sizes.check(MAX_BYTES + 1)
    assert (too_large.value.status, too_large.value.code) == (400, "EntityTooLarge")
    assert too_large.value.details == {"ProposedSize": MAX_BYTES + 1, "MaxSizeAllowed": MAX_BYTES}
    with pytest.raises(PostRefused) as too_small:
        sizes.check(0)
    assert (too_small.value.status, too_small.value.code) == (400, "EntityTooSmall")
    assert too_small.value.details == {"ProposedSize": 0, "MinSizeAllowed": 1}


def test_a_refusal_is_s3s_error_document() -> None:
    document = ElementTree.fromstring(PostRefused(400, "EntityTooLarge", "Too big", ProposedSize=2).xml())
    assert document.tag == "Error"
    assert [(child.tag, child.text) for child in document] == [
        ("Code", "EntityTooLarge"),
        ("Message", "Too big"),
        ("ProposedSize", "2"),
    ]


# --- the middleware in front of moto ---------------------------------------------------------------------------


class Moto:
    """Stands in for moto: records the form it is given and answers as moto does (204)."""

    def __init__(self) -> None:
        self.forms: list[tuple[list[tuple[str, str]], dict[str, tuple[str | None, bytes]]]] = []
        self.passed_through: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        request = Request(environ)
        if request.mimetype == "multipart/form-data":
            files = {name: (upload.filename, upload.read()) for name, upload in request.files.items()}
            self.forms.append((list(request.form.items(multi=True)), files))
        else:
            self.passed_through.append(f"{request.method} {request.path} {request.get_data()!r}")
        start_response("204 No Content", [])
        return [b""]


def form_parts(fields: list[tuple[str, str]], filename: str = "meeting.wav") -> tuple[bytes, bytes]:
    """The multipart body before the file's content, and after it (a browser's form: fields first, file last)."""
    head = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields
    )
    head += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: audio/wav\r\n\r\n"
    ).encode()
    return head, f"\r\n--{BOUNDARY}--\r\n".encode()


def post_form(app: PostPolicyApp, body: bytes | io.BufferedIOBase, length: int | None = None) -> Response:
    """POST a form body to the bucket, as a WSGI server hands it over: a stream of Content-Length bytes."""
    stream = io.BytesIO(body) if isinstance(body, bytes) else body
    environ = EnvironBuilder(f"/{BUCKET}", method="POST").get_environ()
    environ.update(
        {
            "wsgi.input": stream,
            "CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}",
            "CONTENT_LENGTH": str(len(body) if isinstance(body, bytes) else length),
        }
    )
    app_iter, status, headers = run_wsgi_app(app, environ, buffered=True)
    return Response(app_iter, status, headers)


def error_code(response: Response) -> tuple[int, str | None]:
    return response.status_code, ElementTree.fromstring(response.data).findtext("Code")


@pytest.fixture
def moto() -> Moto:
    return Moto()


@pytest.fixture
def app(moto: Moto) -> PostPolicyApp:
    return PostPolicyApp(moto, credentials_for=known)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_an_accepted_post_reaches_moto_with_its_fields_and_file(scheme: str, app: PostPolicyApp, moto: Moto) -> None:
    post = presigned(scheme)
    head, tail = form_parts(fields_of(post))
    response = post_form(app, head + b"RIFF audio" + tail)
    assert response.status_code == 204
    [(fields, files)] = moto.forms
    assert fields == fields_of(post)
    assert files == {"file": ("meeting.wav", b"RIFF audio")}


def test_a_file_of_exactly_the_maximum_is_taken_and_one_byte_more_is_not(app: PostPolicyApp, moto: Moto) -> None:
    head, tail = form_parts(fields_of(presigned("v4", maximum=1000)))
    assert post_form(app, head + b"a" * 1000 + tail).status_code == 204
    refused = post_form(app, head + b"a" * 1001 + tail)
    assert error_code(refused) == (400, "EntityTooLarge")
    assert ElementTree.fromstring(refused.data).findtext("ProposedSize") == "1001"
    assert [files["file"][1] for _, files in moto.forms] == [b"a" * 1000]  # the refused one never reached moto


def test_an_empty_file_is_too_small(app: PostPolicyApp, moto: Moto) -> None:
    head, tail = form_parts(fields_of(presigned("v2")))
    assert error_code(post_form(app, head + tail)) == (400, "EntityTooSmall")
    assert moto.forms == []


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_refused_form_never_reaches_moto(scheme: str, app: PostPolicyApp, moto: Moto) -> None:
    post = presigned(scheme)
    for fields, expected in [
        (fields_of(post, key=OTHER_KEY), (403, "AccessDenied")),
        (fields_of(post, **{"x-amz-meta-owner": "me"}), (403, "AccessDenied")),
        (fields_of(post, **{signature_field(scheme): None}), (400, "InvalidArgument")),
        ([("key", OTHER_KEY)], (403, "AccessDenied")),
    ]:
        head, tail = form_parts(fields)
        assert error_code(post_form(app, head + b"RIFF audio" + tail)) == expected
    assert moto.forms == []


def test_fields_after_the_file_are_ignored_as_s3_ignores_them(app: PostPolicyApp, moto: Moto) -> None:
    post = presigned("v2")
    head, tail = form_parts(fields_of(post))
    after = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="key"\r\n\r\n{OTHER_KEY}\r\n'.encode()
    body = head + b"RIFF audio" + b"\r\n" + after + tail.removeprefix(b"\r\n")
    assert post_form(app, body).status_code == 204
    [(fields, _)] = moto.forms
    assert dict(fields)["key"] == KEY and [value for name, value in fields if name == "key"] == [KEY]


def test_a_form_without_a_file_is_refused(app: PostPolicyApp, moto: Moto) -> None:
    head, _ = form_parts(fields_of(presigned("v4")))
    fields_only = head.split(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"'.encode())[0]
    response = post_form(app, fields_only + f"--{BOUNDARY}--\r\n".encode())
    assert error_code(response) == (400, "InvalidArgument")
    assert ElementTree.fromstring(response.data).findtext("ArgumentName") == "file"
    assert moto.forms == []


def test_a_body_cut_short_is_malformed(app: PostPolicyApp, moto: Moto) -> None:
    head, _ = form_parts(fields_of(presigned("v4")))
    assert error_code(post_form(app, head + b"RIFF au")) == (400, "MalformedPOSTRequest")
    assert moto.forms == []


def test_fields_before_the_file_are_limited_as_s3_limits_them(app: PostPolicyApp, moto: Moto) -> None:
    head, tail = form_parts([*fields_of(presigned("v4")), ("x-ignore-padding", "x" * MAX_FIELDS_BYTES)])
    assert error_code(post_form(app, head + b"RIFF" + tail)) == (400, "MaxPostPreDataLengthExceeded")
    assert moto.forms == []


def test_other_requests_pass_through_untouched(app: PostPolicyApp, moto: Moto) -> None:
    client = Client(app)
    assert client.get(f"/{BUCKET}/{KEY}").status_code == 204
    assert client.post("/", data=b'{"TableName": "t"}', content_type="application/x-amz-json-1.0").status_code == 204
    assert moto.passed_through == [f"GET /{BUCKET}/{KEY} b''", 'POST / b\'{"TableName": "t"}\'']


class LazyBody(io.RawIOBase):
    """A request body made as it is read: nothing holds it whole, so what is held is the middleware's."""

    def __init__(self, head: bytes, size: int, tail: bytes) -> None:
        self._parts = [head, size, tail]
        self.length = len(head) + size + len(tail)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._parts:
            part = self._parts[0]
            if isinstance(part, int):
                count = min(part, len(buffer))
                buffer[:count] = b"\0" * count
                self._parts[0] = part - count
            else:
                count = min(len(part), len(buffer))
                buffer[:count] = part[:count]
                self._parts[0] = part[count:]
            if count:
                return count
            self._parts.pop(0)
        return 0


def test_a_26_mb_file_is_refused_without_holding_it(app: PostPolicyApp, moto: Moto) -> None:
    head, tail = form_parts(fields_of(presigned("v2")))
    body = io.BufferedReader(LazyBody(head, 26_000_000, tail), buffer_size=64 * 1024)
    tracemalloc.start()
    try:
        response = post_form(app, body, length=len(head) + 26_000_000 + len(tail))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error_code(response) == (400, "EntityTooLarge")
    assert ElementTree.fromstring(response.data).findtext("ProposedSize") == "26000000"
    assert ElementTree.fromstring(response.data).findtext("MaxSizeAllowed") == str(MAX_BYTES)
    assert moto.forms == []
    assert peak < 4_000_000, f"{peak:,} bytes held for a 26 MB body"
