"""The autoscaler path of cluster.yaml, end to end on this machine (`make test-cluster`): a head with no
worker resources, cluster.yaml's GPU node types as CPU stand-ins (same accelerator_type and custom
resources, min_workers 0), a small study of two sizes submitted with `ray job submit`. Nodes are launched
for the trials that wait for them, each size trains and scores on the node type it is pinned to, idle
nodes are removed after the study, and the scores equal the same spec's on one local node."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from growthpace.platform.core.capacity import cluster_node_types

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
JOB_TIMEOUT_S = 900
HEAD = {"CPU": 1, "trial_driver": 4}  # the trial drivers only: no worker, no scoring actor fits here


def _stand_ins() -> dict:
    """cluster.yaml's worker types with their GPUs replaced by 2 CPUs, one node each at most."""
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    out = {}
    for t in cluster_node_types(config):
        res = {k: v for k, v in t.resources.items() if k not in ("CPU", "GPU")}
        out[t.name] = {"resources": {"CPU": 2, **res}, "node_config": {}, "min_workers": 0, "max_workers": 1}
    return out


def _spec(tmp: Path, small_data: Path, storage: Path, cluster_file: str | None = None) -> Path:
    cpu = {"workers": 1, "cpus_per_worker": 1.0, "driver_cpus": 0.25}
    raw = {
        "name": "autoscale", "storage": str(storage),
        "models": [{"name": "llama-nano", "size": "nano", "resources": {**cpu, "accelerator_type": "A100"}},
                   {"name": "llama-micro", "size": "micro", "resources": {**cpu, "custom": {"large_gpu": 1.0}}}],
        "data": {"root": str(small_data), "train_split": "1000", "sources": ["curated"], "volumes": [20]},
        "training": {"epochs": 1, "lr": 3e-3, "end_lr": 3e-4, "per_device_batch": 4, "max_length": 128,
                     "max_concurrent_trials": 2},
        "evaluation": {"concurrency": 1, "max_new_tokens": {"math": 16}, "warmup_epochs": 0, "streaming": False,
                       "backend": "transformers",
                       "resources": {"by_size": {"nano": {"accelerator_type": "A100"},
                                                 "micro": {"accelerator_type": "H200"}}}},
        "ray": {"driver_resources": {"trial_driver": 1.0}},
    }
    if cluster_file:  # the pre-flight's node types: Ray reports none (docs/cluster.md)
        raw["ray"]["cluster_file"] = cluster_file
    p = tmp / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _scores(storage: Path) -> pl.DataFrame:
    cols = ["cell_id", "epoch", "split", "ability", "score"]
    return pl.read_parquet(storage / "scores.parquet").select(cols).sort(cols[:4])


def _node_type(resources: dict, types: dict) -> str:
    for name, t in types.items():
        if all(resources.get(k, 0) >= v for k, v in t["resources"].items() if k != "CPU"):
            return name
    return "head"


# Runs beside the study in its own process (this one may hold another cluster's auth token): one JSON line
# per poll with the alive nodes' resources and where the training workers and scoring actors are.
WATCH = """
import json, sys, time, ray
from ray.util.state import list_actors
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
while True:
    try:
        nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        actors = [(a.class_name, a.node_id) for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
                  if a.class_name in ("RayTrainWorker", "CheckpointScorer", "_MapWorker")]
        print(json.dumps({"t": time.time(), "nodes": nodes, "actors": actors}), flush=True)
    except Exception as e:  # a node going away mid-read: the next poll sees it
        print(json.dumps({"error": repr(e)[:200]}), flush=True)
    time.sleep(0.5)
"""


def test_autoscaled_study_lands_on_its_node_types(small_data, tmp_path):
    from tests.cluster_nodes import BIN, AutoscalingHead, LocalCluster

    types = _stand_ins()
    assert set(types) == {"gpu_a100_80g", "gpu_h200"}
    head = AutoscalingHead(types, HEAD)
    storage = tmp_path / "scaled" / "store"
    (tmp_path / "scaled").mkdir()
    spec = _spec(tmp_path / "scaled", small_data, storage, head.config_path)
    watch_log = tmp_path / "watch.jsonl"
    watcher = None
    try:
        head.wait_up()
        with open(watch_log, "w") as f:
            watcher = subprocess.Popen([str(BIN / "python"), "-c", WATCH, head.address], env=head.env, stdout=f,
                                       stderr=subprocess.DEVNULL)
        t0 = time.time()
        # The fake nodes share this machine's one session folder, so each node's first task of the job
        # deletes and unpacks the job's working_dir again at the same path (Ray's working_dir plugin,
        # overwrite=True), leaving processes already in it without a current directory: the driver's
        # next os.getcwd() (Tune's relpath at the sweep's end) failed with a bare [Errno 2]. A real
        # node has its own disk; here the driver starts from a folder no node replaces.
        entry = f"cd {tmp_path} && exec python -m growthpace run {spec}"
        out = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", head.job_server, "--working-dir", ".",
                              "--runtime-env", "deploy/runtime_env.yaml", "--", "sh", "-c", entry],
                             cwd=REPO, env=head.env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
        print(f"\n----- autoscaled study: exit {out.returncode} after {time.time() - t0:.0f}s -----\n"
              f"{out.stdout[-4000:]}")
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
        # idle nodes go after idle_timeout_minutes (6 s) and the autoscaler's next pass
        deadline = time.time() + 120
        while time.time() < deadline:
            polls = [json.loads(line) for line in watch_log.read_text().splitlines() if '"nodes"' in line]
            if polls and polls[-1]["t"] > t0 and len(polls[-1]["nodes"]) == 1:
                break
            time.sleep(1)
        print(f"idle nodes removed {time.time() - t0:.0f}s after the submit")
    finally:
        if watcher is not None:
            watcher.kill()
            watcher.wait()
        head.stop()
    polls = [json.loads(line) for line in watch_log.read_text().splitlines() if '"nodes"' in line]
    assert len(polls[0]["nodes"]) == 1, "min_workers 0: only the head before the study"
    assert len(polls[-1]["nodes"]) == 1, "idle worker nodes were not removed after the study"
    launched = {_node_type(r, types) for p in polls for r in p["nodes"].values()} - {"head"}
    assert launched == {"gpu_a100_80g", "gpu_h200"}
    seen = {(c, _node_type(p["nodes"][n], types)) for p in polls for c, n in p["actors"] if n in p["nodes"]}
    assert {t for c, t in seen if c == "RayTrainWorker"} == {"gpu_a100_80g", "gpu_h200"}, seen
    # scoring actors (a pool of CheckpointScorer; _MapWorker when streaming) on each size's by_size group
    assert {t for c, t in seen if c in ("CheckpointScorer", "_MapWorker")} == {"gpu_a100_80g", "gpu_h200"}, seen

    # the same spec on one node that has every resource
    one = LocalCluster(head_cpus=4, head_resources={"trial_driver": 4, "large_gpu": 8, "accelerator_type:A100": 1,
                                                    "accelerator_type:H200": 1})
    try:
        (tmp_path / "one").mkdir()
        alone = tmp_path / "one" / "store"
        r = subprocess.run([str(BIN / "python"), "-m", "growthpace", "run", str(_spec(tmp_path / "one", small_data, alone))],
                           cwd=REPO, env=one.env(), capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    finally:
        one.shutdown()
    assert _scores(storage).equals(_scores(alone)), "the autoscaled study's scores differ from one node's"
