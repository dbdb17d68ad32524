"""audio.sniff_audio_format: the container is recognised from the bytes alone."""

from __future__ import annotations

import random

import pytest
from infery.domain.audio import SUPPORTED_FORMATS_TEXT, AudioFormat, sniff_audio_format
from infery.domain.errors import InvalidRequest, UnsupportedMediaType
from infery.domain.inference import Task
from infery.http.request_parsing import parse_transcription_request

from tests.support.builders import ebml_header, ftyp_box, id3_tag, multipart_body


@pytest.mark.parametrize("audio_format", list(AudioFormat))
def test_every_supported_format_is_recognised_from_a_real_encoded_file(encoded_audio, audio_format):
    # Given audio encoded by a real encoder (PyAV) in this format
    data = encoded_audio[audio_format.value].read_bytes()
    # Then the sniffer names exactly that format
    assert sniff_audio_format(data) is audio_format


@pytest.mark.parametrize(
    ("file_key", "new_brand", "expected"),
    [
        ("m4a", b"isom", AudioFormat.MP4),
        ("mp4", b"M4A ", AudioFormat.M4A),
    ],
)
def test_mp4_and_m4a_are_told_apart_by_the_ftyp_major_brand_alone(encoded_audio, file_key, new_brand, expected):
    # Given a real file whose ftyp major brand is swapped for the other format's
    data = encoded_audio[file_key].read_bytes()
    assert data[4:8] == b"ftyp" and data[8:12] != new_brand
    rebranded = data[:8] + new_brand + data[12:]
    # Then the brand, not the rest of the file, decides
    assert sniff_audio_format(rebranded) is expected


@pytest.mark.parametrize(
    ("brand", "expected"),
    [
        (b"M4A ", AudioFormat.M4A),
        (b"M4B ", AudioFormat.M4A),  # audiobook brand
        (b"isom", AudioFormat.MP4),
        (b"mp42", AudioFormat.MP4),
        (b"dash", AudioFormat.MP4),
    ],
)
def test_ftyp_brands(brand, expected):
    assert sniff_audio_format(ftyp_box(brand, b"isom") + bytes(64)) is expected


def test_an_mp3_behind_an_id3_tag_larger_than_the_sniffing_window_is_mp3(encoded_audio):
    # Given an MP3 with 200 kB of cover art in its ID3v2 tag (far past the 4096-byte sniffing window)
    tagged = id3_tag(200_000) + encoded_audio["mp3"].read_bytes()
    assert tagged[:3] == b"ID3" and tagged[4096:4100] == bytes(4)
    # Then the tag is skipped and the first MPEG frame found
    assert sniff_audio_format(tagged) is AudioFormat.MP3


def test_id3_tags_with_a_footer_and_stacked_tags_are_skipped(encoded_audio):
    mp3 = encoded_audio["mp3"].read_bytes()
    assert sniff_audio_format(id3_tag(10_000, footer=True) + mp3) is AudioFormat.MP3
    assert sniff_audio_format(id3_tag(300) + id3_tag(5_000) + mp3) is AudioFormat.MP3


def test_a_flac_behind_an_id3_tag_is_flac(encoded_audio):
    assert sniff_audio_format(id3_tag(8_000) + encoded_audio["flac"].read_bytes()) is AudioFormat.FLAC


def test_a_webm_ebml_header_is_webm():
    assert sniff_audio_format(ebml_header(b"webm") + bytes(32)) is AudioFormat.WEBM


def test_empty_bytes_are_a_400_empty_file_not_a_415():
    with pytest.raises(InvalidRequest) as raised:
        sniff_audio_format(b"")
    error = raised.value
    assert (type(error), error.status_code, error.param, error.code) == (InvalidRequest, 400, "file", "empty_file")


NOT_AUDIO = {
    "text": b"Meeting notes: ship the quarterly report by Friday.\n" * 20,
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64),
    "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n" + bytes(64),
    "adts_aac": bytes([0xFF, 0xF1, 0x50, 0x80, 0x02, 0x1F, 0xFC]) + bytes(128),
    "adts_aac_mpeg2": bytes([0xFF, 0xF9, 0x50, 0x80, 0x02, 0x1F, 0xFC]) + bytes(128),
    "matroska": ebml_header(b"matroska") + bytes(32),
    "random": b"\x00" + random.Random(20240601).randbytes(4095),
    "riff_avi": b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(64),
    "id3_without_audio": id3_tag(50) + b"not an mpeg frame" * 4,
    "truncated_id3": id3_tag(10_000)[:2_000],
    "zip": b"PK\x03\x04\x14\x00\x00\x00" + bytes(64),
}


@pytest.mark.parametrize("data", NOT_AUDIO.values(), ids=NOT_AUDIO.keys())
def test_bytes_in_no_supported_format_are_a_415_that_lists_the_supported_formats(data):
    with pytest.raises(UnsupportedMediaType) as raised:
        sniff_audio_format(data)
    error = raised.value
    assert (error.status_code, error.param, error.code) == (415, "file", "unsupported_audio_format")
    assert SUPPORTED_FORMATS_TEXT in error.message


def test_matroska_that_is_not_webm_says_so():
    with pytest.raises(UnsupportedMediaType, match="not WebM"):
        sniff_audio_format(NOT_AUDIO["matroska"])


def test_a_file_named_mp3_whose_bytes_are_text_is_refused():
    # Given a text file uploaded as "notes.mp3" in a well-formed request
    content_type, body = multipart_body(NOT_AUDIO["text"], filename="notes.mp3", model="whisper-1")
    # Then the name is not believed: the bytes decide, and they are not audio
    with pytest.raises(UnsupportedMediaType) as raised:
        parse_transcription_request(
            Task.TRANSCRIBE, content_type, body, max_audio_bytes=4_194_304, max_upload_bytes=25_000_000
        )
    assert (raised.value.status_code, raised.value.code) == (415, "unsupported_audio_format")


@pytest.mark.parametrize("brand", [b"avif", b"heic"])
def test_iso_bmff_images_are_not_mp4_audio(brand):
    image = ftyp_box(brand, b"mif1", b"miaf") + b"\x00\x00\x00\x21meta" + bytes(64)
    with pytest.raises(UnsupportedMediaType):
        sniff_audio_format(image)
