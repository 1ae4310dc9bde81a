"""A real S3-compatible server on 127.0.0.1 for the object-store tests.

moto's server runs in its own process and speaks the S3 HTTP API; the pipeline under test, its
Ray workers and pyarrow reach it exactly as they would reach AWS, through ``AWS_ENDPOINT_URL``.
Nothing is patched inside any process. Test code reads results back with boto3, a client
independent of the pyarrow code that wrote them.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}
# Settings from the developer's own AWS setup must not redirect the tests.
_FOREIGN = ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
            "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """moto's S3 server in a child process, listening on 127.0.0.1 only."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._wait_ready(timeout=60)
        self._check_multipart()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self._proc.returncode}")
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint} in {timeout:.0f} s")

    def _check_multipart(self) -> None:
        """pyarrow writes every object as a multipart upload; moto 5.2.1 answers its completion
        with the wrong XML root (getmoto/moto#10055), which pyarrow rejects. Say so plainly."""
        import pyarrow.fs as pafs

        bucket = self.create_bucket("probe")
        fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{self.port}", scheme="http",
                               access_key="testing", secret_key="testing", region="us-east-1")
        try:
            with fs.open_output_stream(f"{bucket}/probe") as f:
                f.write(b"x")
        except OSError as exc:
            import moto

            self.stop()
            raise RuntimeError(
                f"moto {moto.__version__} breaks pyarrow's S3 uploads ({exc}); "
                "install moto[server]>=5.2.2"
            ) from None

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that should use this server as its S3."""
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
        env.update(CREDENTIALS)
        env["AWS_ENDPOINT_URL"] = self.endpoint
        env.update(extra)
        return env

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint,
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            region_name=CREDENTIALS["AWS_REGION"])

    def create_bucket(self, prefix: str = "bucket") -> str:
        """A new, empty bucket with a unique name; returns the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` (paginated, sorted)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def read_bytes(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def read_parquet(self, bucket: str, key: str):
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.read_bytes(bucket, key)))

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
