"""GET /v1/models and /v1/models/{model_id}: the deployed model and its aliases, as OpenAI lists models."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from infery.domain.errors import NotFound
from infery.http.routes.dependencies import Dependencies, json_response, new_router


def router(deps: Dependencies) -> APIGatewayRouter:
    router = new_router()

    @router.get("/v1/models")
    def list_models() -> Response[str]:
        _, rate_limit_headers = deps.authenticate()
        catalog = deps.wiring.catalog
        models = [catalog.describe(name) for name in catalog.names()]
        return json_response(200, {"object": "list", "data": models}, rate_limit_headers)

    @router.get("/v1/models/<model_id>")
    def retrieve_model(model_id: str) -> Response[str]:
        _, rate_limit_headers = deps.authenticate()
        catalog = deps.wiring.catalog
        if model_id not in catalog.names():
            raise NotFound(
                f"The model '{model_id}' does not exist on this deployment.", param="model", code="model_not_found"
            )
        return json_response(200, catalog.describe(model_id), rate_limit_headers)

    return router
