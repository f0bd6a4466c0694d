"""A Ray cluster of several nodes on this one machine, for the node-loss tests (tests/test_node_loss.py).

`ray.cluster_utils.Cluster` starts each "node" as its own raylet; `lose(node)` kills one without warning
(what a dead host or a reclaimed spot instance does). Isolation from the other Ray clusters on the
machine: its own RAY_TMPDIR (Cluster writes its address file there, not in /tmp/ray), its own GCS port,
its own auth token, no dashboard; `shutdown()` stops exactly its nodes through their handles (never
`ray stop`). Node death is noticed after 3 missed 1 s health checks instead of Ray's 5 x 3 s.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from pathlib import Path

from tests.servers import free_port

HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                 "health_check_timeout_ms": 1000}
BIN = Path(sys.executable).parent
_TOKEN = secrets.token_hex(16)


class LocalCluster:
    """A head node with only what trial drivers need (`head_resources`) and worker nodes added on demand."""

    def __init__(self, head_cpus: int = 1, head_resources: dict | None = None):
        self.temp_dir = tempfile.mkdtemp(prefix="gpn-", dir="/tmp")  # short: socket paths live in it
        os.makedirs(os.path.join(self.temp_dir, "ray"))
        self.token = _TOKEN  # Ray keeps the first token a process used: one per process, for every cluster
        # read by Ray when this process starts the head and by every process it starts
        os.environ.update({"RAY_TMPDIR": self.temp_dir, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"})
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, connect=False, head_node_args=dict(
            num_cpus=head_cpus, resources=dict(head_resources or {}), temp_dir=self.temp_dir,
            gcs_server_port=free_port(), include_dashboard=False, _system_config=HEALTH_CHECKS))
        self.address = self.cluster.address

    def add(self, cpus: int, resources: dict):
        return self.cluster.add_node(num_cpus=cpus, resources=dict(resources))

    def lose(self, node) -> None:
        """The node's raylet and agents are killed at once: no drain, no warning."""
        self.cluster.remove_node(node, allow_graceful=False)

    def workers(self, node, actor_class: str) -> list[int]:
        """The PIDs of the node's worker processes running an actor of ``actor_class`` (their title is
        `ray::<class>...`): the raylet's children. The State API needs the dashboard, which is off here."""
        import psutil
        from ray._private import ray_constants

        raylet = psutil.Process(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
        out = []
        for p in raylet.children(recursive=True):
            try:
                if " ".join(p.cmdline()).startswith(f"ray::{actor_class}"):
                    out.append(p.pid)
            except psutil.NoSuchProcess:
                pass
        return out

    def env(self) -> dict[str, str]:
        """The environment of a `growthpace` command that attaches to this cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update({"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                    "RAY_TMPDIR": self.temp_dir, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
                    # else a driver looks for its local raylet at the machine's routable address and hangs
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                    "PATH": f"{BIN}:{env.get('PATH', '')}", "TOKENIZERS_PARALLELISM": "false",
                    "OMP_NUM_THREADS": "1"})
        return env

    def shutdown(self) -> None:
        import shutil

        self.cluster.shutdown()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class AutoscalingHead:
    """`ray start --head --block --autoscaling-config=...` with Ray's fake multi-node provider (v1 autoscaler):
    worker nodes are started on this machine when work waits for their resources and stopped when idle.

    Not `ray.cluster_utils.AutoscalingCluster`: in Ray 2.60 its constructor reads a file the wheel does not
    ship (fake_multi_node/example.yaml), and its start()/shutdown() run `ray stop --force`, which would stop
    every Ray cluster on the machine. The head runs in its own session; `stop()` kills that process group
    (the fake nodes are children of the autoscaler's monitor, in the same group).
    """

    def __init__(self, worker_node_types: dict, head_resources: dict, idle_timeout_minutes: float = 0.1):
        import json
        import subprocess

        self.temp_dir = tempfile.mkdtemp(prefix="gpa-", dir="/tmp")
        self.token = secrets.token_hex(16)
        self.port, self.dash_port = free_port(), free_port()
        head = dict(head_resources)
        config = {
            "cluster_name": "fake", "max_workers": 8, "idle_timeout_minutes": idle_timeout_minutes,
            "upscaling_speed": 1.0, "head_node_type": "ray.head.default", "auth": {}, "docker": {},
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{self.port}"},
            "available_node_types": {**worker_node_types,
                                     "ray.head.default": {"resources": head, "node_config": {}, "max_workers": 0}},
            **{k: [] for k in ("initialization_commands", "setup_commands", "head_setup_commands",
                               "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
                               "cluster_synced_files", "rsync_exclude", "rsync_filter")},
            "file_mounts": {}, "file_mounts_sync_continuously": False,
        }
        self.config_path = config_path = os.path.join(self.temp_dir, "autoscaling.json")  # ray.cluster_file
        with open(config_path, "w") as f:
            json.dump(config, f)
        extra = {k: v for k, v in head.items() if k != "CPU"}
        cmd = [str(BIN / "ray"), "start", "--head", "--block", f"--port={self.port}", "--node-ip-address=127.0.0.1",
               f"--autoscaling-config={config_path}", f"--temp-dir={self.temp_dir}",
               f"--num-cpus={int(head.get('CPU', 0))}", "--disable-usage-stats",
               "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dash_port}",
               f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
               f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
               f"--ray-client-server-port={free_port()}", "--min-worker-port=0", "--max-worker-port=0"]
        if extra:
            cmd.append("--resources=" + json.dumps(extra))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
                         "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0",
                         "PATH": f"{BIN}:{self.env.get('PATH', '')}", "TOKENIZERS_PARALLELISM": "false",
                         "OMP_NUM_THREADS": "1"})
        head_env = {**self.env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                    "RAY_ADDRESS": f"127.0.0.1:{self.port}"}
        self.log = open(os.path.join(self.temp_dir, "ray_start.log"), "w")
        self.proc = subprocess.Popen(cmd, env=head_env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.address = f"127.0.0.1:{self.port}"
        self.job_server = f"http://127.0.0.1:{self.dash_port}"

    def wait_up(self, timeout: float = 180) -> None:
        import time

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited {self.proc.returncode}: {self.log.name}")
            with open(self.log.name) as f:
                if "block forever" in f.read():
                    return
            time.sleep(0.5)
        raise TimeoutError(f"the head did not come up in {timeout:.0f}s: {self.log.name}")

    def stop(self) -> None:
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # SIGTERM would drain each node for up to 30 s first
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.log.close()
        import shutil

        shutil.rmtree(self.temp_dir, ignore_errors=True)
