"""A job request naming an upload: the upload's header is checked at creation, as a file sent with the request is
(admit), reading only the head of the file; what the head cannot tell is left to the worker."""

from __future__ import annotations

import pytest
from infery.domain.errors import InvalidRequest
from infery.domain.inference import Task
from infery.domain.transcription import TranscriptionRequest
from infery.usecases.uploads import UPLOAD_HEAD_BYTES

from tests.support.builders import id3_tag
from tests.support.job_world import KEY, World
from tests.support.media_headers import webm_declaring, zero_bit_wav
from tests.support.speech import one_hertz_wav, silent_wav

UPLOAD_ID = "upl_" + "b" * 32


def _job_request(world: World, audio: bytes) -> TranscriptionRequest:
    world.audio.objects[world.audio.upload_key(KEY.key_id, UPLOAD_ID)] = audio
    return TranscriptionRequest(task=Task.TRANSCRIBE, model="whisper-1", upload_id=UPLOAD_ID)


@pytest.mark.parametrize(
    ("audio", "code"),
    [
        pytest.param(zero_bit_wav(), "undecodable_audio", id="wav-0-bits"),
        pytest.param(webm_declaring(1.0), "sample_rate_too_low", id="webm-1-hz"),
        pytest.param(one_hertz_wav(), "sample_rate_too_low", id="wav-1-hz"),
        # a header read in the head declares the whole file: 5 hours is refused without reading them
        pytest.param(
            webm_declaring(16_000, seconds=5 * 3600, tail=bytes(2 * UPLOAD_HEAD_BYTES)),
            "audio_too_long",
            id="webm-5-hours",
        ),
    ],
)
def test_an_uploads_header_is_refused_at_job_creation(audio, code):
    world = World()
    with pytest.raises(InvalidRequest) as refused:
        world.runner.create_job(KEY, _job_request(world, audio))
    assert refused.value.code == code and refused.value.param == "file"
    assert world.queue.sent == [] and list(world.jobs.jobs) == [world.job.job_id]


@pytest.mark.parametrize(
    "audio",
    [
        pytest.param(silent_wav(16_000, 3), id="good-wav"),
        # a WAV far longer than the head: the head's few seconds are not mistaken for anything
        pytest.param(silent_wav(16_000, 60), id="wav-longer-than-the-head"),
        # cover art longer than the head: not recognised from it, so the worker reads the file whole
        pytest.param(id3_tag(2 * UPLOAD_HEAD_BYTES) + b"\xff\xfb\x90\x00" + bytes(1024), id="id3-past-the-head"),
    ],
)
def test_an_upload_whose_head_says_nothing_wrong_is_queued(audio):
    world = World()
    job = world.runner.create_job(KEY, _job_request(world, audio))
    assert world.queue.sent == [job.job_id]
