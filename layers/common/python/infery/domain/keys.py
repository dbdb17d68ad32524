"""API keys: their format, checksum and hash, what a key row holds, and the rules of using one.

Generated keys are ``inf_`` + 40 random base62 characters (238 bits) + a 6-character CRC-32
checksum, so a mistyped key is refused without a database read. Only a SHA-256 hash of a key
is stored: with that much randomness a fast hash is safe (no password stretching needed). A key an
operator brings (INFERY_DEV_KEY, ``infery keys create --key``) must be one of these too: the same
shape, checksum and random-looking content, so no key is weaker than a generated one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import zlib
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from infery.domain.clock import parse_timestamp, utc_now
from infery.domain.errors import AuthenticationFailed, PermissionDenied
from infery.domain.shards import MAX_CREDIT_SHARDS

KEY_PREFIX = "inf_"


_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


_RANDOM_LENGTH = 40


_CHECKSUM_LENGTH = 6


# What authentication accepts: generated keys, and keys of other shapes that operators could create before
# every new key had to be of the generated shape (they keep working until revoked).
_KEY_PATTERN = re.compile(r"inf_[A-Za-z0-9_-]{16,128}")  # used with fullmatch: "$" would allow a final "\n"


# The shape of every key infery generates (and of every key it creates): it must carry a valid checksum.
_GENERATED_KEY_PATTERN = re.compile(rf"inf_[0-9A-Za-z]{{{_RANDOM_LENGTH + _CHECKSUM_LENGTH}}}")


# What 40 random base62 characters look like, with a margin no generated key misses (each check fails a random
# key with a probability under 1e-7): at least 16 different characters (29.8 on average), no character more
# than 5 times in a row, fewer than 12 neighbours one apart in the alphabet ("abc", "321": 1.3 on average).
_MIN_DISTINCT_CHARACTERS = 16


_MAX_RUN = 5


_MAX_ALPHABET_STEPS = 11


_BEARER_PATTERN = re.compile(r"^\s*Bearer\s+(\S+)\s*$", re.IGNORECASE)


class ApiKeyItem(BaseModel):
    """One row of the keys table. ``credits`` is the available balance (reservations already taken out)."""

    key_hash: str
    key_id: str
    name: str
    credits: int = Field(ge=0)
    status: Literal["active", "revoked"] = "active"
    created_at: str
    revoked_at: str | None = None
    expires_at: str | None = None
    rate_limit_per_minute: int | None = Field(default=None, ge=1)
    allowed_models: list[str] | None = None
    # how many items hold the key's credits (infery.domain.shards); stored only when more than 1
    credit_shards: int = Field(default=1, ge=1, le=MAX_CREDIT_SHARDS)
    # how many ledger partitions the key ever wrote to (a key that had more shards keeps their entries)
    ledger_parts: int = Field(default=1, ge=1, le=MAX_CREDIT_SHARDS)
    # the shard this row was read from: ``credits`` is that shard's balance (never stored, never shown)
    shard: int = Field(default=0, ge=0, exclude=True)

    @field_validator("rate_limit_per_minute", mode="before")
    @classmethod
    def _zero_is_the_default(cls, value: Any) -> Any:
        """A 0 stored before 0 was refused (it meant "unlimited"): the deployment's default applies instead."""
        return None if value is not None and not isinstance(value, bool) and value == 0 else value

    def public_view(self) -> dict[str, Any]:
        """Everything about the key except its hash."""
        return self.model_dump(exclude={"key_hash"})

    def stored(self) -> dict[str, Any]:
        """The key's row as the keys table holds it: a 1-shard key's exactly as before shards existed."""
        row = self.model_dump(exclude_none=True)
        for name in ("credit_shards", "ledger_parts"):
            if row[name] == 1:
                del row[name]
        return row


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(_BASE62[remainder])
    return "".join(reversed(digits))


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode()), _CHECKSUM_LENGTH)


def _looks_random(random_part: str) -> bool:
    if len(set(random_part)) < _MIN_DISTINCT_CHARACTERS:
        return False
    run = 1
    for previous, current in zip(random_part, random_part[1:], strict=False):
        run = run + 1 if current == previous else 1
        if run > _MAX_RUN:
            return False
    steps = sum(
        abs(_BASE62.index(current) - _BASE62.index(previous)) == 1
        for previous, current in zip(random_part, random_part[1:], strict=False)
    )
    return steps <= _MAX_ALPHABET_STEPS


def generate_api_key() -> str:
    while True:
        random_part = "".join(secrets.choice(_BASE62) for _ in range(_RANDOM_LENGTH))
        if _looks_random(random_part):  # practically always: see the thresholds
            return KEY_PREFIX + random_part + _checksum(random_part)


def has_valid_checksum(api_key: str) -> bool:
    body = api_key[len(KEY_PREFIX) :]
    return _checksum(body[:_RANDOM_LENGTH]) == body[_RANDOM_LENGTH:]


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def mask_api_key(api_key: str) -> str:
    return api_key[:8] + "***" + api_key[-4:] if len(api_key) > 16 else "inf_***"


def check_key_format(api_key: str) -> None:
    """Raise ValueError unless ``api_key`` may be created: a key as infery generates it, whoever made it."""
    if not _GENERATED_KEY_PATTERN.fullmatch(api_key):
        raise ValueError(
            "an infery key is 'inf_' followed by 40 random letters and digits and a 6-character "
            "checksum; let infery generate it (`infery keys create` without --key)"
        )
    if not has_valid_checksum(api_key):
        raise ValueError(
            "the key's checksum (its last 6 characters) does not match: check it for a typo, or let "
            "infery generate the key"
        )
    if not _looks_random(api_key[len(KEY_PREFIX) : len(KEY_PREFIX) + _RANDOM_LENGTH]):
        raise ValueError(
            "the key's 40 characters do not look random (too few different characters, long runs or "
            "alphabet sequences): let infery generate the key"
        )


def _shape_problem(api_key: str) -> str:
    """Why a key cannot be an infery key, in words that do not repeat it."""
    if not api_key.startswith(KEY_PREFIX):
        return "this one does not start with 'inf_'."
    body = api_key[len(KEY_PREFIX) :]
    if not re.fullmatch(r"[A-Za-z0-9_-]*", body):
        return "this one has other characters after 'inf_'."
    expected = _RANDOM_LENGTH + _CHECKSUM_LENGTH
    if len(body) < expected:
        return f"this one has only {len(body)} characters after 'inf_': check that the whole key was copied."
    return f"this one has {len(body)} characters after 'inf_': check that nothing was pasted after the key."


def api_key_from_authorization(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it in the Authorization header as 'Bearer inf_...'.",
            code="missing_api_key",
        )
    match = _BEARER_PATTERN.match(authorization)
    if not match:
        raise AuthenticationFailed("The Authorization header must be 'Bearer inf_...'.", code="invalid_api_key")
    api_key = match.group(1)
    if not _KEY_PATTERN.fullmatch(api_key):
        raise AuthenticationFailed(
            f"Incorrect API key provided: {mask_api_key(api_key)}. An infery key is 'inf_' "
            f"followed by {_RANDOM_LENGTH + _CHECKSUM_LENGTH} letters and digits; "
            f"{_shape_problem(api_key)}",
            code="invalid_api_key",
        )
    if _GENERATED_KEY_PATTERN.fullmatch(api_key) and not has_valid_checksum(api_key):
        raise AuthenticationFailed(
            f"Incorrect API key provided: {mask_api_key(api_key)}. Its checksum does not match: check it for a typo.",
            code="invalid_api_key",
        )
    return api_key


def ensure_usable(key: ApiKeyItem, shown_as: str) -> None:
    """Refuse a revoked or expired key (401), naming it as ``shown_as`` (masked, or its key_id)."""
    if key.status != "active":
        raise AuthenticationFailed(f"The API key {shown_as} was revoked.", code="revoked_api_key")
    if key.expires_at and parse_timestamp(key.expires_at) <= utc_now():
        raise AuthenticationFailed(f"The API key {shown_as} expired at {key.expires_at}.", code="expired_api_key")


def check_model_allowed(
    key: ApiKeyItem, requested: str, resolved: str, canonical: Callable[[str], str] = lambda name: name
) -> None:
    """403 unless the key may use the model. A restriction is about models, not spellings: an alias and the model
    it names count as one (``canonical``), so a key allowed ``whisper-1`` may name the deployed model too, and the
    other way round (README, "Keys")."""
    if not key.allowed_models:
        return
    allowed = set(key.allowed_models) | {canonical(name) for name in key.allowed_models}
    if requested not in allowed and resolved not in allowed:
        raise PermissionDenied(
            f"This key may not use the model '{requested}'. Allowed: {', '.join(key.allowed_models)}.",
            param="model",
            code="model_not_allowed",
        )
