"""`infery transcribe FILE`: the sync call for small files; upload, job and polling (with progress) for large ones."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import requests
from infery.domain.transcription import ResponseFormat
from infery.settings import DEFAULT_MAX_SYNC_AUDIO_BYTES
from requests_toolbelt.multipart.encoder import MultipartEncoder, MultipartEncoderMonitor
from tqdm import tqdm

from .local_state import local_state_file, running_local_stack

DEFAULT_BASE_URL = "http://127.0.0.1:3000/v1"
# the synchronous path's limit (MaxSyncAudioBytes, as deployed by default): anything larger goes through an upload
# and a job
SYNC_LIMIT_BYTES = DEFAULT_MAX_SYNC_AUDIO_BYTES
FORMATS = tuple(response_format.value for response_format in ResponseFormat)


class ClientError(Exception):
    """What the API (or the network) said, for the user; printed without a traceback."""


def _raise_for_error(response: requests.Response) -> None:
    if response.ok:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300] or response.reason
    raise ClientError(f"{response.status_code}: {message}")


class InferyClient:
    def __init__(self, base_url: str, api_key: str, *, poll_seconds: float = 1.0, show_progress: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.poll_seconds = poll_seconds
        self.show_progress = show_progress

    def transcribe(
        self, path: Path, *, response_format: str, language: str | None, model: str, force_job: bool = False
    ) -> str:
        options = {"model": model, "response_format": response_format, **({"language": language} if language else {})}
        if path.stat().st_size <= SYNC_LIMIT_BYTES and not force_job:
            return self._transcribe_sync(path, options)
        return self._transcribe_as_job(path, options)

    def _transcribe_sync(self, path: Path, options: dict[str, str]) -> str:
        with path.open("rb") as audio:
            response = self.session.post(
                f"{self.base_url}/audio/transcriptions", data=options, files={"file": (path.name, audio)}, timeout=120
            )
        _raise_for_error(response)
        return response.text

    def _transcribe_as_job(self, path: Path, options: dict[str, str]) -> str:
        response = self.session.post(f"{self.base_url}/uploads", json={"filename": path.name, **options}, timeout=30)
        _raise_for_error(response)
        upload = response.json()
        if path.stat().st_size > upload["max_bytes"]:
            raise ClientError(
                f"{path} is {path.stat().st_size / 1e6:.1f} MB; this deployment takes files up to "
                f"{upload['max_bytes'] / 1e6:.0f} MB."
            )
        self._upload(path, upload)
        job = self._wait_for(upload["job_id"])
        if job["status"] != "succeeded":
            error = job.get("error") or {}
            raise ClientError(f"the job failed: {error.get('message', 'no reason given')}")
        result = self.session.get(
            f"{self.base_url}/jobs/{job['id']}/result",
            params={"response_format": options["response_format"]},
            timeout=60,
        )
        _raise_for_error(result)
        return result.text

    def _upload(self, path: Path, upload: dict[str, Any]) -> None:
        with (
            path.open("rb") as audio,
            tqdm(
                total=path.stat().st_size,
                unit="B",
                unit_scale=True,
                desc="upload",
                disable=not self.show_progress,
                file=sys.stderr,
            ) as bar,
        ):
            encoder = MultipartEncoder(fields={**upload["fields"], "file": (path.name, audio)})
            sent = [0]

            def advance(monitor: MultipartEncoderMonitor) -> None:
                bar.update(min(monitor.bytes_read, bar.total) - sent[0])
                sent[0] = min(monitor.bytes_read, bar.total)

            monitor = MultipartEncoderMonitor(encoder, advance)
            # the presigned URL carries its own authorisation: no API key goes to S3
            response = requests.post(
                upload["upload_url"], data=monitor, timeout=600, headers={"Content-Type": monitor.content_type}
            )
        if not response.ok:
            raise ClientError(f"the upload failed: {response.status_code} {response.text[:300]}")

    def _wait_for(self, job_id: str) -> dict[str, Any]:
        with tqdm(
            total=100,
            desc="transcribe",
            unit="%",
            disable=not self.show_progress,
            file=sys.stderr,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}",
        ) as bar:
            while True:
                response = self.session.get(f"{self.base_url}/jobs/{job_id}", timeout=30)
                _raise_for_error(response)
                job = response.json()
                bar.set_description_str(f"transcribe ({job['status']})")
                bar.update(round(float(job.get("progress") or 0) * 100) - bar.n)
                if job["status"] in ("succeeded", "failed"):
                    return job
                time.sleep(self.poll_seconds)


def add_client_commands(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser("transcribe", help="transcribe an audio file (any size up to the upload limit)")
    command.add_argument("file", type=Path)
    command.add_argument("--format", dest="response_format", choices=FORMATS, default="text")
    command.add_argument("--language", help="ISO-639-1 code, e.g. en")
    command.add_argument("--model", default="whisper-1")
    command.add_argument("--output", "-o", type=Path, help="write the transcript here instead of to stdout")
    command.add_argument("--api-key", default=os.environ.get("INFERY_API_KEY"), help="default: $INFERY_API_KEY")
    command.add_argument(
        "--base-url",
        help="default: $INFERY_BASE_URL, else the running local stack's (its state "
        f"file, $INFERY_STATE_FILE), else {DEFAULT_BASE_URL}",
    )
    command.add_argument("--job", action="store_true", help="use the upload and job flow even for a small file")
    command.add_argument("--no-progress", action="store_true")
    command.set_defaults(run_client=run_transcribe)


def resolve_base_url(given: str | None) -> tuple[str, str]:
    """The API's base URL and where it came from: --base-url, $INFERY_BASE_URL, the running local stack, or the
    local stack's default address."""
    if given:
        return given, "--base-url"
    if os.environ.get("INFERY_BASE_URL"):
        return os.environ["INFERY_BASE_URL"], "INFERY_BASE_URL"
    state = running_local_stack()
    if state is not None:
        return str(state["base_url"]), f"the local stack's state file {local_state_file()}"
    return DEFAULT_BASE_URL, "the default; no local stack's state file was found"


def run_transcribe(args: argparse.Namespace) -> None:
    if not args.api_key:
        raise ClientError("no API key: set INFERY_API_KEY or pass --api-key")
    if not args.file.is_file():
        raise ClientError(f"{args.file} is not a file")
    args.base_url, source = resolve_base_url(args.base_url)
    print(f"infery: using {args.base_url} ({source})", file=sys.stderr)
    client = InferyClient(args.base_url, args.api_key, show_progress=not args.no_progress)
    try:
        transcript = client.transcribe(
            args.file,
            response_format=args.response_format,
            language=args.language,
            model=args.model,
            force_job=args.job,
        )
    except requests.RequestException as exc:
        raise ClientError(f"cannot reach {args.base_url}: {exc}") from exc
    if args.output:
        args.output.write_text(transcript)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(transcript if transcript.endswith("\n") else transcript + "\n")
