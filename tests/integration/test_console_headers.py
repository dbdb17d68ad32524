"""Through the real handler: the web console's Content-Security-Policy lets the page talk to this API and to where
POST /v1/uploads sends its browser, nothing else (it allowed any https: host, and any port on 127.0.0.1 even when
deployed), and the page refuses to be framed (X-Frame-Options as well as frame-ancestors)."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.support.api import assert_ok

BUCKET_VARIABLE = "AUDIO_BUCKET_NAME"


def directives(policy: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for directive in policy.split(";"):
        name, *sources = directive.split()
        parsed[name] = sources
    return parsed


def console_headers(api) -> dict[str, list[str]]:
    answers = [api.call("GET", "/console")]
    answers += [
        api.call("GET", f"/console/{name}", resource="/console/{asset}") for name in ("console.js", "console.css")
    ]
    for answer in answers:
        assert_ok(answer)
        assert answer.header("x-frame-options") == "DENY"
    policies = {answer.header("content-security-policy") for answer in answers}
    assert len(policies) == 1  # every file of the console carries the same policy
    return directives(policies.pop())


def upload_origin(api, accounts) -> str:
    api_key, _ = accounts.new_key(10)
    reply = api.call(
        "POST", "/v1/uploads", body=b'{"start_job": false}', content_type="application/json", api_key=api_key
    )
    assert reply.status == 201, reply.text
    parts = urllib.parse.urlsplit(reply.json()["upload_url"])
    return f"{parts.scheme}://{parts.netloc}"


def test_on_the_local_stack_connect_src_is_self_and_the_local_s3_the_uploads_go_to(load_api, closed_port_url, accounts):
    api = load_api(closed_port_url)
    policy = console_headers(api)
    origin = upload_origin(api, accounts)
    assert origin.startswith("http://127.0.0.1:")
    assert policy["connect-src"] == ["'self'", origin]  # that port, not http://127.0.0.1:* nor localhost:*
    assert policy["frame-ancestors"] == ["'none'"] and policy["default-src"] == ["'none'"]


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-1"])
def test_when_deployed_connect_src_is_self_and_the_buckets_endpoints_only(
    load_api, closed_port_url, monkeypatch, region
):
    # as on AWS: no endpoint override, so S3's own names (presigning reads no network, so no bucket is needed)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    api = load_api(closed_port_url, AWS_REGION=region, AWS_DEFAULT_REGION=region)
    bucket = api.module.settings.audio_bucket_name
    connect = console_headers(api)["connect-src"]
    presigned = api.module.wiring.audio_store.presigned_upload("key_0123456789abcdef", "upl_" + "0" * 32)["url"]
    assert presigned.startswith(f"https://{bucket}.s3.amazonaws.com/")
    assert connect == ["'self'", f"https://{bucket}.s3.amazonaws.com", f"https://{bucket}.s3.{region}.amazonaws.com"]
    assert not any(
        source in ("https:", "http:", "*") or "127.0.0.1" in source or "localhost" in source for source in connect
    )
