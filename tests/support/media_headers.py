"""Hand-built media headers that say what no decoder reads, or declare what a file is not: a WAV whose format
chunk says 0 bits per sample, and a WebM whose audio track declares its sample rate."""

from __future__ import annotations

import struct

WAV_PCM, WAV_FLOAT, WAV_ALAW, WAV_MP3 = 0x0001, 0x0003, 0x0006, 0x0055


def wav_with_header(
    *,
    format_tag: int = WAV_PCM,
    channels: int = 1,
    sample_rate: int = 16_000,
    bits_per_sample: int = 16,
    data: bytes = bytes(32_000),
) -> bytes:
    """The 44-byte canonical WAV header (RIFF, a 16-byte fmt chunk, the data chunk's header), then ``data``."""
    block_align = max(1, channels * bits_per_sample // 8)
    fmt = struct.pack(
        "<HHIIHH", format_tag, channels, sample_rate, sample_rate * block_align, block_align, bits_per_sample
    )
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


def zero_bit_wav(data_bytes: int = 32_000) -> bytes:
    """What the review sent: a PCM WAV whose header says 0 bits per sample (PyAV opens it with no codec)."""
    return wav_with_header(bits_per_sample=0, data=bytes(data_bytes))


def _element(element_id: bytes, payload: bytes) -> bytes:
    """An EBML element with an 8-byte size field."""
    return element_id + b"\x01" + len(payload).to_bytes(7, "big") + payload


def webm_declaring(
    sample_rate: float, *, codec: bytes = b"A_PCM/INT/LIT", seconds: float = 2.0, tail: bytes = bytes(4096)
) -> bytes:
    """A WebM (EBML header, Segment) whose Info declares ``seconds`` and whose one audio track (16-bit PCM unless
    ``codec`` says otherwise: FFmpeg then takes the track's rate as the stream's) declares ``sample_rate``, then a
    Cluster of ``tail``."""
    doctype = b"\x42\x82\x84webm"
    header = b"\x1a\x45\xdf\xa3" + bytes([0x80 | (4 + len(doctype))]) + b"\x42\x86\x81\x01" + doctype
    info = b"\x2a\xd7\xb1\x83" + (1_000_000).to_bytes(3, "big") + b"\x44\x89\x88" + struct.pack(">d", seconds * 1000)
    # SamplingFrequency, Channels, BitDepth
    audio = b"\xb5\x88" + struct.pack(">d", sample_rate) + b"\x9f\x81\x01" + b"\x62\x64\x81\x10"
    # TrackNumber, TrackType (2: audio), CodecID
    entry = b"\xd7\x81\x01" + b"\x83\x81\x02" + b"\x86" + bytes([0x80 | len(codec)]) + codec + _element(b"\xe1", audio)
    tracks = _element(b"\x16\x54\xae\x6b", _element(b"\xae", entry))
    segment = _element(b"\x15\x49\xa9\x66", info) + tracks + _element(b"\x1f\x43\xb6\x75", tail)
    return header + b"\x18\x53\x80\x67" + b"\x01" + b"\xff" * 7 + segment
