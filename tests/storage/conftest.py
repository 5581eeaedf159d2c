"""Fixtures shared by the storage tests: a local S3 (`tests.storage.s3_server`)."""

from tests.storage.s3_server import base_uri, s3_endpoint

__all__ = ["base_uri", "s3_endpoint"]
