"""keys: parsing the Authorization header, generating, hashing, naming and masking API keys."""

from __future__ import annotations

import re

import pytest
from infery.errors import AuthenticationFailed
from infery.keys import (
    KeyStore,
    api_key_from_authorization,
    generate_api_key,
    hash_api_key,
    key_id_for,
    mask_api_key,
)

GOOD_KEY = "inf_" + "a1B2-c3_D4e5F6g7h8I9j0kLmNoPqRsT"  # inf_ + 32 characters
assert len(GOOD_KEY) == 36


@pytest.mark.parametrize("header", [
    f"Bearer {GOOD_KEY}",
    f"bearer {GOOD_KEY}",
    f"BEARER {GOOD_KEY}",
    f"  Bearer   {GOOD_KEY} ",
    "Bearer inf_" + "x" * 16,  # the shortest key accepted
    "Bearer inf_" + "x" * 128,  # the longest
])
def test_a_bearer_key_is_read_from_the_header(header):
    assert api_key_from_authorization(header) == header.split()[-1]


@pytest.mark.parametrize(("header", "code"), [
    (None, "missing_api_key"),
    ("", "missing_api_key"),
    ("Basic dXNlcjpwYXNz", "invalid_api_key"),
    (GOOD_KEY, "invalid_api_key"),  # no scheme
    ("Bearer", "invalid_api_key"),
    ("Bearer ", "invalid_api_key"),
    ("Bearer sk-123", "invalid_api_key"),
    ("Bearer sk-proj-0123456789abcdefghijklmnop", "invalid_api_key"),
    ("Bearer inf_short", "invalid_api_key"),
    ("Bearer inf_" + "x" * 15, "invalid_api_key"),
    ("Bearer inf_" + "x" * 129, "invalid_api_key"),
    ("Bearer inf_" + "x" * 15 + "!", "invalid_api_key"),
    (f"Bearer {GOOD_KEY} extra", "invalid_api_key"),
    (f"Token {GOOD_KEY}", "invalid_api_key"),
])
def test_a_missing_or_malformed_key_is_401(header, code):
    with pytest.raises(AuthenticationFailed) as raised:
        api_key_from_authorization(header)
    error = raised.value
    assert (error.status_code, error.code, error.error_type) == (401, code, "invalid_request_error")


@pytest.mark.parametrize("key", ["sk-proj-0123456789abcdefghijklmnop", "inf_" + "Z" * 200])
def test_the_401_for_a_wrong_key_shows_it_masked(key):
    with pytest.raises(AuthenticationFailed) as raised:
        api_key_from_authorization(f"Bearer {key}")
    assert mask_api_key(key) in raised.value.message
    assert key not in raised.value.message and key[8:-4] not in raised.value.message


def test_generated_keys_are_well_formed_and_unique():
    keys = [generate_api_key() for _ in range(200)]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert re.fullmatch(r"inf_[A-Za-z0-9_-]{43}", key)  # 32 random bytes, URL-safe base64
        assert api_key_from_authorization(f"Bearer {key}") == key


def test_the_hash_is_a_stable_sha256_that_does_not_contain_the_key():
    key = generate_api_key()
    digest = hash_api_key(key)
    assert digest == hash_api_key(key)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert key not in digest and key[4:] not in digest
    assert hash_api_key(key + "x") != digest
    # a known vector, so the stored hashes never change meaning
    assert hash_api_key("inf_test") == "549c6fdfe916958f34527b3cf93bace6d9e9ad3d2466529fe86d360ff8cef264"


def test_the_key_id_is_a_public_prefix_of_the_hash():
    key = generate_api_key()
    digest = hash_api_key(key)
    key_id = key_id_for(digest)
    assert key_id == "key_" + digest[:16]
    assert re.fullmatch(r"key_[0-9a-f]{16}", key_id)
    assert key[4:12] not in key_id


@pytest.mark.parametrize("key", [generate_api_key(), GOOD_KEY, "inf_" + "x" * 13, "sk-proj-0123456789abcdefghij",
                                 "inf_" + "q" * 128])
def test_masking_shows_at_most_eight_leading_and_four_trailing_characters(key):
    masked = mask_api_key(key)
    assert masked == key[:8] + "***" + key[-4:]
    assert len(masked.replace("***", "")) == 12
    assert key[8:-4] not in masked


@pytest.mark.parametrize("key", ["", "inf_", "inf_short", "inf_0123456789ab"])  # up to 16 characters
def test_short_keys_are_masked_entirely(key):
    assert mask_api_key(key) == "inf_***"


class _FakeKeysTable:
    """The two DynamoDB Table calls KeyStore makes, over a dict."""

    def __init__(self) -> None:
        self.items: dict[str, dict] = {}

    def put_item(self, Item: dict) -> None:  # noqa: N803 - boto3's argument name
        self.items[Item["key_hash"]] = dict(Item)

    def get_item(self, Key: dict, ConsistentRead: bool = False) -> dict:  # noqa: N803
        item = self.items.get(Key["key_hash"])
        return {"Item": dict(item)} if item else {}


def test_a_created_key_authenticates_and_only_its_hash_is_stored():
    table = _FakeKeysTable()
    store = KeyStore(table)
    api_key, item = store.create("ci", 10)
    assert list(table.items) == [hash_api_key(api_key)]
    assert api_key not in repr(table.items)
    assert (item.key_id, item.credits, item.status) == (key_id_for(hash_api_key(api_key)), 10, "active")
    assert store.authenticate(f"Bearer {api_key}") == item


def test_an_unknown_or_revoked_key_is_401_with_the_key_masked():
    table = _FakeKeysTable()
    store = KeyStore(table)
    api_key, _ = store.create("ci", 10, api_key=GOOD_KEY)
    table.items[hash_api_key(api_key)]["status"] = "revoked"
    for header in (f"Bearer {api_key}", f"Bearer {generate_api_key()}"):
        with pytest.raises(AuthenticationFailed) as raised:
            store.authenticate(header)
        assert raised.value.code == "invalid_api_key" and GOOD_KEY not in raised.value.message


@pytest.mark.parametrize("bad_key", ["inf_short", "sk-0123456789abcdefghij", "inf_" + "x" * 20 + " "])
def test_create_refuses_a_chosen_key_that_could_never_authenticate(bad_key):
    with pytest.raises(ValueError, match="16 to 128"):
        KeyStore(_FakeKeysTable()).create("dev", 0, api_key=bad_key)


def test_create_refuses_a_chosen_key_with_a_trailing_newline():
    table = _FakeKeysTable()
    with pytest.raises(ValueError):
        KeyStore(table).create("dev", 0, api_key=GOOD_KEY + "\n")
