"""Uploads, as the job use case meets them: what job creation reads of an uploaded file to check it, the slot a
presigned upload hands out, and until when S3 keeps the file (so until when it counts as its key's open work)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from infery.domain.errors import InferyError
from infery.domain.jobs import Job
from infery.domain.transcription import LoadedAudio
from infery.usecases.charging import TranscriptionTerms

# what job creation reads of an upload to check its header (a WebM's tracks, an MP4's moov written first)
UPLOAD_HEAD_BYTES = 1 << 20
# template.yaml's lifecycle rule for uploads/: a file expires this many days after it arrived, used or not
UPLOAD_EXPIRATION_DAYS = 2


def upload_expires_at(arrived_at: float) -> int:
    """When S3 expires a file that arrived at ``arrived_at``: its expiration days later, rounded up to the next
    midnight UTC (S3's rule for lifecycle expirations)."""
    expires = datetime.fromtimestamp(arrived_at, UTC) + timedelta(days=UPLOAD_EXPIRATION_DAYS)
    midnight = expires.replace(hour=0, minute=0, second=0, microsecond=0)
    return int((midnight + timedelta(days=1) if midnight < expires else midnight).timestamp())


@dataclass(frozen=True)
class NewUpload:
    """An upload slot: where the client uploads its file, and the job that starts when it arrives (if any)."""

    upload_id: str
    presigned_post: dict[str, Any]
    job: Job | None


def check_upload_head(terms: TranscriptionTerms, head: bytes) -> None:
    """Refuse an upload whose header says what the worker would refuse (1 Hz, 0 bits per sample, ten hours), as
    admission refuses a file sent with the request. Only the head of the file is read: what needs the whole file
    (a header it cannot find there, the length a WAV's bytes hold) is left to the worker."""
    try:
        audio = LoadedAudio.inline(head)
    except InferyError:
        return  # not recognised from its head alone (an ID3 tag larger than it): the worker reads it whole
    terms.check_audio_limits(audio)
