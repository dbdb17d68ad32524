"""Audio sent by URL (Groq's field ``url``): which URLs are taken, and the errors a fetch ends with.

The form and the scheme, and an address written in the URL itself, are checked when the request arrives; the name's
addresses are checked when it is fetched (infery.adapters.audio_fetcher), at every redirect. Every refusal is a 400
with its own code, and nothing is charged: a fetch happens before any credit is reserved.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from infery.domain.addresses import is_allowed_address
from infery.domain.errors import InvalidRequest
from infery.domain.outbound import OutboundRefused, Refusal, allowed_targets, outbound_target

AUDIO_URL_MAX_CHARACTERS = 2048
# redirects followed from the URL a client sent; one more is refused
MAX_REDIRECTS = 3
PARAM = "url"
_NOTHING_CHARGED = "Nothing was charged."
# the codes of a fetch that failed (a redirect to a URL never fetched is invalid_value): nothing was stored
FETCH_ERROR_CODES = frozenset(
    {
        "url_unreachable",
        "url_too_large",
        "url_not_audio",
        "url_address_not_allowed",
        "url_timeout",
        "url_too_many_redirects",
        "invalid_value",
    }
)


def unreachable(detail: str) -> InvalidRequest:
    return InvalidRequest(
        f"The audio URL could not be fetched: {detail}. {_NOTHING_CHARGED}", param=PARAM, code="url_unreachable"
    )


def too_large(max_bytes: int) -> InvalidRequest:
    return InvalidRequest(
        f"The audio at the URL is larger than the {max_bytes / 1e6:.1f} MB this request takes (counted as it "
        f"arrived, whatever its Content-Length said). {_NOTHING_CHARGED}",
        param=PARAM,
        code="url_too_large",
    )


def not_audio(reason: str) -> InvalidRequest:
    return InvalidRequest(
        f"What the URL answered is not audio infery can transcribe: {reason} {_NOTHING_CHARGED}",
        param=PARAM,
        code="url_not_audio",
    )


def address_not_allowed(host: str) -> InvalidRequest:
    shown = host if len(host) <= 64 else host[:61] + "..."
    return InvalidRequest(
        f"The audio URL's host {shown!r} is, or resolves to, an address infery does not fetch from (a private, "
        f"loopback, link-local or metadata address). {_NOTHING_CHARGED}",
        param=PARAM,
        code="url_address_not_allowed",
    )


def too_slow(timeout_seconds: float) -> InvalidRequest:
    return InvalidRequest(
        f"The audio URL did not deliver its answer within {timeout_seconds:g} seconds. {_NOTHING_CHARGED}",
        param=PARAM,
        code="url_timeout",
    )


def too_many_redirects() -> InvalidRequest:
    return InvalidRequest(
        f"The audio URL redirected more than {MAX_REDIRECTS} times. {_NOTHING_CHARGED}",
        param=PARAM,
        code="url_too_many_redirects",
    )


def refused_target(refusal: Refusal, *, allow_private_addresses: bool, allow_http: bool) -> InvalidRequest:
    """A URL (the one sent, or a redirect's) whose scheme or port the deployment never fetches from."""
    if refusal is Refusal.UNPARSABLE:
        return InvalidRequest(
            f"Invalid value for '{PARAM}': it cannot be parsed as a URL.", param=PARAM, code="invalid_value"
        )
    where = allowed_targets(allow_private_addresses=allow_private_addresses, allow_http=allow_http)
    return InvalidRequest(
        f"Invalid value for '{PARAM}': audio is fetched {where} only. {_NOTHING_CHARGED}",
        param=PARAM,
        code="invalid_value",
    )


def check_audio_url(value: Any, *, allow_private_addresses: bool, allow_http: bool) -> str:
    """The URL as sent, if infery may fetch it: its form, scheme and port, and an address written in it. A name's
    addresses are checked when it is fetched (they may change after this)."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"Invalid value for '{PARAM}': must be a URL string.", param=PARAM, code="invalid_value")
    if len(value) > AUDIO_URL_MAX_CHARACTERS:
        raise InvalidRequest(
            f"Invalid value for '{PARAM}': it is {len(value):,} characters long; at most "
            f"{AUDIO_URL_MAX_CHARACTERS:,} are accepted.",
            param=PARAM,
            code="invalid_value",
        )
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#]+([/?#]\S*)?", value) or not value.isascii():
        raise refused_target(Refusal.UNPARSABLE, allow_private_addresses=allow_private_addresses, allow_http=allow_http)
    try:
        target = outbound_target(value, allow_private_addresses=allow_private_addresses, allow_http=allow_http)
    except OutboundRefused as refused:
        raise refused_target(
            refused.refusal, allow_private_addresses=allow_private_addresses, allow_http=allow_http
        ) from None
    parts = urllib.parse.urlsplit(value)
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest(
            f"Invalid value for '{PARAM}': must not contain a user name or password; use a presigned or "
            "otherwise unguessable URL instead.",
            param=PARAM,
            code="invalid_value",
        )
    try:
        allowed = is_allowed_address(target.host.strip("[]"), allow_private_addresses=allow_private_addresses)
    except ValueError:
        return value  # a name: its addresses are checked when it is fetched
    if not allowed:
        raise address_not_allowed(target.host)
    return value
