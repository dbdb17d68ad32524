"""Audio that arrived in the bucket, and the layout of the bucket's keys that says whose it is.

Layout (one bucket, lifecycle rules in template.yaml expire each prefix):
- ``uploads/{key_id}/{upload_id}``: what POST /v1/uploads lets a client upload (presigned POST, size-limited);
- ``inbox/{key_id}/...``: where a batch user drops files directly; each object becomes a job;
- ``results/{key_id}/{job_id}.json``: a finished job's transcript (the model's full result);
- ``speakers/{key_id}/{job_id}.json``: a job's known speakers' voice samples, too large for the job's item.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_plus

from infery.domain.ids import KEY_ID_PATTERN

UPLOADS_PREFIX = "uploads/"


INBOX_PREFIX = "inbox/"


RESULTS_PREFIX = "results/"


SPEAKERS_PREFIX = "speakers/"


_OBJECT_KEY = re.compile(rf"(?P<area>uploads|inbox)/(?P<key_id>{KEY_ID_PATTERN.pattern})/(?P<name>.+)")


@dataclass(frozen=True)
class StoredObject:
    """An audio object that arrived in the bucket, and whose key's prefix it is under."""

    bucket: str
    key: str
    key_id: str
    area: str  # "uploads" or "inbox"
    name: str  # the upload id, or the batch user's own file name
    size: int
    etag: str = ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def object_key_from_event(encoded_key: str) -> str:
    """S3 event notifications URL-encode object keys ('+' for a space)."""
    return unquote_plus(encoded_key)


def parse_object_key(bucket: str, key: str, size: int, etag: str = "") -> StoredObject | None:
    """The object's owner from its prefix (``key`` decoded); None for objects outside uploads/ and inbox/."""
    match = _OBJECT_KEY.fullmatch(key)
    if not match:
        return None
    return StoredObject(bucket, key, match["key_id"], match["area"], match["name"], size, etag.strip('"'))
