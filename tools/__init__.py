"""Developer tools run from the repository root (`make openapi`)."""
