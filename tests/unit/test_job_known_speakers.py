"""Known speakers on a job (infery.usecases.known_speakers through the job use case's fakes): the voice samples are
stored in the bucket when the job is created, the job keeps only their object's key, and the worker reads them back
into the inference request. No AWS, no model server."""

from __future__ import annotations

import base64
import json

from infery.domain.inference import Task
from infery.domain.jobs import JobStatus
from infery.domain.transcription import LoadedAudio, ResponseFormat, TranscriptionRequest

from tests.support.job_world import KEY, World, wav
from tests.support.speech import silent_wav

# four samples of 10 s of 48 kHz 16-bit audio: some 3.8 MB of data URLs, ten times what a job's item may hold
SAMPLES = ["data:audio/wav;base64," + base64.b64encode(silent_wav(48_000, 10.0)).decode() for _ in range(4)]
NAMES = ["agent", "customer", "Tom & Jerry", "李"]


def _request(**fields) -> TranscriptionRequest:
    return TranscriptionRequest(
        task=Task.TRANSCRIBE,
        model="whisper-1",
        response_format=ResponseFormat.DIARIZED_JSON,
        audio=LoadedAudio.inline(wav(12.0)),
        **fields,
    )


def test_a_jobs_samples_are_stored_beside_it_and_the_job_keeps_only_their_key():
    world = World()
    job = world.runner.create_job(KEY, _request(known_speaker_names=NAMES, known_speaker_references=SAMPLES))

    assert job.known_speakers_key == f"speakers/{KEY.key_id}/{job.job_id}.json"
    stored = json.loads(world.audio.objects[job.known_speakers_key])
    assert stored == {"names": NAMES, "references": SAMPLES}
    kept = world.jobs.get(job.job_id)
    assert kept is not None and kept.options.known_speaker_names == NAMES
    assert kept.options.known_speaker_references == []
    assert len(kept.model_dump_json()) < 4_000  # the item holds names, not 3.8 MB of samples
    view = json.dumps(world.runner.presenter.view(kept))
    assert "known_speakers_key" not in view and "speakers/" not in view and "base64" not in view


def test_the_worker_reads_the_samples_back_into_the_inference_request():
    world = World()
    job = world.runner.create_job(KEY, _request(known_speaker_names=NAMES[:2], known_speaker_references=SAMPLES[:2]))

    started = world.runner.run(job.job_id, final_attempt=False)

    assert started is not None and started.status is JobStatus.RUNNING
    [(_, request)] = world.endpoint.submitted
    assert request.diarize is True
    assert [(speaker.name, speaker.audio) for speaker in request.known_speakers] == [
        (name, sample.split(",", 1)[1]) for name, sample in zip(NAMES[:2], SAMPLES[:2], strict=True)
    ]


def test_a_job_without_known_speakers_stores_nothing_for_them():
    world = World()
    job = world.runner.create_job(KEY, _request())
    assert job.known_speakers_key is None
    assert not any(key.startswith("speakers/") for key in world.audio.objects)
    world.runner.run(job.job_id, final_attempt=False)
    [(_, request)] = world.endpoint.submitted
    assert request.known_speakers == []


def test_samples_no_longer_stored_fail_the_job_before_anything_is_reserved():
    world = World()
    job = world.runner.create_job(KEY, _request(known_speaker_names=NAMES[:1], known_speaker_references=SAMPLES[:1]))
    assert job.known_speakers_key is not None
    del world.audio.objects[job.known_speakers_key]  # expired with the job's uploaded audio

    failed = world.runner.run(job.job_id, final_attempt=False)

    assert failed is not None and failed.status is JobStatus.FAILED and failed.error is not None
    assert failed.error.code == "invalid_known_speakers" and "no longer stored" in failed.error.message
    assert world.kinds() == [] and world.endpoint.submitted == [] and world.balance() == 100
