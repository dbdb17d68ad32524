"""What was checked and priced is what is transcribed and billed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

from tests.support.api import (
    assert_error,
    assert_ok,
)
from tests.support.job_stack import (
    SHORT_SCRIPT,
)
from tests.support.jobs import (
    SEEDED,
    assert_charged_once,
    assert_no_batch_failures,
    assert_transcript,
    get_job,
    post_upload,
    upload_to_s3,
)
from tests.support.speech import encode, synthesize_wav


def test_an_upload_swapped_during_the_call_is_not_what_is_transcribed_or_billed(
    load_api, model_proxy, worker, store, jobs_queue, accounts, short_wav, s3
):
    """Found by the security review: re-uploading to the same slot while the call ran got 180 s transcribed on a
    1-credit reservation. The model now reads only the version that was checked: the first upload of the slot."""
    long_audio = synthesize_wav(" ".join([SHORT_SCRIPT] * 12))
    api_key, item = accounts.new_key(SEEDED)
    upload = post_upload(load_api(model_proxy(lambda body: None)), api_key, {"start_job": False}).json()
    upload_to_s3(upload, short_wav)
    object_key = f"uploads/{item.key_id}/{upload['id']}"
    jobs_queue.drain()
    read_by_the_model: list[dict] = []

    def swap(body: bytes) -> None:  # between the API's check and the model's read, as the attacker did
        s3.put_object(Bucket=store.bucket, Key=object_key, Body=long_audio)
        read_by_the_model.append(json.loads(body))

    reply = load_api(model_proxy(swap)).transcribe(api_key, None, upload_id=upload["id"], response_format="json")
    assert_ok(reply)
    assert_transcript(reply.json()["text"])
    [request] = read_by_the_model
    first = s3.list_object_versions(Bucket=store.bucket, Prefix=object_key)["Versions"][-1]
    assert request["audio_s3_version_id"] == first["VersionId"]
    billed = int(accounts.request_entries(item, reply.request_id)["settle"]["billed_credits"])
    assert billed == reply.json()["credits_used"] <= 2  # the short file's seconds, not the swapped minute
    assert accounts.balance(item) == SEEDED - billed == accounts.ledger_sum(item)


def test_a_presigned_post_sent_again_is_deleted_on_arrival_and_the_first_upload_stands(
    jobs_api, worker, store, jobs_queue, accounts, short_wav, s3
):
    """A presigned POST can be used once: a second upload through it writes a later version of the slot, which its
    arrival deletes; the job (or any call naming the upload) transcribes and bills the first."""
    long_audio = synthesize_wav(" ".join([SHORT_SCRIPT] * 12))
    api_key, item = accounts.new_key(SEEDED)
    upload = post_upload(jobs_api, api_key, {"start_job": False}).json()
    object_key = f"uploads/{item.key_id}/{upload['id']}"
    upload_to_s3(upload, short_wav)
    upload_to_s3(upload, long_audio)  # the same slot, again
    arrivals = jobs_queue.drain()
    assert len(arrivals) == 2
    for arrival in arrivals:  # in whatever order S3's events come, each is handled
        assert_no_batch_failures(worker.deliver([arrival]))
    versions = s3.list_object_versions(Bucket=store.bucket, Prefix=object_key)["Versions"]
    assert [version["Size"] for version in versions] == [len(short_wav)]
    reply = jobs_api.transcribe(api_key, None, upload_id=upload["id"], response_format="json")
    assert_ok(reply)
    assert_transcript(reply.json()["text"])
    assert reply.json()["credits_used"] <= 2


def test_a_job_upload_sent_again_runs_one_job_on_the_first_file(
    jobs_api, worker, store, jobs_queue, accounts, short_wav
):
    long_audio = synthesize_wav(" ".join([SHORT_SCRIPT] * 12))
    api_key, item = accounts.new_key(SEEDED)
    upload = post_upload(jobs_api, api_key, {"model": "whisper-1"}).json()
    upload_to_s3(upload, short_wav)
    upload_to_s3(upload, long_audio)
    for arrival in jobs_queue.drain():
        assert_no_batch_failures(worker.deliver([arrival]))
    job = get_job(jobs_api, api_key, upload["job_id"]).json()
    assert job["status"] == "succeeded", job
    assert_transcript(get_job(jobs_api, api_key, upload["job_id"], result=True, query="?response_format=text").text)
    assert assert_charged_once(accounts, store, item, upload["job_id"]) <= 2


def _silent_flac(seconds: float) -> bytes:
    """Silence as FLAC: a few KB declaring minutes, as in the review's 38 KB, 3-minute file."""
    import io as _io
    from fractions import Fraction

    import av
    import numpy as np

    output = _io.BytesIO()
    with av.open(output, "w", format="flac") as target:
        stream = target.add_stream("flac", rate=16_000)
        stream.layout = "mono"
        samples = np.zeros((1, 16_000), dtype=np.int16)
        for second in range(int(seconds)):
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16_000, second * 16_000, Fraction(1, 16_000)
            target.mux(stream.encode(frame))
        target.mux(stream.encode(None))
    return output.getvalue()


def test_a_small_file_declaring_minutes_reserves_minutes_and_credits_used_agree_everywhere(jobs_api, accounts):
    """Found by the review: 38 KB of FLAC silence on a 15-credit key reserved 4, billed 15, left 21 unpaid, and the
    body said 36. The reservation now pays for the declared duration: 402 when it cannot, else one number."""
    flac = _silent_flac(180)
    assert len(flac) < 60_000
    poor_key, poor = accounts.new_key(15)
    assert_error(jobs_api.transcribe(poor_key, flac, filename="silence.flac"), 402, "insufficient_credits")
    accounts.assert_untouched(poor, 15)

    api_key, item = accounts.new_key(SEEDED)
    reply = jobs_api.transcribe(api_key, flac, filename="silence.flac")
    assert_ok(reply)
    entries = accounts.request_entries(item, reply.request_id)
    billed = int(entries["settle"]["billed_credits"])
    assert billed == 36 == reply.json()["credits_used"] == int(reply.header("x-infery-credits-used"))
    assert not entries["settle"].get("unpaid_credits")
    assert accounts.balance(item) == SEEDED - billed == accounts.ledger_sum(item)
    usage = jobs_api.call("GET", "/v1/usage", api_key=api_key)  # the key holder's own report says the same
    assert usage.status == 200, usage.text
    [request] = usage.json()["recent_requests"]
    assert (request["request_id"], request["status"], request["credits"]) == (reply.request_id, "settled", 36)
    assert usage.json()["total"]["credits"] == 36 and usage.json()["balance"] == SEEDED - 36


def _mp3_declaring(audio: bytes, declared_frames: int) -> bytes:
    """An MP3 whose Xing/Info header claims ``declared_frames`` frames: mutagen believes it, the decoder does not."""
    mp3 = bytearray(encode(audio, "mp3"))
    tag = max(mp3.find(b"Xing"), mp3.find(b"Info"))
    assert tag > 0, "libmp3lame wrote no Xing/Info header"
    assert int.from_bytes(mp3[tag + 4 : tag + 8], "big") & 1, "the header carries no frame count"
    mp3[tag + 8 : tag + 12] = declared_frames.to_bytes(4, "big")
    return bytes(mp3)


def test_audio_longer_than_its_header_declares_is_refused_by_the_model_and_nothing_is_charged(jobs_api, accounts):
    long_speech = synthesize_wav(" ".join([SHORT_SCRIPT] * 8))  # about 25 s
    lying = _mp3_declaring(long_speech, declared_frames=60)  # about 1.5 s
    api_key, item = accounts.new_key(SEEDED)
    reply = jobs_api.transcribe(api_key, lying, filename="lying.mp3")
    assert_error(reply, 400, "audio_longer_than_declared", param="file")
    assert accounts.balance(item) == SEEDED == accounts.ledger_sum(item)


def test_the_model_refuses_an_object_that_is_not_the_checked_one(model_server_url, store, s3, short_wav):
    """The model's own guard (endpoint/whisper_server.py), for a bucket without versioning or a version it was not
    told: it reads the object only if its ETag is still the one the API checked, else 400 audio_changed."""
    object_key = "uploads/key_0123456789abcdef/upl_" + uuid.uuid4().hex
    written = s3.put_object(Bucket=store.bucket, Key=object_key, Body=short_wav)

    def invoke(etag: str) -> tuple[int, dict]:
        body = json.dumps({"audio_s3_uri": f"s3://{store.bucket}/{object_key}", "audio_s3_etag": etag}).encode()
        request = urllib.request.Request(
            f"{model_server_url}/invocations", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310 - loopback
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    status, answer = invoke('"' + "0" * 32 + '"')
    assert status == 400, answer
    assert "audio_changed" in json.dumps(answer) and "changed after it was checked" in json.dumps(answer)
    status, answer = invoke(written["ETag"])  # the checked one is read and transcribed
    assert status == 200 and "fox" in answer["text"].lower(), answer
