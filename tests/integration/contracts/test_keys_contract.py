"""The keys port: FakeKeys and the KeyStore on moto authenticate, find and revoke keys alike
(tests/integration/contracts)."""

from __future__ import annotations

import pytest
from infery.domain.errors import AuthenticationFailed, NotFound
from infery.domain.ids import key_id_for
from infery.domain.keys import generate_api_key, hash_api_key, mask_api_key

from tests.support.keys import BASE62


def refusal(keys, authorization: str | None) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as raised:
        keys.authenticate(authorization)
    return raised.value


def test_a_created_key_authenticates_and_is_found_by_id_and_by_hash(keys):
    api_key, item = keys.create("contract", 0)
    assert (item.key_hash, item.key_id, item.name, item.status) == (
        hash_api_key(api_key),
        key_id_for(hash_api_key(api_key)),
        "contract",
        "active",
    )
    assert keys.authenticate(f"Bearer {api_key}") == item
    assert keys.get(item.key_id) == item
    assert keys.get_by_hash(item.key_hash) == item


def test_an_operators_own_key_is_kept_as_given_and_only_once(keys):
    own = generate_api_key()
    api_key, item = keys.create("own", 0, api_key=own)
    assert api_key == own and item.key_hash == hash_api_key(own)
    with pytest.raises(ValueError, match="exists already"):
        keys.create("again", 0, api_key=own)
    assert keys.get(item.key_id).name == "own"


@pytest.mark.parametrize("bad_key", ["inf_short", "sk-0123456789abcdefghij"])
def test_a_key_that_could_never_authenticate_is_not_created(keys, bad_key):
    with pytest.raises(ValueError):
        keys.create("weak", 0, api_key=bad_key)
    assert keys.get_by_hash(hash_api_key(bad_key)) is None


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("Basic dXNlcjpwYXNzd29yZA==", "invalid_api_key"),
        ("Bearer not-an-infery-key", "invalid_api_key"),
    ],
)
def test_a_missing_or_malformed_key_is_401(keys, authorization, code):
    error = refusal(keys, authorization)
    assert (error.status_code, error.code) == (401, code)


def test_a_key_with_a_wrong_checksum_is_401_by_its_checksum(keys):
    api_key, _ = keys.create("typo", 0)
    typo = api_key[:-1] + BASE62[(BASE62.index(api_key[-1]) + 1) % 62]
    error = refusal(keys, f"Bearer {typo}")
    assert (error.status_code, error.code) == (401, "invalid_api_key")
    assert "checksum" in error.message and typo not in error.message


def test_an_unknown_key_is_401_and_shown_masked(keys):
    stranger = generate_api_key()
    error = refusal(keys, f"Bearer {stranger}")
    assert (error.status_code, error.code) == (401, "invalid_api_key")
    assert stranger not in error.message and mask_api_key(stranger) in error.message


def test_a_revoked_key_is_401_and_keeps_its_row(keys):
    api_key, item = keys.create("revoked", 0)
    revoked = keys.revoke(item.key_id)
    assert revoked.status == "revoked" and revoked.revoked_at is not None
    assert (revoked.key_id, revoked.key_hash, revoked.credits) == (item.key_id, item.key_hash, item.credits)
    error = refusal(keys, f"Bearer {api_key}")
    assert (error.status_code, error.code) == (401, "revoked_api_key")
    assert api_key not in error.message and mask_api_key(api_key) in error.message
    assert keys.get(item.key_id) == revoked
    assert keys.get_by_hash(item.key_hash) == revoked


def test_an_unknown_key_id_is_404_key_not_found_and_an_unknown_hash_none(keys):
    for action in (keys.get, keys.revoke):
        with pytest.raises(NotFound) as raised:
            action("key_0000000000000000")
        assert (raised.value.status_code, raised.value.code, raised.value.param) == (404, "key_not_found", "key_id")
    assert keys.get_by_hash("0" * 64) is None
