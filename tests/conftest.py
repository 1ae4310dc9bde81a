"""Shared pytest fixtures."""

import pytest


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto, in its own process) on 127.0.0.1; see tests/s3_server.py."""
    from tests.s3_server import S3Server

    server = S3Server()
    yield server
    server.stop()
