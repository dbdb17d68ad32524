"""A job's known speakers: their voice samples (up to 4 data URLs of up to 2 MiB) do not fit the job's item
(DynamoDB's 400 KB), so they are stored in the bucket when the job is created, after the request was checked, and
the job keeps the object's key; the worker reads them back when it builds the inference request."""

from __future__ import annotations

from pydantic import BaseModel

from infery.domain.errors import InvalidRequest
from infery.domain.transcription import TranscriptionOptions
from infery.usecases.ports import AudioObjects


class StoredKnownSpeakers(BaseModel):
    """The object's body: the names and the samples as the request sent them."""

    names: list[str]
    references: list[str]


def store(
    objects: AudioObjects, key_id: str, job_id: str, options: TranscriptionOptions
) -> tuple[TranscriptionOptions, str | None]:
    """The options the job keeps (the names, no samples) and the key of the object the samples were stored in;
    options without known speakers as they are, and no key."""
    if not options.known_speaker_references:
        return options, None
    body = StoredKnownSpeakers(names=options.known_speaker_names, references=options.known_speaker_references)
    object_key = objects.put_known_speakers(key_id, job_id, body.model_dump_json().encode())
    return options.model_copy(update={"known_speaker_references": []}), object_key


def load(objects: AudioObjects, options: TranscriptionOptions, object_key: str | None) -> TranscriptionOptions:
    """The job's options with its samples read back, as the request sent them (``object_key`` None: the options as
    they are). Samples no longer stored (kept as long as uploads) fail the job, before anything is reserved."""
    if object_key is None:
        return options
    body = objects.load_known_speakers(object_key)
    if body is None:
        raise InvalidRequest(
            "The job's known speakers' voice samples are no longer stored (they are kept 2 days, as uploads are); "
            "nothing was charged. Send the job again.",
            param="known_speaker_references",
            code="invalid_known_speakers",
        )
    stored = StoredKnownSpeakers.model_validate_json(body)
    return options.model_copy(
        update={"known_speaker_names": stored.names, "known_speaker_references": stored.references}
    )
