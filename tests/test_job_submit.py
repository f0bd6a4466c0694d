"""A tiny study submitted the way a team runs it: `ray job submit` to a running head node with token
auth, MLflow on a real `mlflow server`, results checked over HTTP, and the job's console (at most a
few lines a cell, Ray's output in <storage>/logs/ray.log) checked as a person reads it.

Isolation from other Ray clusters on the machine: the head node gets its own temp dir (/tmp/gpr-*),
its own free ports for every listener (GCS, dashboard, client server, node manager, object manager,
dashboard agent, metrics, runtime-env agent, a worker port range), all bound to 127.0.0.1, its own
auth token, and no RAY_ADDRESS is inherited. It is stopped by the PIDs of exactly its processes (found by its temp dir
and node id, plus their children), never `ray stop`. The MLflow server is stopped by its PID tree.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import pytest
import yaml

from growthpace.platform.core.abilities import ABILITIES

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JOB_TIMEOUT_S = 900  # a tiny study takes 1-2 min; a busy 2-core machine can take several


# --- ports and processes ---------------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    """n distinct ports free on every interface (Ray's GCS and raylet listen on all of them)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _free_range(width: int, lo: int = 20000, hi: int = 32000) -> int:
    """The first port of `width` consecutive free ports below the kernel's ephemeral range."""
    for _ in range(200):
        base = random.randrange(lo, hi - width)
        socks = []
        try:
            for p in range(base, base + width):
                s = socket.socket()
                socks.append(s)
                s.bind(("", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free worker port range")


def _tree(roots) -> dict:
    import psutil

    procs = {}
    for r in roots:
        procs[r.pid] = r
        try:
            for c in r.children(recursive=True):
                procs[c.pid] = c
        except psutil.NoSuchProcess:
            pass
    return procs


def _stop(procs: dict) -> None:
    """SIGTERM exactly these processes, then SIGKILL what is left after 10 s."""
    import psutil

    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    targets = [p for pid, p in procs.items() if pid not in me]
    for p in targets:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(targets, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


class Head:
    """One Ray head node of our own."""

    def __init__(self):
        self.temp_dir = Path(tempfile.mkdtemp(prefix="gpr-", dir="/tmp"))  # short: socket paths live in it
        names = ["gcs", "dashboard", "client", "agent_http", "agent_grpc", "metrics", "node_manager",
                 "object_manager", "runtime_env_agent"]
        self.ports = dict(zip(names, _free_ports(len(names))))
        first = _free_range(100)
        self.worker_ports = (first, first + 99)
        self.token = secrets.token_hex(32)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        env.pop("RAY_API_SERVER_ADDRESS", None)
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            RAY_USAGE_STATS_ENABLED="0",
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the job's `python` is this venv's
            RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.1",
            # A single-node cluster: with this off, --node-ip-address=127.0.0.1 stays 127.0.0.1 and GCS,
            # raylet and agents bind to loopback only (otherwise Ray swaps in the routable IP and they
            # listen on every interface).
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        )
        self.env = env

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    def start(self) -> None:
        p = self.ports
        cmd = [
            str(BIN / "ray"), "start", "--head",
            "--node-ip-address=127.0.0.1", f"--port={p['gcs']}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={p['dashboard']}",
            f"--ray-client-server-port={p['client']}",
            f"--dashboard-agent-listen-port={p['agent_http']}", f"--dashboard-agent-grpc-port={p['agent_grpc']}",
            f"--metrics-export-port={p['metrics']}", f"--node-manager-port={p['node_manager']}",
            f"--object-manager-port={p['object_manager']}", f"--runtime-env-agent-port={p['runtime_env_agent']}",
            f"--min-worker-port={self.worker_ports[0]}", f"--max-worker-port={self.worker_ports[1]}",
            "--num-cpus=4", "--num-gpus=0", f"--object-store-memory={512 * 2**20}",
            f"--temp-dir={self.temp_dir}", "--disable-usage-stats", "--include-log-monitor=false",
        ]
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"ray start failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")

    def processes(self) -> dict:
        """Our head's processes: command lines naming our temp dir or node id, and their children."""
        import psutil

        node_ids = {f.name.rsplit("_", 1)[-1] for f in self.temp_dir.glob("session_*/*_port_*")}
        marks = [str(self.temp_dir), *node_ids]
        roots = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if any(m in cmdline for m in marks):
                roots.append(proc)
        return _tree(roots)

    def stop(self) -> dict:
        """Stop our processes; return any still found (checked before the temp dir goes)."""
        _stop(self.processes())
        leftover = self.processes()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return leftover

    def ray(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "ray"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def ray_head():
    head = Head()
    try:
        head.start()
        yield head
    finally:
        leftover = head.stop()
        assert not leftover, f"head processes still running: {sorted(leftover)}"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    import psutil

    d = tmp_path_factory.mktemp("mlflow-server")
    (port,) = _free_ports(1)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(d / "server.log", "wb")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}",
         "--artifacts-destination", str(d / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=d,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not come up:\n{(d / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield uri
    finally:
        _stop(_tree([psutil.Process(proc.pid)]) if proc.poll() is None else {})
        proc.wait(timeout=30)
        log.close()


def _rest(uri: str, endpoint: str, body: dict | None = None, params: str = "") -> dict:
    """One MLflow REST call, as any HTTP client would make it."""
    url = f"{uri}/api/2.0/mlflow/{endpoint}{params}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                 method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_submitted_study(ray_head, mlflow_server, small_data, tmp_path):
    """`ray job submit --working-dir . --runtime-env deploy/runtime_env.yaml -- python -m growthpace run SPEC`."""
    storage = tmp_path / "store"
    raw = {
        "name": "jobtest",
        "storage": str(storage),  # absolute: the job runs in an unpacked copy of the working dir
        "models": [{"name": "llama-nano", "size": "nano",
                    "resources": {"workers": 1, "cpus_per_worker": 0.5, "driver_cpus": 0.25}}],
        "data": {"root": str(small_data), "train_split": "1000", "sources": ["curated"], "volumes": [10, 30]},
        "training": {"epochs": 2, "lr": 3e-3, "end_lr": 3e-4, "per_device_batch": 4, "max_length": 128,
                     "max_concurrent_trials": 2},
        "evaluation": {"concurrency": 1, "max_new_tokens": {"math": 16}, "warmup_epochs": 0,
                       "backend": "transformers"},
        "tracking": {"uri": mlflow_server, "experiment": "jobtest"},
        "ray": {"env_vars": {"GROWTHPACE_SUBMITTED": "yes"}},
    }
    spec = tmp_path / "jobtest.yaml"
    spec.write_text(yaml.safe_dump(raw))
    submission = f"growthpace-test-{secrets.token_hex(4)}"

    t0 = time.time()
    try:
        out = ray_head.ray(
            "job", "submit", "--address", ray_head.address, "--submission-id", submission,
            "--working-dir", ".", "--runtime-env", "deploy/runtime_env.yaml",
            "--", "python", "-m", "growthpace", "run", str(spec),
            timeout=JOB_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        ray_head.ray("job", "stop", "--address", ray_head.address, submission, timeout=60)
        raise
    elapsed = time.time() - t0
    logs = out.stdout + out.stderr
    assert out.returncode == 0, f"job failed after {elapsed:.0f}s:\n{logs[-6000:]}"
    assert f"Job '{submission}' succeeded" in logs
    assert "study jobtest: done" in logs

    # The driver attached to our head node (RAY_ADDRESS from the job server), it did not start its own.
    # What the libraries print goes to the study's log file, not to the job's console (jobs/progress.py).
    ray_log = (storage / "logs" / "ray.log").read_text()
    # Both cells' Ray Train workers ran on this head's cluster (a driver that started a cluster of its
    # own would leave none here); the state API reads the head's actor table through its dashboard.
    listed = ray_head.ray("list", "actors", "--address", ray_head.address, "--filter", "class_name=RayTrainWorker",
                          "--limit", "1000", "--format", "json", timeout=120)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert len(json.loads(listed.stdout)) >= 2, listed.stdout[-2000:]
    said = f"Ray, DeepSpeed and MLflow output: {storage.resolve() / 'logs' / 'ray.log'}"
    assert said in logs
    assert "Setting accelerator to CPU" in ray_log and "Setting accelerator to CPU" not in logs
    # The console a person reads (`ray job logs`: the driver's output): the progress view and the
    # closing summary, never Tune's trial tables.
    console = ray_head.ray("job", "logs", "--address", ray_head.address, submission, timeout=120)
    assert console.returncode == 0, console.stderr[-3000:]
    assert said in console.stdout, console.stdout
    # what the job server and `ray job logs` print of their own comes before the driver's first line
    console = console.stdout[console.stdout.index(said):]
    cells = 2
    assert len(console.splitlines()) <= 20 + 2 * cells, console
    for table in ("Trial status", "Trial name", "╭", "│", "tensorboard", "core_worker"):
        assert table not in console, console
    assert console.count(said) == 1, console  # said once, at the start
    # 2 cells x 2 epochs and the untuned base, scored once as the transfer's volume 0
    assert "2/2 cells trained" in console and "scored 5/5 checkpoints" in console, console
    assert "report:" in console and f"MLflow UI: {mlflow_server}" in console, console
    status = ray_head.ray("job", "status", "--address", ray_head.address, submission, timeout=60)
    assert "succeeded" in (status.stdout + status.stderr).lower()
    # A wrong token is refused: the head really runs with token auth.
    bad = subprocess.run([str(BIN / "ray"), "job", "list", "--address", ray_head.address],
                         env={**ray_head.env, "RAY_AUTH_TOKEN": "0" * 64}, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "auth" in (bad.stdout + bad.stderr).lower()

    # Scores on storage: 2 cells x 2 epochs x (valid + test per ability); OOD sets too (the small data has them).
    scores = pl.read_parquet(storage / "scores.parquet")
    assert scores["cell_id"].n_unique() == 2 and set(scores["epoch"]) == {1, 2}
    assert scores.filter(pl.col("split") == "test")["ability"].n_unique() == len(ABILITIES)
    assert ((scores["score"] >= 0) & (scores["score"] <= 100)).all()
    assert (storage / "report" / "index.html").exists()

    # MLflow over HTTP: the parent run and one child per cell, with each ability's trajectory.
    exp = _rest(mlflow_server, "experiments/get-by-name", params="?experiment_name=jobtest")["experiment"]
    runs = _rest(mlflow_server, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    parents = [r for r, t in zip(runs, tags) if "mlflow.parentRunId" not in t]
    children = [(r, t) for r, t in zip(runs, tags) if "mlflow.parentRunId" in t]
    assert len(parents) == 1 and len(children) == 2
    parent_id = parents[0]["info"]["run_id"]
    assert {t["mlflow.parentRunId"] for _, t in children} == {parent_id}
    assert parents[0]["info"]["status"] == "FINISHED"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    for run, t in children:
        cell_id = t["growthpace.cell_id"]
        hist = sorted(client.get_metric_history(run["info"]["run_id"], "test/biology"), key=lambda m: m.step)
        want = (scores.filter((pl.col("cell_id") == cell_id) & (pl.col("split") == "test")
                              & (pl.col("ability") == "biology")).sort("epoch")["score"].to_list())
        assert [m.step for m in hist] == [1, 2]
        assert [m.value for m in hist] == pytest.approx(want)
        loss = client.get_metric_history(run["info"]["run_id"], "train/loss")
        assert sorted(m.step for m in loss) == [1, 2], "rank 0 of the trial logged train/loss to the server"
    assert any(a.path == "index.html" for a in client.list_artifacts(parent_id)), "report uploaded via the server"
    print(f"job-submit study: {elapsed:.0f}s; " + "; ".join(
        line.strip() for line in logs.splitlines() if line.strip().startswith(("sweep:", "evaluate:", "study "))))
