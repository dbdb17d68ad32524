"""API keys: format, hashing, and authentication against the keys table.

Only a SHA-256 hash of a key is stored. Keys carry 256 bits of randomness, so a
fast hash is safe here (no password stretching needed) and a lookup by hash
compares nothing secret byte by byte.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from .errors import AuthenticationFailed

KEY_PREFIX = "inf_"
_KEY_PATTERN = re.compile(r"inf_[A-Za-z0-9_-]{16,128}")  # used with fullmatch: "$" would allow a final "\n"
_BEARER_PATTERN = re.compile(r"^\s*Bearer\s+(\S+)\s*$", re.IGNORECASE)


class ApiKeyItem(BaseModel):
    """One row of the keys table."""

    key_hash: str
    key_id: str
    name: str
    credits: int = Field(ge=0)
    status: Literal["active", "revoked"] = "active"
    created_at: str


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def key_id_for(key_hash: str) -> str:
    """A public, non-secret name for a key, safe for logs, the ledger and invoices."""
    return "key_" + key_hash[:16]


def mask_api_key(api_key: str) -> str:
    return api_key[:8] + "***" + api_key[-4:] if len(api_key) > 16 else "inf_***"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def api_key_from_authorization(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it in the Authorization header as 'Bearer inf_...'.",
            code="missing_api_key")
    match = _BEARER_PATTERN.match(authorization)
    if not match:
        raise AuthenticationFailed("The Authorization header must be 'Bearer inf_...'.", code="invalid_api_key")
    api_key = match.group(1)
    if not _KEY_PATTERN.fullmatch(api_key):
        raise AuthenticationFailed(f"Incorrect API key provided: {mask_api_key(api_key)}. infery keys look like "
                                   "'inf_' followed by letters, digits, '-' and '_'.", code="invalid_api_key")
    return api_key


class KeyStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def authenticate(self, authorization: str | None) -> ApiKeyItem:
        api_key = api_key_from_authorization(authorization)
        item = self._table.get_item(Key={"key_hash": hash_api_key(api_key)}, ConsistentRead=True).get("Item")
        if item is None or item.get("status") != "active":
            raise AuthenticationFailed(f"Incorrect API key provided: {mask_api_key(api_key)}.")
        return ApiKeyItem.model_validate(item)

    def create(self, name: str, credits: int, api_key: str | None = None) -> tuple[str, ApiKeyItem]:
        """Store a new key (a generated one unless given) and return it in clear, once."""
        api_key = api_key or generate_api_key()
        if not _KEY_PATTERN.fullmatch(api_key):
            raise ValueError("an infery key is 'inf_' followed by 16 to 128 letters, digits, '-' or '_'")
        key_hash = hash_api_key(api_key)
        item = ApiKeyItem(key_hash=key_hash, key_id=key_id_for(key_hash), name=name, credits=credits,
                          created_at=now_iso())
        self._table.put_item(Item=item.model_dump())
        return api_key, item
