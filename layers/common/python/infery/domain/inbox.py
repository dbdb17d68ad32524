"""What a file dropped into a key's inbox asks for: its job's options, from the object's own S3 metadata.

A batch user sets them when writing the file, e.g. ``aws s3 cp call.mp3 s3://BUCKET/inbox/KEY_ID/call.mp3 --metadata
infery-response-format=diarized_json,infery-language=en``. Only metadata named ``infery-*`` is read (tools add
their own); an ``infery-*`` name or value this does not take fails the job, uncharged, with the reason, instead of
running it with options the user did not ask for.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from infery.domain.errors import InvalidRequest
from infery.domain.inference import Task
from infery.domain.transcription import ResponseFormat, TranscriptionOptions

INBOX_METADATA_PREFIX = "infery-"
# metadata name (after the prefix) -> the option it sets
_OPTIONS = {
    "model": "model",
    "language": "language",
    "prompt": "prompt",
    "response-format": "response_format",
    "temperature": "temperature",
    "timestamp-granularities": "timestamp_granularities",
}
CODE = "invalid_inbox_options"


def inbox_options(metadata: Mapping[str, str], default_model: str) -> TranscriptionOptions:
    """The job options an inbox object's metadata asks for (S3 gives user metadata names in lower case, without
    ``x-amz-meta-``); the defaults (json, the deployment's model) where it says nothing."""
    asked = {
        name.lower().removeprefix(INBOX_METADATA_PREFIX): value
        for name, value in metadata.items()
        if name.lower().startswith(INBOX_METADATA_PREFIX)
    }
    unknown = sorted(set(asked) - set(_OPTIONS))
    if unknown:
        raise InvalidRequest(
            f"The file's metadata x-amz-meta-{INBOX_METADATA_PREFIX}{unknown[0]} is not an option an inbox job takes; "
            f"it takes {', '.join(INBOX_METADATA_PREFIX + name for name in _OPTIONS)}. Nothing was charged.",
            code=CODE,
        )
    fields: dict[str, object] = {"model": default_model}
    for name, value in asked.items():
        option = _OPTIONS[name]
        fields[option] = [part.strip() for part in value.split(",") if part.strip()] if option.endswith("s") else value
    try:
        options = TranscriptionOptions(task=Task.TRANSCRIBE, **fields)
    except ValidationError as error:
        first = error.errors()[0]
        option = str(first["loc"][0]) if first["loc"] else "?"
        name = next((name for name, field in _OPTIONS.items() if field == option), option)
        raise InvalidRequest(
            f"The file's metadata x-amz-meta-{INBOX_METADATA_PREFIX}{name} is not valid: "
            f"{first['msg'].removeprefix('Value error, ')}. Nothing was charged.",
            code=CODE,
        ) from None
    if "word" in options.timestamp_granularities and options.response_format is not ResponseFormat.VERBOSE_JSON:
        raise InvalidRequest(
            "Word timestamps (x-amz-meta-infery-timestamp-granularities=word) come with "
            "x-amz-meta-infery-response-format=verbose_json only. Nothing was charged.",
            code=CODE,
        )
    return options
