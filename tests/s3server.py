"""moto's S3 server on 127.0.0.1 for tests, with one bucket, test credentials in this process's environment and
semmem.storage pointed at it; all of it undone on exit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from semmem import storage
from tests.standalone import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "semmem", "AWS_SECRET_ACCESS_KEY": "semmem-secret", "AWS_REGION": "us-east-1"}


@contextmanager
def moto_server(log: Path, bucket: str) -> Iterator[str]:
    """Start the server (its output to `log`), create `bucket`, yield the endpoint URL."""
    port = free_port()
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*CREDENTIALS, storage.ENDPOINT_ENV]}
    os.environ.update(CREDENTIALS)
    try:
        import boto3

        end = time.monotonic() + 60
        while True:
            try:
                boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
                break
            except Exception:  # noqa: BLE001 - not listening yet
                if time.monotonic() > end:
                    raise
                time.sleep(0.3)
        storage.configure(endpoint_url=endpoint)
        yield endpoint
    finally:
        server.terminate()
        server.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        storage.configure()
