"""The Whisper model server: SageMaker's container contract, running faster-whisper.

- ``GET /ping`` and ``POST /invocations``: what SageMaker calls inside the container.
- ``POST /endpoints/{name}/invocations``: what boto3's ``sagemaker-runtime`` calls, answered the way
  the SageMaker runtime front end answers it (model errors wrapped as ``ModelError``), so the local
  stack points ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` here and the Lambda code path stays the same.

The model is loaded once at start-up. Requests run in parallel threads: CTranslate2 runs up to
``num_workers`` transcriptions at once, with no lock of ours that would serialise them. Each
request is decoded in full, without voice-activity filtering, so no speech is dropped to go faster.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from faster_whisper import WhisperModel, decode_audio
from infery.inference import InferenceRequest, InferenceResult, Segment, Task, Word
from pydantic import ValidationError

logger = logging.getLogger("whisper_server")
SAMPLE_RATE = 16_000
# Whisper's own fallback schedule: temperature 0 first, hotter only when decoding fails its checks.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
_RUNTIME_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")


class InferenceFailure(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> bytes:
        return json.dumps({"error": self.message, "code": self.code}).encode()


@dataclass(frozen=True)
class ServerConfig:
    model_dir: str
    device: str = "auto"
    compute_type: str = "default"
    num_workers: int = 2
    cpu_threads: int = 0
    beam_size: int = 5
    host: str = "0.0.0.0"
    port: int = 8080
    endpoint_name: str | None = None


class WhisperTranscriber:
    def __init__(self, config: ServerConfig) -> None:
        self.model = WhisperModel(config.model_dir, device=config.device, compute_type=config.compute_type,
                                  num_workers=config.num_workers, cpu_threads=config.cpu_threads,
                                  local_files_only=True)
        self.beam_size = config.beam_size

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    def transcribe(self, request: InferenceRequest) -> InferenceResult:
        if request.language and request.language != "en" and not self.multilingual:
            raise InferenceFailure(400, "unsupported_language",
                                   f"This deployment's model is English-only; it cannot transcribe language "
                                   f"'{request.language}'.")
        audio = _decode(_audio_bytes(request))
        temperature = FALLBACK_TEMPERATURES if not request.temperature else (request.temperature,)
        segments_iter, info = self.model.transcribe(
            audio,
            task=request.task.value if self.multilingual else Task.TRANSCRIBE.value,
            language=request.language or ("en" if not self.multilingual else None),
            initial_prompt=request.prompt or None,
            temperature=list(temperature),
            beam_size=self.beam_size,
            word_timestamps=request.word_timestamps,
            vad_filter=False,
        )
        segments: list[Segment] = []
        words: list[Word] = []
        for index, segment in enumerate(segments_iter):
            segments.append(Segment(
                id=index, seek=segment.seek, start=round(float(segment.start), 3), end=round(float(segment.end), 3),
                text=segment.text, tokens=list(segment.tokens), temperature=float(segment.temperature or 0.0),
                avg_logprob=float(segment.avg_logprob), compression_ratio=float(segment.compression_ratio),
                no_speech_prob=float(segment.no_speech_prob)))
            words.extend(Word(word=word.word.strip(), start=round(float(word.start), 3),
                              end=round(float(word.end), 3)) for word in segment.words or [])
        return InferenceResult(
            text="".join(segment.text for segment in segments).strip(),
            language=info.language,
            duration=round(float(info.duration), 3),
            segments=segments,
            words=words if request.word_timestamps else None,
        )


def _audio_bytes(request: InferenceRequest) -> bytes:
    if request.audio_s3_uri:
        return _read_s3_object(request.audio_s3_uri)
    try:
        return base64.b64decode(request.audio or "", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InferenceFailure(400, "invalid_request", "'audio' is not valid base64.") from exc


@lru_cache(maxsize=1)
def _s3_client() -> Any:
    import boto3  # only needed for audio sent by reference; AWS_ENDPOINT_URL_S3 points it at moto locally

    return boto3.client("s3")


def _read_s3_object(uri: str) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        return _s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NoSuchBucket", "AccessDenied", "403"):
            raise InferenceFailure(400, "invalid_request", f"The audio object {uri} cannot be read ({code}).") \
                from exc
        raise InferenceFailure(503, "storage_unavailable", f"S3 failed while reading {uri}: {code}") from exc
    except BotoCoreError as exc:
        raise InferenceFailure(503, "storage_unavailable", f"S3 cannot be reached: {exc}") from exc


def _decode(data: bytes) -> Any:
    try:
        samples = decode_audio(io.BytesIO(data), sampling_rate=SAMPLE_RATE)
    except Exception as exc:  # PyAV raises many error types for corrupt or unsupported input
        raise InferenceFailure(400, "undecodable_audio", f"The audio could not be decoded: {exc}") from exc
    if samples.size == 0:
        raise InferenceFailure(400, "undecodable_audio", "The audio file contains no audio samples.")
    return samples


class InferenceHandler(BaseHTTPRequestHandler):
    server: WhisperHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.info("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/ping":
            self._send(200, b'{"status": "ok"}')
        else:
            self._send(404, b'{"error": "not found", "code": "not_found"}')

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/invocations":
            status, payload = self._invoke(body)
            self._send(status, payload)
            return
        runtime_match = _RUNTIME_PATH.match(self.path)
        if runtime_match:
            self._invoke_as_sagemaker_runtime(runtime_match.group(1), body)
            return
        self._send(404, b'{"error": "not found", "code": "not_found"}')

    def _invoke(self, body: bytes) -> tuple[int, bytes]:
        try:
            request = InferenceRequest.model_validate_json(body)
            result = self.server.transcriber.transcribe(request)
            return 200, result.model_dump_json().encode()
        except ValidationError as exc:
            return 400, InferenceFailure(400, "invalid_request", f"Invalid inference request: {exc}").to_json()
        except InferenceFailure as exc:
            return exc.status, exc.to_json()
        except Exception:
            logger.exception("inference failed")
            return 500, InferenceFailure(500, "inference_failed", "The model failed on this request.").to_json()

    def _invoke_as_sagemaker_runtime(self, endpoint_name: str, body: bytes) -> None:
        expected = self.server.config.endpoint_name
        if expected and endpoint_name != expected:
            self._send(400, json.dumps({"message": f"Endpoint {endpoint_name} not found."}).encode(),
                       {"x-amzn-ErrorType": "ValidationError"})
            return
        status, payload = self._invoke(body)
        if status == 200:
            self._send(200, payload)
            return
        kind = "client" if status < 500 else "server"
        wrapped = {
            "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
            "Message": f"Received {kind} error ({status}) from primary with message \"{payload.decode()}\".",
            "OriginalMessage": payload.decode(),
            "OriginalStatusCode": status,
            "LogStreamArn": f"arn:aws:logs:local:000000000000:log-group:/aws/sagemaker/Endpoints/{endpoint_name}",
        }
        self._send(424, json.dumps(wrapped).encode(), {"x-amzn-ErrorType": "ModelError"})

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class WhisperHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, config: ServerConfig, transcriber: WhisperTranscriber) -> None:
        self.config = config
        self.transcriber = transcriber
        super().__init__((config.host, config.port), InferenceHandler)


def config_from_args(argv: list[str] | None = None) -> ServerConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get
    parser.add_argument("--model-dir", default=env("WHISPER_MODEL_DIR", env("SM_MODEL_DIR", "/opt/ml/model")))
    parser.add_argument("--device", default=env("WHISPER_DEVICE", "auto"))
    parser.add_argument("--compute-type", default=env("WHISPER_COMPUTE_TYPE", "default"))
    parser.add_argument("--num-workers", type=int, default=int(env("WHISPER_NUM_WORKERS", "2")))
    parser.add_argument("--cpu-threads", type=int, default=int(env("WHISPER_CPU_THREADS", "0")))
    parser.add_argument("--beam-size", type=int, default=int(env("WHISPER_BEAM_SIZE", "5")))
    parser.add_argument("--host", default=env("WHISPER_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(env("SAGEMAKER_BIND_TO_PORT", env("WHISPER_PORT", "8080"))))
    parser.add_argument("--endpoint-name", default=env("SAGEMAKER_ENDPOINT_NAME"),
                        help="answer /endpoints/{name}/invocations only for this name, as SageMaker does")
    return ServerConfig(**vars(parser.parse_args(argv)))


def serve(config: ServerConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    transcriber = WhisperTranscriber(config)
    server = WhisperHTTPServer(config, transcriber)
    logger.info("Whisper model from %s ready on %s:%s", config.model_dir, config.host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("stopping")
    finally:
        server.server_close()


if __name__ == "__main__":
    serve(config_from_args())
