"""keys: the key format and its checksum, the Authorization header, hashing and masking, and the KeyStore."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError
from infery.adapters.key_store import KeyStore, key_id_for
from infery.domain.errors import AuthenticationFailed, NotFound, PermissionDenied
from infery.domain.keys import (
    ApiKeyItem,
    api_key_from_authorization,
    check_key_format,
    check_model_allowed,
    generate_api_key,
    has_valid_checksum,
    hash_api_key,
    mask_api_key,
)

from tests.support.fakes import LowLevelDynamoDB
from tests.support.keys import BASE62, FakeKeysTable, refused_by_create, spec_checksum

GOOD_KEY = "inf_" + "a1B2-c3_D4e5F6g7h8I9j0kLmNoPqRsT"  # an operator's own key: inf_ + 32 characters
assert len(GOOD_KEY) == 36


def a_generated_key_with_a_wrong_checksum() -> str:
    key = generate_api_key()
    wrong = BASE62[(BASE62.index(key[-1]) + 1) % 62]
    return key[:-1] + wrong


def _refusal(header: str | None) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as raised:
        api_key_from_authorization(header)
    return raised.value


# the generated format


def test_given_many_generated_keys_then_each_is_inf_40_random_base62_and_a_6_character_checksum():
    keys = [generate_api_key() for _ in range(200)]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert re.fullmatch(r"inf_[0-9A-Za-z]{46}", key), key
        random_part, checksum = key[4:44], key[44:]
        assert checksum == spec_checksum(random_part)
        assert has_valid_checksum(key)
        check_key_format(key)  # raises if refused
        assert api_key_from_authorization(f"Bearer {key}") == key


def test_given_many_generated_keys_then_their_random_part_draws_on_the_whole_base62_alphabet():
    # 8000 draws from 62 characters: missing any one of them has a probability of about e^-129
    seen = set("".join(generate_api_key()[4:44] for _ in range(200)))
    assert seen == set(BASE62)


def test_given_a_generated_key_when_any_one_character_after_the_prefix_is_mistyped_then_its_checksum_fails():
    key = generate_api_key()
    for position in range(4, len(key)):
        index = BASE62.index(key[position])
        for replacement in (BASE62[(index + 1) % 62], BASE62[(index + 31) % 62]):
            typo = key[:position] + replacement + key[position + 1 :]
            assert not has_valid_checksum(typo), (position, replacement)
            error = _refusal(f"Bearer {typo}")
            assert (error.status_code, error.code) == (401, "invalid_api_key")
            assert "checksum" in error.message


def test_given_a_generated_key_when_two_neighbouring_characters_are_swapped_then_its_checksum_fails():
    key = generate_api_key()
    swaps = 0
    for position in range(4, len(key) - 1):
        if key[position] == key[position + 1]:
            continue
        swapped = key[:position] + key[position + 1] + key[position] + key[position + 2 :]
        assert not has_valid_checksum(swapped), position
        swaps += 1
    assert swaps > 30  # the loop really tried


@pytest.mark.parametrize(
    "key",
    [
        "inf_" + "0" * 40 + "000000",  # the checksum of forty zeros is not zero
        "inf_" + "A" * 46,
        "inf_" + "z" * 46,
    ],
)
def test_given_a_key_of_the_generated_shape_without_its_checksum_then_it_is_refused_everywhere(key):
    assert re.fullmatch(r"inf_[0-9A-Za-z]{46}", key)
    assert key[44:] != spec_checksum(key[4:44])
    assert not has_valid_checksum(key)
    with pytest.raises(ValueError, match="checksum"):
        check_key_format(key)
    assert _refusal(f"Bearer {key}").code == "invalid_api_key"


def test_given_forty_zeros_then_the_checksum_is_the_documented_crc32_in_base62():
    random_part = "0" * 40
    assert has_valid_checksum("inf_" + random_part + spec_checksum(random_part))


class _UntouchableTable:
    """A keys table that fails the test on any use."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the keys table was used ({name}) for a key refused by its format")


@pytest.mark.parametrize(
    "key", [a_generated_key_with_a_wrong_checksum(), "inf_short", "sk-proj-0123456789abcdefghij", "inf_" + "x" * 129]
)
def test_given_a_malformed_key_or_a_wrong_checksum_when_authenticating_then_401_without_reading_the_table(key):
    with pytest.raises(AuthenticationFailed) as raised:
        KeyStore(LowLevelDynamoDB(_UntouchableTable()), "keys").authenticate(f"Bearer {key}")
    assert (raised.value.status_code, raised.value.code) == (401, "invalid_api_key")
    assert key not in raised.value.message


@pytest.mark.parametrize(
    "key",
    [
        GOOD_KEY,
        "inf_" + "x" * 16,  # the shortest custom key
        "inf_" + "x" * 128,  # the longest
        "inf_" + "a" * 45,  # one short of the generated shape: no checksum needed
        "inf_" + "a" * 47,  # one past it
        "inf_" + "a" * 45 + "-",  # 46 characters, but '-' is not base62: not the generated shape
        "inf_" + "_" + "b" * 45,
    ],
)
def test_given_an_operators_own_key_of_another_shape_then_it_authenticates_but_can_no_longer_be_created(key):
    # keys of other shapes made before every new key had to be of the generated shape keep working
    assert api_key_from_authorization(f"Bearer {key}") == key
    with pytest.raises(ValueError, match="40 random"):
        check_key_format(key)  # tests/unit/test_key_rules.py


@pytest.mark.parametrize(
    "key",
    [
        "",
        "inf_",
        "inf_short",
        "inf_" + "x" * 15,
        "inf_" + "x" * 129,
        "INF_" + "x" * 20,
        "sk-0123456789abcdefghij",
        "inf_" + "x" * 20 + " ",
        "inf_" + "x" * 20 + "\n",
        " inf_" + "x" * 20,
        "inf_" + "x" * 10 + "!" + "x" * 10,
        "inf_" + "\u0663" * 20,  # Arabic-Indic digits are digits to Unicode, not to the key format
        "inf_" + "é" * 20,
    ],
)
def test_given_a_key_outside_the_format_then_check_key_format_raises(key):
    with pytest.raises(ValueError, match="40 random"):
        check_key_format(key)


# the Authorization header


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {GOOD_KEY}",
        f"bearer {GOOD_KEY}",
        f"BEARER {GOOD_KEY}",
        f"  Bearer   {GOOD_KEY} ",
        "Bearer inf_" + "x" * 16,
        "Bearer inf_" + "x" * 128,
    ],
)
def test_given_a_bearer_header_then_the_key_is_read_from_it(header):
    assert api_key_from_authorization(header) == header.split()[-1]


@pytest.mark.parametrize(
    ("header", "code"),
    [
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
        ("Bearer inf_" + "\u0663" * 20, "invalid_api_key"),
        (f"Bearer {GOOD_KEY} extra", "invalid_api_key"),
        (f"Token {GOOD_KEY}", "invalid_api_key"),
        (f"Bearer {a_generated_key_with_a_wrong_checksum()}", "invalid_api_key"),
    ],
)
def test_given_a_missing_or_malformed_key_then_401(header, code):
    error = _refusal(header)
    assert (error.status_code, error.code, error.error_type) == (401, code, "invalid_request_error")


@pytest.mark.parametrize(
    "key", ["sk-proj-0123456789abcdefghijklmnop", "inf_" + "Z" * 200, a_generated_key_with_a_wrong_checksum()]
)
def test_given_a_wrong_key_then_the_401_shows_it_masked(key):
    error = _refusal(f"Bearer {key}")
    assert mask_api_key(key) in error.message
    assert key not in error.message and key[8:-4] not in error.message


# hashing, naming, masking


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


@pytest.mark.parametrize(
    "key", [generate_api_key(), GOOD_KEY, "inf_" + "x" * 13, "sk-proj-0123456789abcdefghij", "inf_" + "q" * 128]
)
def test_masking_shows_at_most_eight_leading_and_four_trailing_characters(key):
    masked = mask_api_key(key)
    assert masked == key[:8] + "***" + key[-4:]
    assert len(masked.replace("***", "")) == 12
    assert key[8:-4] not in masked


@pytest.mark.parametrize("key", ["", "inf_", "inf_short", "inf_0123456789ab"])  # up to 16 characters
def test_short_keys_are_masked_entirely(key):
    assert mask_api_key(key) == "inf_***"


# the KeyStore, over an in-memory keys table


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _auth_error(store: KeyStore, api_key: str) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as raised:
        store.authenticate(f"Bearer {api_key}")
    return raised.value


def test_given_a_created_key_then_it_authenticates_and_only_its_hash_is_stored():
    table = FakeKeysTable()
    store = KeyStore(LowLevelDynamoDB(table), "keys")
    api_key, item = store.create("ci", 10)
    assert has_valid_checksum(api_key)
    assert list(table.items) == [hash_api_key(api_key)]
    assert api_key not in repr(table.items)
    assert (item.key_id, item.credits, item.status) == (key_id_for(hash_api_key(api_key)), 10, "active")
    assert store.authenticate(f"Bearer {api_key}") == item
    assert "key_hash" not in item.public_view() and item.public_view()["key_id"] == item.key_id


def test_given_an_unknown_key_with_a_valid_checksum_then_401_invalid_api_key_after_one_read():
    table = FakeKeysTable()
    store = KeyStore(LowLevelDynamoDB(table), "keys")
    store.create("ci", 10)
    stranger = generate_api_key()
    error = _auth_error(store, stranger)
    assert (error.status_code, error.code) == (401, "invalid_api_key")
    assert stranger not in error.message and mask_api_key(stranger) in error.message
    assert table.reads == 1


def test_given_a_revoked_key_then_401_revoked_api_key_with_the_key_masked():
    table = FakeKeysTable()
    store = KeyStore(LowLevelDynamoDB(table), "keys")
    own_key = generate_api_key()  # an operator's own key is of the generated shape
    api_key, item = store.create("ci", 10, api_key=own_key)
    revoked = store.revoke(item.key_id)
    assert revoked.status == "revoked" and revoked.revoked_at is not None
    assert revoked.credits == 10  # revoking keeps the balance for the record
    error = _auth_error(store, api_key)
    assert (error.status_code, error.code) == (401, "revoked_api_key")
    assert own_key not in error.message and mask_api_key(own_key) in error.message


def test_given_a_key_whose_expiry_has_passed_then_401_expired_api_key():
    store = KeyStore(LowLevelDynamoDB(FakeKeysTable()), "keys")
    api_key, _ = store.create("ci", 10, expires_at=_iso(datetime.now(UTC) - timedelta(minutes=1)))
    error = _auth_error(store, api_key)
    assert (error.status_code, error.code) == (401, "expired_api_key")
    assert api_key not in error.message


def test_given_a_key_that_expires_later_then_it_authenticates():
    store = KeyStore(LowLevelDynamoDB(FakeKeysTable()), "keys")
    expires_at = _iso(datetime.now(UTC) + timedelta(days=1))
    api_key, item = store.create("ci", 10, expires_at=expires_at)
    assert store.authenticate(f"Bearer {api_key}").expires_at == expires_at


@pytest.mark.parametrize(
    "expires_at",
    [
        # an hour ago, written in UTC+05:00: as a string it reads four hours ahead
        (datetime.now(UTC) - timedelta(hours=1)).astimezone(timezone(timedelta(hours=5))).isoformat(),
        "not a timestamp",
    ],
    ids=["an-hour-ago-written-in-utc+5", "not-a-timestamp"],
)
def test_given_an_expiry_that_is_not_a_utc_timestamp_then_the_key_is_refused_at_creation_or_as_expired(expires_at):
    store = KeyStore(LowLevelDynamoDB(FakeKeysTable()), "keys")
    try:
        api_key, _ = store.create("ci", 10, expires_at=expires_at)
    except ValueError:
        return  # refusing an expiry it cannot compare is right too
    assert _auth_error(store, api_key).code == "expired_api_key"


def test_given_a_key_that_exists_already_then_create_refuses_it_and_leaves_the_stored_one_alone():
    table = FakeKeysTable()
    store = KeyStore(LowLevelDynamoDB(table), "keys")
    own_key = generate_api_key()
    store.create("first", 10, api_key=own_key)
    with pytest.raises(ValueError, match="exists already"):
        store.create("second", 99, api_key=own_key)
    stored = table.items[hash_api_key(own_key)]
    assert (stored["name"], stored["credits"]) == ("first", 10)


def test_given_another_dynamodb_error_on_create_then_it_is_not_disguised_as_a_duplicate():
    class _Throttled(FakeKeysTable):
        def put_item(self, Item, ConditionExpression=None):  # noqa: N803
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "PutItem"
            )

    with pytest.raises(ClientError, match="ProvisionedThroughputExceeded"):
        KeyStore(LowLevelDynamoDB(_Throttled()), "keys").create("ci", 0)


@pytest.mark.parametrize("bad_key", ["inf_short", "sk-0123456789abcdefghij", "inf_" + "x" * 20 + " ", GOOD_KEY + "\n"])
def test_given_a_chosen_key_that_could_never_authenticate_then_create_refuses_it(bad_key):
    refused_by_create("40 random", api_key=bad_key)


def test_given_a_chosen_key_of_the_generated_shape_with_a_wrong_checksum_then_create_refuses_it():
    refused_by_create("checksum", api_key=a_generated_key_with_a_wrong_checksum())


def test_given_create_options_then_they_are_stored_and_read_back():
    table = FakeKeysTable()
    store = KeyStore(LowLevelDynamoDB(table), "keys")
    _, item = store.create(
        "team", 0, expires_at="2999-01-01T00:00:00.000+00:00", rate_limit_per_minute=30, allowed_models=["whisper-1"]
    )
    stored = table.items[item.key_hash]
    assert (stored["expires_at"], stored["rate_limit_per_minute"], stored["allowed_models"]) == (
        "2999-01-01T00:00:00.000+00:00",
        30,
        ["whisper-1"],
    )
    assert "revoked_at" not in stored  # no None attributes in DynamoDB
    assert store.get(item.key_id) == item


def test_given_an_unknown_key_id_then_get_and_revoke_are_404_key_not_found():
    store = KeyStore(LowLevelDynamoDB(FakeKeysTable()), "keys")
    store.create("ci", 0)
    for action in (store.get, store.revoke):
        with pytest.raises(NotFound) as raised:
            action("key_0000000000000000")
        assert (raised.value.status_code, raised.value.code, raised.value.param) == (404, "key_not_found", "key_id")


def test_given_more_keys_than_one_scan_page_then_list_returns_them_all_oldest_first():
    table = FakeKeysTable(page_size=2)
    store = KeyStore(LowLevelDynamoDB(table), "keys")
    for name in ("a", "b", "c", "d", "e"):
        store.create(name, 0)
    # make creation order differ from the table's own order
    for index, item in enumerate(reversed(list(table.items.values()))):
        item["created_at"] = f"2026-01-0{index + 1}T00:00:00.000+00:00"
    listed = store.list()
    assert [key.name for key in listed] == ["e", "d", "c", "b", "a"]


# allowed models


def _key(allowed_models: list[str] | None) -> ApiKeyItem:
    return ApiKeyItem(
        key_hash="0" * 64,
        key_id="key_0000000000000000",
        name="ci",
        credits=0,
        created_at="2026-01-01T00:00:00.000+00:00",
        allowed_models=allowed_models,
    )


@pytest.mark.parametrize(
    ("allowed", "requested", "resolved"),
    [
        (None, "whisper-1", "whisper-large-v3"),
        ([], "whisper-1", "whisper-large-v3"),
        (["whisper-1"], "whisper-1", "whisper-large-v3"),  # the alias the client names
        (["whisper-large-v3"], "whisper-1", "whisper-large-v3"),  # the model the alias stands for
        (["other", "whisper-large-v3"], "whisper-large-v3", "whisper-large-v3"),
    ],
)
def test_given_a_key_allowed_the_model_then_check_model_allowed_passes(allowed, requested, resolved):
    check_model_allowed(_key(allowed), requested, resolved)


@pytest.mark.parametrize(
    ("allowed", "requested", "resolved"),
    [
        (["whisper-large-v3"], "whisper-tiny.en", "whisper-tiny.en"),
        (["whisper-1"], "whisper-large-v3", "whisper-large-v3"),
        (["Whisper-1"], "whisper-1", "whisper-tiny.en"),  # names are exact
    ],
)
def test_given_a_key_not_allowed_the_model_then_403_model_not_allowed(allowed, requested, resolved):
    with pytest.raises(PermissionDenied) as raised:
        check_model_allowed(_key(allowed), requested, resolved)
    error = raised.value
    assert (error.status_code, error.code, error.param) == (403, "model_not_allowed", "model")
    assert requested in error.message and all(model in error.message for model in allowed)
