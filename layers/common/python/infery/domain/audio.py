"""Recognise the container of an audio file from its bytes, never from its name."""

from __future__ import annotations

from enum import StrEnum

from infery.domain.errors import InvalidRequest, UnsupportedMediaType
from infery.domain.ranged_audio import AudioBytes

SUPPORTED_FORMATS_TEXT = "MP3, MP4, M4A, WAV, WebM, OGG, FLAC"


class AudioFormat(StrEnum):
    MP3 = "mp3"
    MP4 = "mp4"
    M4A = "m4a"
    WAV = "wav"
    WEBM = "webm"
    OGG = "ogg"
    FLAC = "flac"


_ISO_BMFF_IMAGE_BRANDS = frozenset(
    {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
)
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_EBML_DOCTYPE_ID = b"\x42\x82"


def _after_id3(data: AudioBytes) -> int:
    """Where the audio starts after the ID3v2 tags (10-byte header, syncsafe size) that may precede MP3 frames, and
    sometimes FLAC: an offset, so a large file is not copied to skip its tag."""
    position = 0
    while True:
        header = data[position : position + 10]
        if len(header) < 10 or header[:3] != b"ID3":
            return position
        size = (header[6] & 0x7F) << 21 | (header[7] & 0x7F) << 14 | (header[8] & 0x7F) << 7 | (header[9] & 0x7F)
        footer = 10 if header[5] & 0x10 else 0
        position += 10 + size + footer


def _is_mpeg_audio_frame(data: bytes) -> bool:
    if len(data) < 4 or data[0] != 0xFF or (data[1] & 0xE0) != 0xE0:
        return False
    version = (data[1] >> 3) & 0x3
    layer = (data[1] >> 1) & 0x3
    bitrate_index = data[2] >> 4
    sample_rate_index = (data[2] >> 2) & 0x3
    # layer 0 is AAC's ADTS header, which is not one of our formats
    return version != 1 and layer != 0 and bitrate_index != 0xF and sample_rate_index != 0x3


def _ebml_doctype(data: bytes) -> bytes | None:
    position = data.find(_EBML_DOCTYPE_ID, 4, 64)
    if position < 0 or position + 3 > len(data):
        return None
    size_byte = data[position + 2]
    if not size_byte & 0x80:  # only the one-byte size form is used for DocType in practice
        return None
    size = size_byte & 0x7F
    return data[position + 3 : position + 3 + size].rstrip(b"\x00")


def sniff_audio_format(data: AudioBytes) -> AudioFormat:
    """Return the container of ``data`` or raise a 400/415 that says what is wrong."""
    if not data:
        raise InvalidRequest("The audio file is empty.", param="file", code="empty_file")
    head = data[:4096]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return AudioFormat.WAV
    if head[:4] == b"OggS":
        return AudioFormat.OGG
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _ISO_BMFF_IMAGE_BRANDS:  # HEIF/AVIF photos share MP4's container
            raise UnsupportedMediaType(
                f"The file is an image, not audio. Supported audio formats: {SUPPORTED_FORMATS_TEXT}.",
                param="file",
                code="unsupported_audio_format",
            )
        return AudioFormat.M4A if brand in (b"M4A ", b"M4B ") else AudioFormat.MP4
    if head[:4] == _EBML_MAGIC:
        if _ebml_doctype(head) == b"webm":
            return AudioFormat.WEBM
        raise UnsupportedMediaType(
            f"This Matroska file is not WebM. Supported audio formats: {SUPPORTED_FORMATS_TEXT}.",
            param="file",
            code="unsupported_audio_format",
        )
    # ID3 tags can be large (cover art), so skip them over the whole file, not the sniffed window
    start = _after_id3(data) if head[:3] == b"ID3" else 0
    after_tag = data[start : start + 16] if start else head
    if after_tag[:4] == b"fLaC":
        return AudioFormat.FLAC
    if _is_mpeg_audio_frame(after_tag):
        return AudioFormat.MP3
    raise UnsupportedMediaType(
        f"The file is not audio in a supported format. Supported audio formats: {SUPPORTED_FORMATS_TEXT}.",
        param="file",
        code="unsupported_audio_format",
    )
