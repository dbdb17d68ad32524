"""A file dropped into a key's inbox says what it asks for in its S3 metadata (infery-*): its job runs with those
options (speakers included), or fails at once, listed and uncharged, with the reason; metadata of other tools is
left alone. Through the job use case over in-memory fakes."""

from __future__ import annotations

import pytest
from infery.domain.errors import InvalidRequest
from infery.domain.inbox import inbox_options
from infery.domain.jobs import JobStatus
from infery.domain.stored_audio import StoredObject
from infery.domain.transcription import ResponseFormat

from tests.support.job_world import BUCKET, KEY, World


def drop(world: World, metadata: dict[str, str], name: str = "call.wav") -> str | None:
    key = f"inbox/{KEY.key_id}/{name}"
    world.audio.objects[key] = world.audio.objects[next(iter(world.audio.objects))]
    world.audio.metadata[key] = metadata
    return world.runner.job_for_object(StoredObject(BUCKET, key, KEY.key_id, "inbox", name, 10, "v1"))


def test_a_drop_without_infery_metadata_runs_with_the_defaults_whatever_other_tools_wrote():
    options = inbox_options({"mtime": "1700000000", "content-md5": "x"}, "whisper-large-v3")
    assert (options.model, options.response_format, options.language) == ("whisper-large-v3", ResponseFormat.JSON, None)


def test_a_drop_asks_for_speakers_language_and_word_timestamps_in_its_metadata():
    world = World()
    job_id = drop(world, {"infery-response-format": "diarized_json", "infery-language": "en"})
    assert job_id is not None
    job = world.jobs.jobs[job_id]
    assert job.status is JobStatus.QUEUED and job.options.diarize and job.options.language == "en"
    words = inbox_options(
        {"Infery-Response-Format": "verbose_json", "infery-timestamp-granularities": "word, segment"}, "whisper-1"
    )
    assert words.timestamp_granularities == ["word", "segment"] and words.response_format is ResponseFormat.VERBOSE_JSON


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ({"infery-response-fromat": "srt"}, "x-amz-meta-infery-response-fromat is not an option"),
        ({"infery-response-format": "docx"}, "x-amz-meta-infery-response-format is not valid"),
        ({"infery-temperature": "hot"}, "x-amz-meta-infery-temperature is not valid"),
        ({"infery-temperature": "1.5"}, "x-amz-meta-infery-temperature is not valid"),
        ({"infery-timestamp-granularities": "word"}, "verbose_json only"),
        ({"infery-timestamp-granularities": "letter"}, "timestamp-granularities is not valid"),
    ],
)
def test_metadata_the_inbox_does_not_take_fails_the_job_at_once_listed_and_uncharged(metadata, says):
    with pytest.raises(InvalidRequest, match=says):
        inbox_options(metadata, "whisper-1")
    world = World()
    assert drop(world, metadata) is None  # nothing to run
    [failed] = [job for job in world.jobs.jobs.values() if job.job_id != world.job.job_id]
    assert failed.status is JobStatus.FAILED and failed.error is not None
    assert failed.error.code == "invalid_inbox_options" and says.split(" ")[0] in failed.error.message
    assert world.credits.entries == [] and world.endpoint.submitted == []
    assert failed.open_key_id is None  # not the key's open work

    # delivered again: the same failed job, nothing more
    assert drop(world, metadata) is None
    assert len(world.jobs.jobs) == 2


def test_a_refused_drop_whose_fail_write_failed_is_never_run_with_the_default_options():
    """A refused drop's job is created failed, in one write: were it created queued and failed in a second write
    that DynamoDB refused, the redelivered event would find it created, and the reconciler would run and charge it
    with options nobody asked for."""
    world = World()
    real_fail = world.jobs.fail
    calls = []

    def flaky_fail(job_id, error):
        calls.append(job_id)
        if len(calls) == 1:
            raise RuntimeError("ProvisionedThroughputExceededException")
        return real_fail(job_id, error)

    world.jobs.fail = flaky_fail
    metadata = {"infery-colour": "blue"}
    try:
        drop(world, metadata)
    except RuntimeError:
        pass  # the event is delivered again
    assert drop(world, metadata) is None
    [job] = [job for job in world.jobs.jobs.values() if job.job_id != world.job.job_id]
    assert job.status is JobStatus.FAILED, (job.status, job.options.response_format)
