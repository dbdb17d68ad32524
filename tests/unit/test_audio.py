from __future__ import annotations

import pytest
from infery.audio import AudioFormat, sniff_audio_format
from infery.errors import InvalidRequest, UnsupportedMediaType


@pytest.mark.parametrize("audio_format", ["wav", "mp3", "mp4", "m4a", "webm", "ogg", "flac"])
def test_every_supported_format_is_recognised_from_its_bytes(speech_files, audio_format):
    assert sniff_audio_format(speech_files[audio_format].read_bytes()) is AudioFormat(audio_format)


def _id3_tag(payload_size: int) -> bytes:
    syncsafe = bytes([(payload_size >> shift) & 0x7F for shift in (21, 14, 7, 0)])
    return b"ID3\x04\x00\x00" + syncsafe + bytes(payload_size)


def test_mp3_behind_a_large_id3_tag_is_still_mp3(speech_files):
    mp3 = speech_files["mp3"].read_bytes()
    assert sniff_audio_format(_id3_tag(200_000) + mp3) is AudioFormat.MP3


def test_flac_behind_an_id3_tag_is_flac(speech_files):
    assert sniff_audio_format(_id3_tag(100) + speech_files["flac"].read_bytes()) is AudioFormat.FLAC


def test_empty_bytes_are_a_400_not_a_415():
    with pytest.raises(InvalidRequest) as raised:
        sniff_audio_format(b"")
    assert raised.value.status_code == 400 and raised.value.code == "empty_file" and raised.value.param == "file"


@pytest.mark.parametrize("data", [
    b"hello, these are meeting notes" * 10,
    b"\x89PNG\r\n\x1a\n" + bytes(100),
    b"%PDF-1.7\n" + bytes(100),
    bytes([0xFF, 0xF1, 0x50, 0x80]) + bytes(100),  # ADTS AAC
    b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska" + bytes(50),  # Matroska, not WebM
    _id3_tag(50) + b"not a frame" * 5,
    bytes(range(256)) * 4,
])
def test_bytes_that_are_not_a_supported_format_are_415(data):
    with pytest.raises(UnsupportedMediaType) as raised:
        sniff_audio_format(data)
    assert raised.value.status_code == 415 and raised.value.code == "unsupported_audio_format"
    assert "MP3, MP4, M4A, WAV, WebM, OGG, FLAC" in raised.value.message
