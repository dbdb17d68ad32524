"""How long an audio file plays, read from its container before any inference: the basis of a reservation.

mutagen reads MP3 (Xing/VBRI headers, else the bitrate), MP4/M4A, WAV, OGG and FLAC; WebM's
duration sits in its EBML Segment Info, and its sample rate in its audio track's entry, read here. A
file whose header does not say returns None, and the caller reserves a bound it can justify instead.
A WAV header can also say what no decoder reads (0 bits per sample): ``check_decodable`` refuses it.
"""

from __future__ import annotations

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

from infery.domain.audio import AudioFormat
from infery.domain.errors import InvalidRequest
from infery.domain.ranged_audio import AudioBytes, open_audio

# mutagen's file types are not annotated: what they read is taken as Any, and every value is checked before use

_OGG_KINDS: tuple[type[OggFileType], ...] = (OggOpus, OggVorbis, OggFLAC, OggSpeex, OggTheora)
_MUTAGEN_KINDS = {AudioFormat.MP3: MP3, AudioFormat.MP4: MP4, AudioFormat.M4A: MP4, AudioFormat.FLAC: FLAC}

_SEGMENT, _INFO, _CLUSTER = 0x18538067, 0x1549A966, 0x1F43B675
_TIMECODE_SCALE, _DURATION = 0x2AD7B1, 0x4489
_TRACKS, _TRACK_ENTRY, _TRACK_TYPE, _AUDIO, _SAMPLING_FREQUENCY = 0x1654AE6B, 0xAE, 0x83, 0xE1, 0xB5
_AUDIO_TRACK = 2

# WAV format tags whose codec FFmpeg picks from the bits per sample: the sample sizes (in whole bytes) it decodes.
# Other tags (A-law, MP3, GSM...) carry their own codec, and often 0 bits per sample, legitimately.
_WAV_PCM, _WAV_FLOAT, _WAV_UNKNOWN = 0x0001, 0x0003, 0x0000
_WAV_DECODED_SAMPLE_BYTES = {_WAV_PCM: frozenset({1, 2, 3, 4, 8}), _WAV_FLOAT: frozenset({4, 8})}


def probe_sample_rate(audio: AudioBytes, audio_format: AudioFormat) -> int | None:
    """The sample rate the container declares, or None when it does not say (WebM, damaged headers)."""
    try:
        if audio_format is AudioFormat.WAV:
            rate = getattr(_info(WAVE, audio), "sample_rate", None)
        elif audio_format is AudioFormat.OGG:
            rate = getattr(_ogg_info(audio), "sample_rate", None)
        elif audio_format is AudioFormat.WEBM:
            rate = _webm_sample_rate(audio)
        elif audio_format in _MUTAGEN_KINDS:
            rate = getattr(_info(_MUTAGEN_KINDS[audio_format], audio), "sample_rate", None)
        else:
            return None
    except (MutagenError, ValueError, struct.error, IndexError, ZeroDivisionError):
        return None
    # rounded up: a header that says 0.5 Hz is refused as 1 Hz, not passed as "does not say"
    return math.ceil(rate) if isinstance(rate, int | float) and math.isfinite(rate) and rate > 0 else None


def check_decodable(audio: AudioBytes, audio_format: AudioFormat) -> None:
    """Refuse (400 ``undecodable_audio``) a WAV whose header says what no decoder reads: no channels, 0 Hz, an
    unknown format tag, or PCM or float samples of a size FFmpeg has no codec for (0 bits per sample). The model
    would only find out after credits are held. Headers that cannot be read at all are left to the model."""
    if audio_format is not AudioFormat.WAV:
        return
    try:
        info = _info(WAVE, audio)
    except (MutagenError, ValueError, struct.error, IndexError, ZeroDivisionError):
        return
    format_tag, bits = info.audio_format, info.bits_per_sample
    sample_sizes = _WAV_DECODED_SAMPLE_BYTES.get(format_tag)
    if format_tag == _WAV_UNKNOWN:
        reason = "its format tag is 0 (unknown)"
    elif not info.channels:
        reason = "it declares 0 channels"
    elif not info.sample_rate:
        reason = "it declares a sample rate of 0 Hz"
    elif sample_sizes is not None and (bits + 7) // 8 not in sample_sizes:
        reason = f"it declares {bits} bits per sample"
    else:
        return
    raise InvalidRequest(
        f"The audio could not be decoded: the WAV header is damaged ({reason}).",
        param="file",
        code="undecodable_audio",
    )


def _info(kind: Callable[..., Any], audio: AudioBytes) -> Any:
    """The stream information mutagen reads from the file's headers (raises MutagenError when it cannot)."""
    return kind(open_audio(audio)).info


def _ogg_info(audio: AudioBytes) -> Any:
    """The stream information of the first Ogg codec that reads the file (each kind is tried once), else None."""
    for kind in _OGG_KINDS:
        try:
            return _info(kind, audio)
        except MutagenError:
            continue
    return None


def probe_duration(audio: AudioBytes, audio_format: AudioFormat) -> float | None:
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


def _wav_duration(audio: AudioBytes) -> float:
    info = _info(WAVE, audio)
    # a WAV written as a stream declares a data size of 0xFFFFFFFF: the bytes present are the truth
    bytes_per_second = info.sample_rate * info.channels * max(1, info.bits_per_sample // 8)
    length = float(info.length)
    return min(length, len(audio) / bytes_per_second) if bytes_per_second else length


def _ogg_duration(audio: AudioBytes) -> float | None:
    info = _ogg_info(audio)
    return float(info.length) if info is not None else None


def _read_vint(data: AudioBytes, position: int, keep_marker: bool) -> tuple[int, int]:
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


def _elements(data: AudioBytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    position = start
    while position < min(end, len(data)):
        element_id, position = _read_vint(data, position, keep_marker=True)
        size, position = _read_vint(data, position, keep_marker=False)
        yield element_id, position, size
        if element_id == _SEGMENT:
            return  # the Segment holds the rest of the file, whatever its size field says
        position += size


def _webm_segment_children(audio: AudioBytes) -> Iterator[tuple[int, int, int]]:
    """The top-level elements of the Segment (Info, Tracks...) up to the first Cluster (the media)."""
    for element_id, segment_start, _ in _elements(audio, 0, len(audio)):
        if element_id != _SEGMENT:
            continue
        for child in _elements(audio, segment_start, len(audio)):
            if child[0] == _CLUSTER:
                return
            yield child
        return


def _webm_sample_rate(audio: AudioBytes) -> float | None:
    """The SamplingFrequency of the first audio track's entry, or None when no entry before the media says."""
    for child_id, child_start, child_size in _webm_segment_children(audio):
        if child_id != _TRACKS:
            continue
        for entry_id, entry_start, entry_size in _elements(audio, child_start, child_start + child_size):
            if entry_id != _TRACK_ENTRY:
                continue
            track_type, rate = None, None
            for field_id, field_start, field_size in _elements(audio, entry_start, entry_start + entry_size):
                if field_id == _TRACK_TYPE:
                    track_type = int.from_bytes(audio[field_start : field_start + field_size], "big")
                elif field_id == _AUDIO:
                    for audio_id, audio_start, audio_size in _elements(audio, field_start, field_start + field_size):
                        if audio_id == _SAMPLING_FREQUENCY:
                            rate = _ebml_float(audio[audio_start : audio_start + audio_size])
            if track_type == _AUDIO_TRACK and rate is not None:
                return float(rate)
    return None


def _ebml_float(payload: bytes) -> float:
    """An EBML float element's value: 4 bytes or 8, big-endian."""
    return float(struct.unpack(">f" if len(payload) == 4 else ">d", payload)[0])


def _webm_duration(audio: AudioBytes) -> float | None:
    for child_id, child_start, child_size in _webm_segment_children(audio):
        if child_id != _INFO:
            continue
        scale_ns, duration = 1_000_000, None
        for field_id, field_start, field_size in _elements(audio, child_start, child_start + child_size):
            payload = audio[field_start : field_start + field_size]
            if field_id == _TIMECODE_SCALE:
                scale_ns = int.from_bytes(payload, "big")
            elif field_id == _DURATION:
                duration = _ebml_float(payload)
        return duration * scale_ns / 1e9 if duration is not None else None
    return None  # no Info before the media began (a live recording)
