"""How long an audio file plays, read from its container before any inference: the basis of a reservation.

mutagen reads MP3 (Xing/VBRI headers, else the bitrate), MP4/M4A, WAV, OGG and FLAC; WebM's
duration sits in its EBML Segment Info, read here. A file whose header does not say returns None,
and the caller reserves a bound it can justify instead.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Callable, Iterator
from typing import Any

from mutagen import MutagenError
from mutagen.flac import FLAC
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4
from mutagen.ogg import OggFileType
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggspeex import OggSpeex
from mutagen.oggtheora import OggTheora
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from .audio import AudioFormat

# mutagen's file types are not annotated: what they read is taken as Any, and every value is checked before use

_OGG_KINDS: tuple[type[OggFileType], ...] = (OggOpus, OggVorbis, OggFLAC, OggSpeex, OggTheora)
_MUTAGEN_KINDS = {AudioFormat.MP3: MP3, AudioFormat.MP4: MP4, AudioFormat.M4A: MP4, AudioFormat.FLAC: FLAC}

_SEGMENT, _INFO, _CLUSTER = 0x18538067, 0x1549A966, 0x1F43B675
_TIMECODE_SCALE, _DURATION = 0x2AD7B1, 0x4489


def probe_sample_rate(audio: bytes, audio_format: AudioFormat) -> int | None:
    """The sample rate the container declares, or None when it does not say (WebM, damaged headers)."""
    try:
        if audio_format is AudioFormat.WAV:
            info = _info(WAVE, audio)
        elif audio_format is AudioFormat.OGG:
            info = _ogg_info(audio)
        elif audio_format in _MUTAGEN_KINDS:
            info = _info(_MUTAGEN_KINDS[audio_format], audio)
        else:
            return None
    except (MutagenError, ValueError, struct.error, IndexError, ZeroDivisionError):
        return None
    rate = getattr(info, "sample_rate", None)
    return int(rate) if isinstance(rate, int | float) and rate > 0 else None


def _info(kind: Callable[..., Any], audio: bytes) -> Any:
    """The stream information mutagen reads from the file's headers (raises MutagenError when it cannot)."""
    return kind(io.BytesIO(audio)).info


def _ogg_info(audio: bytes) -> Any:
    """The stream information of the first Ogg codec that reads the file (each kind is tried once), else None."""
    for kind in _OGG_KINDS:
        try:
            return _info(kind, audio)
        except MutagenError:
            continue
    return None


def probe_duration(audio: bytes, audio_format: AudioFormat) -> float | None:
    """Seconds of audio the container declares, or None when it does not say (or cannot be read)."""
    try:
        if audio_format is AudioFormat.WEBM:
            seconds = _webm_duration(audio)
        elif audio_format is AudioFormat.OGG:
            seconds = _ogg_duration(audio)
        elif audio_format is AudioFormat.WAV:
            seconds = _wav_duration(audio)
        else:
            seconds = _info(_MUTAGEN_KINDS[audio_format], audio).length
    except (MutagenError, ValueError, struct.error, IndexError, ZeroDivisionError):
        return None
    # a header can claim anything (0, NaN, infinity): only a finite, positive duration is believed
    return float(seconds) if seconds and math.isfinite(seconds) and seconds > 0 else None


def _wav_duration(audio: bytes) -> float:
    info = _info(WAVE, audio)
    # a WAV written as a stream declares a data size of 0xFFFFFFFF: the bytes present are the truth
    bytes_per_second = info.sample_rate * info.channels * max(1, info.bits_per_sample // 8)
    length = float(info.length)
    return min(length, len(audio) / bytes_per_second) if bytes_per_second else length


def _ogg_duration(audio: bytes) -> float | None:
    info = _ogg_info(audio)
    return float(info.length) if info is not None else None


def _read_vint(data: bytes, position: int, keep_marker: bool) -> tuple[int, int]:
    first = data[position]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise ValueError("invalid EBML variable-length integer")
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[position + 1 : position + length]:
        value = value << 8 | byte
    return value, position + length


def _elements(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    position = start
    while position < min(end, len(data)):
        element_id, position = _read_vint(data, position, keep_marker=True)
        size, position = _read_vint(data, position, keep_marker=False)
        yield element_id, position, size
        if element_id == _SEGMENT:
            return  # the Segment holds the rest of the file, whatever its size field says
        position += size


def _webm_duration(audio: bytes) -> float | None:
    for element_id, segment_start, _ in _elements(audio, 0, len(audio)):
        if element_id != _SEGMENT:
            continue
        for child_id, child_start, child_size in _elements(audio, segment_start, len(audio)):
            if child_id == _CLUSTER:
                return None  # the media began before any Info with a duration (a live recording)
            if child_id != _INFO:
                continue
            scale_ns, duration = 1_000_000, None
            for field_id, field_start, field_size in _elements(audio, child_start, child_start + child_size):
                payload = audio[field_start : field_start + field_size]
                if field_id == _TIMECODE_SCALE:
                    scale_ns = int.from_bytes(payload, "big")
                elif field_id == _DURATION:
                    duration = struct.unpack(">f" if field_size == 4 else ">d", payload)[0]
            return duration * scale_ns / 1e9 if duration is not None else None
    return None
