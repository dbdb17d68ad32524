"""The public API (transcriptions, translations, uploads, jobs, models, usage): a thin adapter over infery.

The routes live in infery.http.routes, one powertools Router per resource; this module builds the resolver that
includes them, maps errors to responses, and is the Lambda handler.
"""

from __future__ import annotations

import os

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext
from infery import snapstart
from infery.domain.errors import InferyError, NotFound
from infery.http.errors import error_response, unexpected_error_response
from infery.http.routes import console, jobs, models, transcriptions, usage
from infery.http.routes.dependencies import Dependencies
from infery.observability import logger, metrics
from infery.settings import get_api_settings
from infery.wiring import Wiring

# A cold start imports what every request needs, no more (benchmarks/cold_start.py measures it): what only some
# routes use (request parsing and its pydantic models, usage reports, powertools Idempotency) is imported by the
# route that uses it, on its first call.

settings = get_api_settings()
# every collaborator (clients, stores, the use cases), each built on its first use
wiring = Wiring(settings)
app = APIGatewayRestResolver()
# what the routes share, this instance's own: Idempotency-Key records are named after this module, as on AWS
dependencies = Dependencies(app, settings, wiring, handler_module=__name__)
app.include_router(transcriptions.router(dependencies))
app.include_router(jobs.router(dependencies))
app.include_router(models.router(dependencies))
app.include_router(usage.router(dependencies))
# the web console's files, shipped with this function (functions/transcribe/console/)
app.include_router(console.router(dependencies, os.path.join(os.path.dirname(os.path.abspath(__file__)), "console")))


def _before_snapshot() -> None:
    snapstart.prepare(wiring)
    dependencies.idempotency.prepare()


# With Lambda SnapStart (template.yaml) the snapshot holds what the first requests need, and every copy restored
# from it reseeds what must differ between copies; elsewhere nothing is registered.
snapstart.register(before_snapshot=_before_snapshot, after_restore=snapstart.restored)


@app.exception_handler(InferyError)
def handle_infery_error(error: InferyError) -> Response[str]:
    logger.info("request refused", extra={"status": error.status_code, "code": error.code})
    response = error_response(error)
    # the error's own headers (a 429's remaining 0, Retry-After) win over the counted request's
    response.headers = {**app.context.get("rate_limit_headers", {}), **response.headers}
    return response


@app.exception_handler(Exception)
def handle_unexpected_error(error: Exception) -> Response[str]:
    logger.exception("unexpected error")
    return unexpected_error_response(dependencies.request_id())


@app.not_found
def handle_not_found(_: Exception) -> Response[str]:
    return error_response(
        NotFound(f"Unknown request URL: {app.current_event.http_method} {app.current_event.path}.", code="unknown_url")
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    response = app.resolve(event, context)
    request_id = event.get("requestContext", {}).get("requestId", context.aws_request_id)
    response.setdefault("multiValueHeaders", {})["x-request-id"] = [request_id]
    return response
