"""The local stack: the real handlers behind a local API Gateway, moto for AWS, and the real model server."""
