"""Real services for tests: an `mlflow server` on 127.0.0.1, stopped by the PIDs it started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_tree(pid: int, timeout: float = 30) -> None:
    """SIGKILL a process and its children (the server's gunicorn/uvicorn workers), by PID only."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=timeout)


class _Service:
    """A server process of ours: started, polled until ``ready()`` answers, stopped by its PID tree."""

    name = "service"
    log_name = "server.log"
    poll_s = 1.0

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = Path(folder)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 180, env: dict | None = None):
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / self.log_name, "ab")
        self.proc = subprocess.Popen(self.command(), env={**os.environ, **(env or {})}, stdout=log,
                                     stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = time.time() + timeout
        while True:
            try:
                if self.ready():
                    return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not come up:\n{(self.folder / self.log_name).read_text()[-3000:]}")
            time.sleep(self.poll_s)

    def stop(self) -> None:
        if self.proc is not None:
            stop_tree(self.proc.pid)
            self.proc.wait(timeout=30)
            self.proc = None


class MlflowServer(_Service):
    """`mlflow server` with a sqlite store in ``folder``; start() again reuses the same store."""

    name = "mlflow server"

    def __init__(self, folder: Path, port: int | None = None):
        super().__init__(folder, port)
        self.uri = f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
                "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", "1"]

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as r:
            return r.status == 200

    def start(self, timeout: float = 180) -> "MlflowServer":
        return super().start(timeout, env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})


class S3Server(_Service):
    """An S3-compatible server (moto's `moto_server`) on 127.0.0.1 with one bucket; ``env`` points the
    AWS SDKs and pyarrow at it, as AWS_ENDPOINT_URL does for MinIO or any other S3 service."""

    name = "moto_server"
    log_name = "s3.log"
    poll_s = 0.3

    def __init__(self, folder: Path, bucket: str = "growthpace-test"):
        super().__init__(folder)
        self.bucket = bucket
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def command(self) -> list[str]:
        return [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

    def ready(self) -> bool:  # creating the bucket is the readiness probe
        req = urllib.request.Request(f"{self.endpoint}/{self.bucket}", method="PUT")
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200

    def start(self, timeout: float = 60) -> "S3Server":
        return super().start(timeout)
