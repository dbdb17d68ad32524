"""Time as the tables store it: ISO 8601 UTC timestamps with milliseconds, and parsing them back."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def now_iso() -> str:
    return utc_now().isoformat(timespec="milliseconds")


def iso_at(epoch_seconds: float) -> str:
    """``epoch_seconds`` as the tables store a time."""
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds")


def parse_timestamp(value: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime (a time without an offset is taken as UTC)."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not an ISO 8601 time: {value!r}") from exc
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
