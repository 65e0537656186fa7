"""A real S3 API server on loopback for tests: moto's standalone server (`moto[server]`).

Clients (s3fs, botocore, DuckDB through fsspec, subprocesses, Ray workers started with
this environment) find it through the standard AWS variables: `AWS_ENDPOINT_URL` points
botocore at the server, the keys are moto's dummy credentials.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _moto_server_command() -> list[str]:
    exe = Path(sys.executable).with_name("moto_server")
    return [str(exe)] if exe.exists() else [shutil.which("moto_server") or "moto_server"]


class S3Server:
    def __init__(self, port: int, proc: subprocess.Popen):
        self.port = port
        self.proc = proc
        self.endpoint = f"http://127.0.0.1:{port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def filesystem(self):
        """A fresh s3fs filesystem talking to this server (no instance cache)."""
        import s3fs

        return s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=self.endpoint, skip_instance_cache=True)

    def make_bucket(self, name: str) -> str:
        self.filesystem().mkdir(name)
        return name


def _forget_s3_clients() -> None:
    """fsspec keeps one S3 filesystem per set of arguments, and the endpoint it reached is
    not among them: one made for another test's server (now stopped) must not be reused."""
    try:
        import s3fs
    except ImportError:
        return
    s3fs.S3FileSystem.clear_instance_cache()


@contextlib.contextmanager
def moto_s3(set_environ: bool = True) -> Iterator[S3Server]:
    """Start moto's S3 server on 127.0.0.1:<free port>; stop it on exit.

    With `set_environ`, this process's environment points at it while the block runs (so
    fsspec URLs `s3://...` reach it here and in child processes).
    """
    port = free_port()
    proc = subprocess.Popen(
        [*_moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = S3Server(port, proc)
    saved = {k: os.environ.get(k) for k in server.env}
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start within 30 s") from None
                time.sleep(0.05)
        if set_environ:
            os.environ.update(server.env)
        _forget_s3_clients()
        yield server
    finally:
        _forget_s3_clients()
        if set_environ:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
