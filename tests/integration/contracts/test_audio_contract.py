"""The audio objects port: FakeAudio and the AudioStore on moto's S3 keep uploads and results alike
(tests/integration/contracts)."""

from __future__ import annotations

import uuid

import pytest
from infery.domain.errors import InvalidRequest, NotFound
from infery.domain.ids import key_id_for
from infery.domain.stored_audio import StoredObject

from tests.support.builders import inference_result, segment


def a_key_id() -> str:
    return key_id_for(uuid.uuid4().hex * 2)


def an_upload_id() -> str:
    return "upl_" + uuid.uuid4().hex


def test_an_uploads_place_is_under_its_keys_prefix(audio):
    key_id, upload_id = a_key_id(), an_upload_id()
    assert audio.upload_uri(key_id, upload_id) == f"s3://{audio.bucket}/uploads/{key_id}/{upload_id}"
    presigned = audio.presigned_upload(key_id, upload_id)
    assert presigned["fields"]["key"] == f"uploads/{key_id}/{upload_id}"
    assert presigned["url"]


def test_a_put_upload_is_read_back_by_load_and_checked(audio):
    key_id, upload_id = a_key_id(), an_upload_id()
    stored = audio.put_upload(key_id, upload_id, b"RIFF audio bytes")
    assert stored == StoredObject(audio.bucket, f"uploads/{key_id}/{upload_id}", key_id, "uploads", upload_id, 16)
    body, uri, etag, _ = audio.load(stored)
    assert (body, uri) == (b"RIFF audio bytes", audio.upload_uri(key_id, upload_id))
    assert etag
    assert audio.check_upload(key_id, upload_id, 4) == (uri, b"RIFF")


def test_an_upload_that_has_not_arrived_is_404_upload_not_found(audio):
    key_id, upload_id = a_key_id(), an_upload_id()
    with pytest.raises(NotFound) as raised:
        audio.check_upload(key_id, upload_id, 4)
    assert (raised.value.status_code, raised.value.code, raised.value.param) == (404, "upload_not_found", "upload_id")
    with pytest.raises(NotFound):
        audio.load(StoredObject(audio.bucket, f"uploads/{key_id}/{upload_id}", key_id, "uploads", upload_id, 0))


def test_another_keys_upload_is_not_found(audio):
    key_id, upload_id = a_key_id(), an_upload_id()
    audio.put_upload(key_id, upload_id, b"RIFF audio bytes")
    with pytest.raises(NotFound):
        audio.check_upload(a_key_id(), upload_id, 4)


def test_an_empty_upload_is_400_empty_file(audio):
    key_id, upload_id = a_key_id(), an_upload_id()
    stored = audio.put_upload(key_id, upload_id, b"")
    for read in (lambda: audio.check_upload(key_id, upload_id, 4), lambda: audio.load(stored)):
        with pytest.raises(InvalidRequest) as raised:
            read()
        assert (raised.value.status_code, raised.value.code, raised.value.param) == (400, "empty_file", "upload_id")


def test_the_first_upload_to_a_slot_is_the_one_kept_and_read(audio):
    key_id, upload_id = a_key_id(), an_upload_id()
    first = audio.put_upload(key_id, upload_id, b"the first upload")
    _, _, first_etag, _ = audio.load(first)
    second = audio.put_upload(key_id, upload_id, b"a second one, sent again")
    assert audio.load(second)[0] == b"the first upload"
    assert audio.check_upload(key_id, upload_id, 9)[1] == b"the first"
    assert not audio.keep_first_upload(StoredObject(**{**second.__dict__, "etag": "0" * 32}))
    assert audio.keep_first_upload(StoredObject(**{**first.__dict__, "etag": first_etag}))
    assert audio.load(first)[0] == b"the first upload"


def test_keep_first_upload_is_false_when_nothing_arrived(audio):
    key_id, upload_id = a_key_id(), an_upload_id()
    slot = StoredObject(audio.bucket, f"uploads/{key_id}/{upload_id}", key_id, "uploads", upload_id, 0)
    assert not audio.keep_first_upload(slot)


def test_a_result_is_stored_under_its_result_key_and_read_back(audio):
    key_id, job_id = a_key_id(), "job_" + uuid.uuid4().hex
    result = inference_result("Hello there.", [segment(0, 0.0, 4.2, " Hello there.")], duration=4.2)
    assert audio.result_key(key_id, job_id) == f"results/{key_id}/{job_id}.json"
    assert audio.put_result(key_id, job_id, result) == audio.result_key(key_id, job_id)
    assert audio.load_result(audio.result_key(key_id, job_id)) == result
    assert audio.find_result(audio.result_key(key_id, job_id)) == result
    assert audio.find_result(audio.result_key(key_id, "job_" + uuid.uuid4().hex)) is None


def test_a_jobs_known_speakers_are_kept_under_its_keys_speakers_prefix_and_read_back(audio):
    key_id, job_id = a_key_id(), "job_" + uuid.uuid4().hex
    body = b'{"names": ["agent"], "references": ["data:audio/wav;base64,UklGRg=="]}'
    object_key = audio.put_known_speakers(key_id, job_id, body)
    assert object_key == f"speakers/{key_id}/{job_id}.json"
    assert audio.load_known_speakers(object_key) == body
    assert audio.load_known_speakers(f"speakers/{key_id}/job_{uuid.uuid4().hex}.json") is None  # gone: None
