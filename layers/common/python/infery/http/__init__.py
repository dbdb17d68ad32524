"""The HTTP edge of the API function: its routes (one powertools Router per resource), parsing a request
(multipart or JSON), Idempotency-Key handling, the OpenAPI document, and the one mapping of domain errors to
HTTP responses."""
