"""The web console: static files shipped with the API function, read at cold start. No key is needed to load them;
the page calls the API with the key its user pastes."""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

from aws_lambda_powertools.event_handler import Response

from infery.domain.errors import NotFound
from infery.http.routes.dependencies import new_router

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.router import APIGatewayRouter

    from infery.http.routes.dependencies import Dependencies

_CONSOLE_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# Its own script and style only; it talks to this API and to the audio bucket's presigned upload URL (large files),
# and to nothing else: a script injected into the page could otherwise send the pasted key to any host.
_CONSOLE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "connect-src 'self' {upload_origins}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def router(deps: Dependencies, directory: str) -> APIGatewayRouter:
    """The console's routes, serving the files in ``directory`` (the function's console/)."""
    router = new_router()
    files = _load_console(directory)

    @cache
    def console_headers() -> dict[str, str]:
        return _console_headers(deps)

    def console_file(name: str) -> Response[str]:
        found = files.get(name)
        if found is None:
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise NotFound(f"Unknown request URL: GET /console/{shown}.", code="unknown_url")
        content_type, body = found
        return Response(200, content_type, body, headers=console_headers())

    @router.get("/console")
    def console_page() -> Response[str]:
        return console_file("index.html")

    @router.get("/console/<asset>")
    def console_asset(asset: str) -> Response[str]:
        return console_file(asset)

    return router


def _console_headers(deps: Dependencies) -> dict[str, str]:
    """The console's headers. Its connect-src names where POST /v1/uploads sends the browser: the origin of a
    presigned POST made as that route makes one (signed here, never used), so it is the bucket's endpoint when
    deployed and the local stack's S3 on this machine, with no other host or port allowed."""
    import urllib.parse

    upload = urllib.parse.urlsplit(deps.wiring.audio_store.presigned_upload("key_console", "upl_console")["url"])
    origins = [f"{upload.scheme}://{upload.netloc}"]
    if upload.hostname and upload.hostname.endswith(".s3.amazonaws.com"):
        # the global name, which S3 answers with a redirect to the bucket's regional endpoint while a new bucket's
        # DNS settles: the browser follows it, so that host is allowed too
        regional = upload.hostname.removesuffix(".amazonaws.com") + f".{deps.wiring.s3.meta.region_name}.amazonaws.com"
        origins.append(f"https://{regional}")
    return {
        "Content-Security-Policy": _CONSOLE_POLICY.format(upload_origins=" ".join(origins)),
        "X-Frame-Options": "DENY",  # as frame-ancestors 'none', for browsers that predate it
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _load_console(directory: str) -> dict[str, tuple[str, str]]:
    files: dict[str, tuple[str, str]] = {}
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        content_type = _CONSOLE_TYPES.get(os.path.splitext(name)[1])
        if content_type:
            with open(os.path.join(directory, name), encoding="utf-8") as file:
                files[name] = (content_type, file.read())
    return files
