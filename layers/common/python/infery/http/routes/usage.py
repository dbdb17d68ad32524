"""GET /v1/usage: the calling key's balance, its totals per day and per model, and its recent requests (or CSV)."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from infery.domain.errors import InvalidRequest
from infery.http.routes.dependencies import Dependencies, json_response, new_router


def router(deps: Dependencies) -> APIGatewayRouter:
    router = new_router()

    @router.get("/v1/usage")
    def get_usage() -> Response[str]:
        """The calling key's balance, its totals per day and per model, and its recent requests."""
        from infery.usecases.usage import ledger_csv, period, usage_report

        key, rate_limit_headers = deps.authenticate()
        query = deps.query()
        try:
            days = int(query.get("days", "30"))
        except ValueError:
            days = 0
        if not 1 <= days <= 366:
            raise InvalidRequest("'days' must be a whole number from 1 to 366.", param="days", code="invalid_days")
        usage_format = query.get("format", "json")
        if usage_format not in ("json", "csv"):
            raise InvalidRequest("'format' must be json or csv.", param="format", code="invalid_value")
        since, until = period(days=days)
        entries = deps.wiring.credits.ledger(key.key_id, since=since, until=until, parts=key.ledger_parts)
        if usage_format == "csv":  # the period's ledger entries, as the operator's `infery usage --csv` writes them
            filename = f"infery-usage-{key.key_id}-{days}d.csv"
            return Response(
                200,
                "text/csv; charset=utf-8",
                ledger_csv(entries),
                headers={**rate_limit_headers, "Content-Disposition": f'attachment; filename="{filename}"'},
            )
        report = usage_report(entries, balance=deps.wiring.credits.balance(key.key_hash), since=since, until=until)
        return json_response(200, {"key_id": key.key_id, "name": key.name, **report}, rate_limit_headers)

    return router
