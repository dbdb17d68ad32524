"""Every id infery makes, and the patterns that recognise them: keys, uploads, jobs and their attempts.

An id's shape is checked before it is looked up (a DynamoDB key past 2 KB would fail the read), and the bucket's
prefixes are made of key ids, so each format is written here once.
"""

from __future__ import annotations

import hashlib
import re
import secrets

# key_ + the first 16 hex digits of the key's SHA-256: public, safe for logs, the ledger and invoices
KEY_ID_PATTERN = re.compile(r"key_[0-9a-f]{16}")
# upl_ + 32 lower-case hex digits
UPLOAD_ID_PATTERN = re.compile(r"upl_[0-9a-f]{32}")
# job_ + 32 lower-case hex digits
JOB_ID_PATTERN = re.compile(r"job_[0-9a-f]{32}")

_UPLOAD_PREFIX = "upl_"
_JOB_PREFIX = "job_"
_WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not one
_ATTEMPT_SEPARATOR = "."
# a part of a long job's attempt: <attempt id>~p<index>, then r<n> for its n-th submission after the first
_PART_SEPARATOR = "~p"
_PART_ID = re.compile(r"(?P<attempt>[^~]+)~p(?P<index>\d+)(?:r(?P<submission>\d+))?")


def key_id_for(key_hash: str) -> str:
    """A public, non-secret name for a key, safe for logs, the ledger and invoices."""
    return "key_" + key_hash[:16]


def new_upload_id() -> str:
    return _UPLOAD_PREFIX + secrets.token_hex(16)


def new_job_id() -> str:
    return _JOB_PREFIX + secrets.token_hex(16)


def job_id_for_upload(upload_id: str) -> str:
    """The job an upload starts on arrival: the upload's own hex digits, so the arrival finds it."""
    return _JOB_PREFIX + upload_id.removeprefix(_UPLOAD_PREFIX)


def upload_id_for_fetch(job_id: str) -> str:
    """Where a job's audio sent by URL is stored once fetched: the same for every attempt, so a retry reads what the
    first attempt fetched (an upload slot's first version), and unlike any upload's own job id."""
    return _UPLOAD_PREFIX + hashlib.sha256(f"fetched\n{job_id}".encode()).hexdigest()[:32]


def job_id_for_object(bucket: str, key: str, etag: str) -> str:
    """The same object delivered twice is the same job; a new version of it (new ETag) is a new one."""
    return _JOB_PREFIX + hashlib.sha256(f"{bucket}/{key}#{etag}".encode()).hexdigest()[:32]


def attempt_id(request_id: str, attempt: int) -> str:
    """The id attempt number ``attempt`` (from 1) of a job or an Idempotency-Key request is charged under: the
    first uses the request's own id, a later one needs its own (a request id is reserved once), and the ledger's
    entries for the request's id as a prefix find them all."""
    return request_id if attempt <= 1 else f"{request_id}{_ATTEMPT_SEPARATOR}{attempt}"


def job_id_of_attempt(inference_id: str) -> str:
    """The job of an attempt's inference id, or of one of its parts'."""
    return inference_id.split(_PART_SEPARATOR, 1)[0].split(_ATTEMPT_SEPARATOR, 1)[0]


def part_inference_id(attempt_inference_id: str, index: int, submission: int = 1) -> str:
    """The asynchronous invocation of part ``index`` of an attempt, its ``submission``-th (a part that failed for a
    reason of ours is submitted again alone, under a new id: a notification of the one given up then names no part)."""
    suffix = f"r{submission}" if submission > 1 else ""
    return f"{attempt_inference_id}{_PART_SEPARATOR}{index}{suffix}"


def parse_part_inference_id(inference_id: str) -> tuple[str, int] | None:
    """(the attempt's inference id, the part's index) of a part's invocation; None for a whole attempt's."""
    match = _PART_ID.fullmatch(inference_id)
    return (match["attempt"], int(match["index"])) if match else None


def idempotency_id(key_id: str, idempotency_key: str) -> str:
    """The id a request sent with an Idempotency-Key is charged under: the same for every retry of it."""
    return "idem_" + hashlib.sha256(f"{key_id}\n{idempotency_key}".encode()).hexdigest()[:32]


def new_webhook_secret() -> str:
    return _WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32)
