"""Long audio on the synchronous path, end to end: refused before any credit is held, in the time it takes to read
its header, sent inline or as an upload (tests/integration/test_sync_duration_ceiling.py: a job takes it).

Before the ceiling, an hour of audio sent synchronously kept the model decoding past the API's 504, refunded every
time: work anyone with a funded key could ask for again and again, for free.
"""

from __future__ import annotations

import openai
import pytest
import requests

from tests.support.speech import eight_bit_wav
from tests.support.stack import RunningStack


@pytest.fixture
def funded(stack: RunningStack) -> tuple[str, str]:
    return stack.create_key("long-audio", 10_000)


def assert_untouched(stack: RunningStack, key_id: str, api_key: str) -> None:
    kinds = [entry["kind"] for entry in stack.ledger(key_id)]
    assert set(kinds) <= {"topup"}, kinds
    assert stack.usage(api_key)["balance"] == 10_000
    assert not [row for row in stack.open_reservations() if row.get("key_id") == key_id]


def test_an_hour_sent_inline_is_refused_at_once_and_nothing_is_reserved(stack: RunningStack, funded) -> None:
    key_id, api_key = funded
    audio = eight_bit_wav(520)  # 4.2 MB: under the synchronous size limit, over its duration
    with pytest.raises(openai.BadRequestError) as refused:
        stack.client(api_key, timeout=20).audio.transcriptions.create(model="whisper-1", file=("long.wav", audio))
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "audio_too_long_for_sync", error
    assert "/v1/audio/transcriptions/jobs" in error["message"]
    assert_untouched(stack, key_id, api_key)


def test_an_upload_past_the_ceiling_is_refused_synchronously_with_nothing_reserved(stack: RunningStack, funded) -> None:
    key_id, api_key = funded
    audio = eight_bit_wav(52 * 60)  # 25 MB of 8 kHz 8-bit audio: 52 minutes
    assert len(audio) <= 25_000_000
    headers = stack.headers(api_key)
    upload = requests.post(
        f"{stack.base_url}/uploads", headers=headers, json={"filename": "long.wav", "start_job": False}, timeout=30
    )
    assert upload.status_code == 201, upload.text
    slot = upload.json()
    stored = requests.post(slot["upload_url"], data=slot["fields"], files={"file": ("long.wav", audio)}, timeout=300)
    assert stored.ok, stored.text[:500]

    answer = requests.post(
        f"{stack.base_url}/audio/transcriptions",
        headers=headers,
        json={"model": "whisper-1", "upload_id": slot["id"]},
        timeout=20,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "audio_too_long_for_sync", answer.text
    assert_untouched(stack, key_id, api_key)
