"""Lambda SnapStart for the API function: what its snapshot holds, and what each copy restored from it redoes.

With SnapStart on (template.yaml, parameter ``SnapStart``), Lambda initialises a published version of the function
once, takes a snapshot of its memory, and starts each new execution environment of that version from the
snapshot instead of importing the handler again. The handler registers two runtime hooks with
``snapshot_restore_py``, the library Lambda's Python runtimes include:

- before the snapshot, :func:`prepare` imports what the routes otherwise import on their first call and builds
  every collaborator the API's requests use (AWS clients, stores, use cases), so that no restored copy's first
  request pays for them. It calls no AWS API: a connection opened now would be stale after a restore. The
  clients need no refresh: with SnapStart, Lambda hands the function its credentials through the container
  credentials endpoint, which boto3 reads again when they expire;
- after a restore, :func:`restored` reseeds ``random``. Every copy restored from one snapshot starts with the
  same generator state, so the jitter of retries (the credit transactions', botocore's) would be the same in
  copies that retry against each other, which is what the jitter is there to prevent. Nothing else the function
  keeps is per copy: ids and keys come from ``secrets`` and ``uuid4`` (the OS's randomness, drawn on each call),
  keys are read on every request, and the settings are the version's own.

Outside Lambda (the local stack, tests) there is no ``snapshot_restore_py``: :func:`register` registers nothing
and the hooks stay plain functions a test can call.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infery.wiring import Wiring

# What the API's routes import on their first call (a cold start without SnapStart imports only what every
# request needs): request parsing and its pydantic models, audio probing, job handling, usage reports, and
# Idempotency-Key handling with powertools Idempotency.
FIRST_CALL_MODULES = (
    "infery.http.request_parsing",
    "infery.http.idempotency",
    "infery.domain.transcription",
    "infery.domain.inference",
    "infery.domain.duration",
    "infery.domain.formats",
    "infery.usecases.jobs",
    "infery.usecases.job_views",
    "infery.usecases.usage",
    "aws_lambda_powertools.utilities.idempotency",
    "aws_lambda_powertools.utilities.idempotency.exceptions",
)
# The wiring's collaborators the API's requests use, each built on its first use otherwise.
API_COLLABORATORS = (
    "keys",
    "rate_limiter",
    "credits",
    "catalog",
    "transcription",
    "audio_store",
    "job_service",
    "job_presenter",
    "idempotency_config",
    "idempotency_store",
)


def register(before_snapshot: Callable[[], object], after_restore: Callable[[], object]) -> bool:
    """Register the hooks with Lambda's runtime; False where there is no such runtime (nothing registered)."""
    try:
        from snapshot_restore_py import (  # type: ignore[import-not-found]  # Lambda's runtime has it, PyPI too
            register_after_restore,
            register_before_snapshot,
        )
    except ImportError:  # not in Lambda's runtime: the local stack and the tests call the hooks themselves
        return False
    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)
    return True


def prepare(wiring: Wiring) -> None:
    """Before the snapshot: import what the first requests import, and build what they use, without calling AWS."""
    for module in FIRST_CALL_MODULES:
        importlib.import_module(module)
    for name in API_COLLABORATORS:
        getattr(wiring, name)


def restored() -> None:
    """After a restore: a generator state of this copy's own (from the OS's randomness)."""
    random.seed()
