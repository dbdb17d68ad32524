"""The HTTP edge of the API function: parsing a request (multipart or JSON), idempotency, the OpenAPI document,
and the one mapping of domain errors to HTTP responses."""
