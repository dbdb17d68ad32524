"""Keys an operator brings pass the checks generated keys pass, and a key's own rate limit of 0 is not
"unlimited".

An operator's own key (INFERY_DEV_KEY, ``infery keys create --key``) used to need only the shape
``inf_`` + 16 to 128 characters: ``inf_my_local_key_0123456789`` had no checksum and guessable content. Now a key
is created only in the generated shape, with its checksum, and with content that looks random.
"""

from __future__ import annotations

import pytest
from infery.adapters.key_store import KeyStore
from infery.domain.errors import AuthenticationFailed
from infery.domain.keys import ApiKeyItem, api_key_from_authorization, check_key_format, generate_api_key, hash_api_key

from tests.support.fakes import LowLevelDynamoDB
from tests.support.keys import BASE62, FakeKeysTable, refused_by_create, spec_checksum


def with_checksum(random_part: str) -> str:
    assert len(random_part) == 40
    return "inf_" + random_part + spec_checksum(random_part)


WEAK_BUT_CHECKSUMMED = {
    "zeros": with_checksum("0" * 40),
    "one-letter": with_checksum("a" * 40),
    "alphabet": with_checksum(BASE62[:40]),
    "alphabet-backwards": with_checksum(BASE62[::-1][:40]),
    "two-letters": with_checksum("ab" * 20),
    "few-letters": with_checksum("password" * 5),
    "long-run": with_checksum(generate_api_key()[4:34] + "x" * 10),
}


@pytest.mark.parametrize(
    "api_key",
    [
        "inf_my_local_key_0123456789",  # README's old INFERY_DEV_KEY example
        "inf_" + "x" * 16,  # 16 characters: the old minimum
        "inf_e2e_" + "A1b2C3d4E5f6G7h8I9j0K1l2",
        "inf_imported_" + "0123456789abcdef0123456789abcdef",
        "inf_" + "a1B2-c3_D4e5F6g7h8I9j0kLmNoPqRsT",
        "inf_" + "a" * 45 + "-",
        "inf_" + "Q" * 128,
    ],
)
def test_an_operators_key_of_another_shape_can_no_longer_be_created(api_key):
    refused_by_create("generate", api_key=api_key)
    with pytest.raises(ValueError):
        check_key_format(api_key)


@pytest.mark.parametrize("api_key", list(WEAK_BUT_CHECKSUMMED.values()), ids=list(WEAK_BUT_CHECKSUMMED))
def test_a_key_with_a_valid_checksum_but_guessable_content_is_refused(api_key):
    assert api_key[44:] == spec_checksum(api_key[4:44])  # the checksum alone would let it in
    refused_by_create("random", api_key=api_key)


def test_a_key_an_operator_generated_elsewhere_with_infery_is_accepted():
    api_key = generate_api_key()
    table = FakeKeysTable()
    created, item = KeyStore(LowLevelDynamoDB(table), "keys").create("imported", 0, api_key=api_key)
    assert created == api_key and item.key_hash == hash_api_key(api_key)


def test_every_generated_key_passes_the_checks_operators_keys_must_pass():
    for _ in range(2000):
        check_key_format(generate_api_key())


def test_a_key_created_before_these_rules_still_authenticates():
    # a deployment that made operator keys of another shape keeps them working until they are revoked
    legacy = "inf_my_local_key_0123456789"
    assert api_key_from_authorization(f"Bearer {legacy}") == legacy
    table = FakeKeysTable()
    table.items[hash_api_key(legacy)] = {
        "key_hash": hash_api_key(legacy),
        "key_id": "key_0123456789abcdef",
        "name": "legacy",
        "credits": 5,
        "created_at": "2026-01-01T00:00:00.000Z",
    }
    assert KeyStore(LowLevelDynamoDB(table), "keys").authenticate(f"Bearer {legacy}").name == "legacy"


def test_a_checksum_typo_in_a_generated_key_is_still_a_401_without_a_read():
    key = generate_api_key()
    typo = key[:-1] + BASE62[(BASE62.index(key[-1]) + 1) % 62]
    with pytest.raises(AuthenticationFailed, match="checksum"):
        api_key_from_authorization(f"Bearer {typo}")


# --- rate_limit_per_minute: 0 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1])
def test_a_keys_own_rate_limit_of_zero_or_less_is_refused_with_a_clear_message(limit):
    refused = refused_by_create("at least 1 request per minute", name="team", rate_limit_per_minute=limit)
    assert "default" in str(refused)


def test_a_keys_own_rate_limit_of_one_or_none_is_kept():
    store = KeyStore(LowLevelDynamoDB(FakeKeysTable()), "keys")
    assert store.create("team", 0, rate_limit_per_minute=1)[1].rate_limit_per_minute == 1
    assert store.create("team", 0)[1].rate_limit_per_minute is None


def test_a_stored_limit_of_zero_from_before_means_the_deployments_default_not_unlimited():
    item = ApiKeyItem(
        key_hash="h" * 64,
        key_id="key_0123456789abcdef",
        name="old",
        credits=1,
        created_at="2026-01-01T00:00:00.000Z",
        rate_limit_per_minute=0,
    )
    assert item.rate_limit_per_minute is None  # the handler then applies DefaultRateLimitPerMinute
