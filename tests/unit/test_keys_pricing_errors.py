from __future__ import annotations

import pytest
from infery import errors
from infery.credits import Pricing
from infery.keys import (
    api_key_from_authorization,
    generate_api_key,
    hash_api_key,
    key_id_for,
    mask_api_key,
)


@pytest.mark.parametrize(("seconds", "per_credit", "minimum", "expected"), [
    (12.5, 5, 1, 3),  # the public doc's example
    (10.0, 5, 1, 2),
    (10.0000001, 5, 1, 2),  # float noise is not a started block
    (10.01, 5, 1, 3),
    (0.0, 5, 1, 1),
    (0.0, 5, 0, 0),
    (4.0, 5, 2, 2),
    (61.0, 60, 1, 2),
    (3600.0, 1, 1, 3600),
])
def test_one_credit_per_started_block_with_a_minimum(seconds, per_credit, minimum, expected):
    pricing = Pricing(seconds_per_credit=per_credit, min_credits_per_request=minimum)
    assert pricing.credits_for(seconds) == expected


GOOD_KEY = "inf_" + "a1B2-c3_D4" * 4


@pytest.mark.parametrize("header", [f"Bearer {GOOD_KEY}", f"bearer {GOOD_KEY}", f"  Bearer   {GOOD_KEY} "])
def test_bearer_keys_are_read(header):
    assert api_key_from_authorization(header) == GOOD_KEY


@pytest.mark.parametrize(("header", "code"), [
    (None, "missing_api_key"),
    ("", "missing_api_key"),
    ("Basic dXNlcjpwYXNz", "invalid_api_key"),
    ("Bearer", "invalid_api_key"),
    ("Bearer sk-proj-0123456789abcdefghij", "invalid_api_key"),
    ("Bearer inf_short", "invalid_api_key"),
    (f"Bearer {GOOD_KEY} extra", "invalid_api_key"),
    ("Bearer inf_" + "x" * 200, "invalid_api_key"),
])
def test_missing_or_malformed_keys_are_401(header, code):
    with pytest.raises(errors.AuthenticationFailed) as raised:
        api_key_from_authorization(header)
    assert raised.value.status_code == 401 and raised.value.code == code
    assert "inf_" + "x" * 20 not in raised.value.message


def test_generated_keys_are_unique_and_well_formed():
    keys = {generate_api_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(api_key_from_authorization(f"Bearer {key}") == key and len(key) >= 36 for key in keys)


def test_the_stored_hash_and_public_id_reveal_nothing_of_the_key():
    key = generate_api_key()
    digest = hash_api_key(key)
    assert digest == hash_api_key(key) and len(digest) == 64
    assert key[4:] not in digest and key_id_for(digest).startswith("key_") and key[4:12] not in key_id_for(digest)


def test_masking_shows_at_most_eight_leading_and_four_trailing_characters():
    key = generate_api_key()
    masked = mask_api_key(key)
    assert masked == key[:8] + "***" + key[-4:]
    assert key[8:-4] not in masked
    assert mask_api_key("inf_short") == "inf_***"


@pytest.mark.parametrize(("error_class", "status", "error_type"), [
    (errors.InvalidRequest, 400, "invalid_request_error"),
    (errors.AuthenticationFailed, 401, "invalid_request_error"),
    (errors.InsufficientCredits, 402, "insufficient_quota"),
    (errors.NotFound, 404, "invalid_request_error"),
    (errors.PayloadTooLarge, 413, "invalid_request_error"),
    (errors.UnsupportedMediaType, 415, "invalid_request_error"),
    (errors.InternalError, 500, "server_error"),
    (errors.ModelFailed, 502, "server_error"),
    (errors.ModelUnavailable, 503, "server_error"),
    (errors.ModelTimeout, 504, "server_error"),
])
def test_errors_have_openai_shape_and_status(error_class, status, error_type):
    error = error_class("what went wrong", param="file")
    assert error.status_code == status
    assert error.to_body() == {"error": {"message": "what went wrong", "type": error_type, "param": "file",
                                         "code": error.code}}
