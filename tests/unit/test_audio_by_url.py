"""Audio by URL through the request parser and the use cases (fakes, no network): ``url`` is one of the audio
sources, exactly one per request; what is fetched is recognised as audio, stored as an upload, and that stored
version is what a job checks, prices and charges; a job fetches when it runs (in the worker), never when it is
created, and a fetch that fails fails the job with its code, charging nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from infery.domain import audio_url
from infery.domain.errors import InferyError, InvalidRequest, ModelFailed
from infery.domain.ids import upload_id_for_fetch
from infery.domain.inference import Task
from infery.domain.jobs import JobStatus
from infery.domain.transcription import TranscriptionRequest
from infery.http.idempotency import request_fingerprint
from infery.http.request_parsing import parse_transcription_request
from infery.usecases.audio_by_url import AudioByUrl
from pydantic import ValidationError

from tests.support.builders import json_body, multipart_body
from tests.support.job_world import KEY, RESULT_12S, World, wav
from tests.support.speech import one_hertz_wav

# what the real fetcher reads at a time
CHUNK_BYTES = 64 * 1024
AUDIO_URL = "https://audio.example/meeting.wav?X-Amz-Signature=secret"
LOCAL = {"allow_http_webhooks": True, "allow_private_webhooks": True}


@dataclass
class FakeFetcher:
    """The AudioFetcher port: answers each URL with its bytes or its error, and records each fetch."""

    answers: dict[str, bytes | InferyError] = field(default_factory=dict)
    fetched: list[tuple[str, int]] = field(default_factory=list)

    def fetch(self, url: str, *, max_bytes: int) -> bytes:
        self.fetched.append((url, max_bytes))
        answer = self.answers[url]
        if isinstance(answer, InferyError):
            raise answer
        return answer

    def fetch_into(self, url: str, write: Callable[[bytes], object], *, max_bytes: int) -> int:
        """The answer handed to ``write`` as the real fetcher hands it: in chunks, as they arrive."""
        answer = self.fetch(url, max_bytes=max_bytes)
        for start in range(0, len(answer), CHUNK_BYTES):
            write(answer[start : start + CHUNK_BYTES])
        return len(answer)


def parse(content_type: str, body: bytes, task: Task = Task.TRANSCRIBE, **rules: bool) -> TranscriptionRequest:
    return parse_transcription_request(
        task, content_type, body, max_audio_bytes=4 * 1024 * 1024, max_upload_bytes=25_000_000, **rules
    )


def refused(content_type: str, body: bytes, **rules: bool) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(content_type, body, **rules)
    return caught.value


# --- the request ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [multipart_body, json_body])
@pytest.mark.parametrize("task", [Task.TRANSCRIBE, Task.TRANSLATE])
def test_url_is_taken_in_a_form_and_in_json_on_both_tasks(build, task):
    content_type, body = build(None, model="whisper-1", url=AUDIO_URL)

    request = parse(content_type, body, task)

    assert (request.url, request.audio, request.upload_id) == (AUDIO_URL, None, None)


@pytest.mark.parametrize(
    ("build", "audio", "fields", "param"),
    [
        (multipart_body, True, {}, "url"),
        (json_body, True, {}, "url"),
        (multipart_body, False, {"upload_id": "upl_" + "a" * 32}, "url"),
        (json_body, False, {"upload_id": "upl_" + "a" * 32}, "url"),
    ],
)
def test_url_with_another_audio_source_is_400_ambiguous_audio(build, audio, fields, param):
    content_type, body = build(wav(1.0) if audio else None, model="whisper-1", url=AUDIO_URL, **fields)

    error = refused(content_type, body)

    assert (error.code, error.param) == ("ambiguous_audio", param)
    assert "'url'" in error.message


def test_file_base64_with_url_is_ambiguous_too():
    content_type, body = json_body(wav(1.0), "file_base64", model="whisper-1", url=AUDIO_URL)

    assert refused(content_type, body).code == "ambiguous_audio"


def test_no_audio_source_at_all_names_url_among_the_choices():
    error = refused(*json_body(None, model="whisper-1"))

    assert error.code == "missing_audio" and "'url'" in error.message


def test_url_twice_in_a_form_is_ambiguous():
    content_type, body = multipart_body(None, model="whisper-1", url=[AUDIO_URL, "https://other.example/a.wav"])

    assert refused(content_type, body).code == "ambiguous_audio"


@pytest.mark.parametrize(
    ("url", "rules", "code"),
    [
        ("http://audio.example/a.wav", {}, "invalid_value"),
        ("http://127.0.0.1:8000/a.wav", {}, "invalid_value"),
        ("https://10.1.2.3/a.wav", {}, "url_address_not_allowed"),
        ("http://169.254.169.254/latest/meta-data/", LOCAL, "url_address_not_allowed"),
        ("gopher://audio.example/", LOCAL, "invalid_value"),
        (12345, LOCAL, "invalid_value"),
        ("", LOCAL, "invalid_value"),
    ],
)
def test_a_url_never_fetched_is_400_when_the_request_arrives(url, rules, code):
    error = refused(*json_body(None, model="whisper-1", url=url), **rules)

    assert (error.code, error.param) == (code, "url")


def test_the_local_stack_takes_http_on_loopback():
    request = parse(*json_body(None, model="whisper-1", url="http://127.0.0.1:8000/a.wav"), **LOCAL)

    assert request.url == "http://127.0.0.1:8000/a.wav"


def test_a_request_has_exactly_one_audio_source():
    with pytest.raises(ValidationError):
        TranscriptionRequest(task=Task.TRANSCRIBE, model="whisper-1", url=AUDIO_URL, upload_id="upl_" + "a" * 32)
    with pytest.raises(ValidationError):
        TranscriptionRequest(task=Task.TRANSCRIBE, model="whisper-1")


def test_two_requests_for_different_urls_are_not_the_same_request():
    first = parse(*json_body(None, model="whisper-1", url=AUDIO_URL))
    second = parse(*json_body(None, model="whisper-1", url="https://audio.example/other.wav"))

    assert request_fingerprint(first) != request_fingerprint(second)


# --- fetched into the bucket ----------------------------------------------------------------------------------------


def test_what_is_fetched_is_stored_as_the_keys_upload_and_loaded_from_there():
    world = World()
    fetcher = FakeFetcher({AUDIO_URL: wav(2.0)})

    audio = AudioByUrl(fetcher, world.audio).fetch(KEY.key_id, AUDIO_URL, upload_id="upl_" + "b" * 32, max_bytes=99)

    assert fetcher.fetched == [(AUDIO_URL, 99)]
    assert world.audio.objects[f"uploads/{KEY.key_id}/upl_{'b' * 32}"] == wav(2.0)
    assert audio.s3_uri == f"s3://{world.audio.bucket}/uploads/{KEY.key_id}/upl_{'b' * 32}"
    assert audio.s3_version_id == "version-1"  # the stored version is the one checked and billed


@pytest.mark.parametrize("body", [b"<html>not audio</html>", b""])
def test_what_is_not_audio_is_400_url_not_audio_and_nothing_is_stored(body):
    world = World()
    before = dict(world.audio.objects)

    with pytest.raises(InvalidRequest) as caught:
        AudioByUrl(FakeFetcher({AUDIO_URL: body}), world.audio).fetch(
            KEY.key_id, AUDIO_URL, upload_id="upl_" + "c" * 32, max_bytes=10**6
        )

    assert (caught.value.code, caught.value.status_code, caught.value.param) == ("url_not_audio", 400, "url")
    assert world.audio.objects == before


# --- a job by URL ---------------------------------------------------------------------------------------------------


def url_job_world(answer: bytes | InferyError) -> tuple[World, FakeFetcher, str]:
    world = World()
    fetcher = FakeFetcher({AUDIO_URL: answer})
    world.runner.audio_by_url = AudioByUrl(fetcher, world.audio)
    world.runner.max_fetch_bytes = 25_000_000
    job = world.runner.create_job(KEY, TranscriptionRequest(task=Task.TRANSCRIBE, model="whisper-1", url=AUDIO_URL))
    return world, fetcher, job.job_id


def test_a_job_by_url_is_queued_without_fetching_and_never_shows_its_url():
    world, fetcher, job_id = url_job_world(wav(12.0))

    job = world.jobs.get(job_id)
    assert job is not None and job.status is JobStatus.QUEUED and world.queue.sent == [job_id]
    assert fetcher.fetched == []  # the API's request does not wait for the fetch
    assert job.source_url == AUDIO_URL and job.source_uri is None
    assert "source_url" not in job.public_view() and AUDIO_URL not in str(job.public_view())


def test_the_worker_fetches_the_jobs_audio_then_it_is_reserved_submitted_and_charged_once():
    world, fetcher, job_id = url_job_world(wav(12.0))

    started = world.runner.run(job_id, final_attempt=False)

    assert started is not None and started.status is JobStatus.RUNNING
    assert fetcher.fetched == [(AUDIO_URL, 25_000_000)]  # the upload limit: the job path's
    [(inference_id, request)] = world.endpoint.submitted
    stored_key = f"uploads/{KEY.key_id}/{upload_id_for_fetch(job_id)}"
    assert request.audio_s3_uri == f"s3://{world.audio.bucket}/{stored_key}"
    assert world.audio.objects[stored_key] == wav(12.0)
    world.endpoint.outcomes[inference_id] = RESULT_12S
    finished = world.runner.complete(world.endpoint.notification(inference_id))
    assert finished is not None and finished.status is JobStatus.SUCCEEDED
    assert world.credits.charged(KEY.key_id) == 3 and world.balance() == 97


def test_a_later_attempt_reads_what_the_first_fetched_and_does_not_fetch_again():
    world, fetcher, job_id = url_job_world(wav(12.0))
    world.runner.run(job_id, final_attempt=False)
    [(inference_id, _)] = world.endpoint.submitted
    world.endpoint.outcomes[inference_id] = ModelFailed("The model failed; nothing was charged.")
    world.runner.complete(world.endpoint.notification(inference_id, succeeded=False))

    world.runner.run(job_id, final_attempt=False)

    assert len(fetcher.fetched) == 1 and len(world.endpoint.submitted) == 2


@pytest.mark.parametrize(
    "error",
    [
        audio_url.unreachable("it answered HTTP 404"),
        audio_url.too_large(25_000_000),
        audio_url.address_not_allowed("inside.example"),
        audio_url.too_slow(120),
        audio_url.too_many_redirects(),
        b"<html>not audio</html>",
    ],
    ids=["unreachable", "too-large", "address", "too-slow", "redirects", "not-audio"],
)
def test_a_fetch_that_fails_fails_the_job_with_its_code_and_charges_nothing(error):
    world, _, job_id = url_job_world(error)

    failed = world.runner.run(job_id, final_attempt=False)

    assert failed is not None and failed.status is JobStatus.FAILED and failed.error is not None
    expected = "url_not_audio" if isinstance(error, bytes) else error.code
    assert failed.error.code == expected
    assert world.endpoint.submitted == [] and world.kinds() == [] and world.balance() == 100


def test_fetched_audio_that_is_then_refused_counts_as_the_keys_open_work_as_a_refused_upload_does():
    world, _, job_id = url_job_world(one_hertz_wav())

    failed = world.runner.run(job_id, final_attempt=False)

    assert failed is not None and failed.status is JobStatus.FAILED and failed.error is not None
    assert not failed.error.code.startswith("url_")  # refused for what the audio is, after it was stored
    assert world.jobs.upload_slots[upload_id_for_fetch(job_id)][0] == KEY.key_id
    assert world.balance() == 100


def test_a_fetch_that_failed_stored_nothing_and_holds_no_open_work():
    world, _, job_id = url_job_world(audio_url.unreachable("it answered HTTP 404"))

    world.runner.run(job_id, final_attempt=False)

    assert world.jobs.upload_slots == {}
