"""Losing a whole node (a dead host, a reclaimed spot instance) in the middle of a study, on a local
cluster of several raylets (tests/cluster_nodes.py). Not in `make test`: `make test-cluster` runs these.

The head has only the trial drivers' resources (ray.driver_resources: {trial_driver: 1}, so the drivers
and Ray Train's controllers stay on it); the cell's training worker needs `nano_node`, which only the
worker node has, and the scoring actors need `score_node`, which only the scoring node has.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
STUDY_TIMEOUT_S = 900
HEAD = {"trial_driver": 4}
TRAIN_NODE = {"nano_node": 1}
SCORE_NODE = {"score_node": 1}


def _spec_file(tmp: Path, small_data: Path, storage: Path) -> Path:
    raw = {
        "name": "nodeloss",
        "storage": str(storage),
        "models": [{"name": "llama-nano", "size": "nano",
                    "resources": {"workers": 1, "cpus_per_worker": 1.0, "driver_cpus": 0.25,
                                  "custom": {"nano_node": 1.0}}}],
        "data": {"root": str(small_data), "train_split": "1000", "sources": ["curated"], "volumes": [200]},
        # resume_every_s 0: epoch 1 keeps its DeepSpeed state (a tiny model's default interval could skip it)
        "training": {"epochs": 2, "lr": 3e-3, "end_lr": 3e-4, "per_device_batch": 4, "max_length": 128,
                     "max_concurrent_trials": 1, "resume_every_s": 0.0},
        "evaluation": {"concurrency": 1, "max_new_tokens": {"math": 16}, "warmup_epochs": 0, "streaming": False,
                       "resources": {"custom": {"score_node": 1.0}}},
        "ray": {"driver_resources": {"trial_driver": 1.0}},
    }
    p = tmp / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _run(cluster, spec: Path, stage: str = "run") -> subprocess.CompletedProcess:
    """`growthpace <stage> SPEC` attached to the cluster (RAY_ADDRESS), as a user runs it on the head."""
    return subprocess.run([sys.executable, "-m", "growthpace", stage, str(spec)], cwd=REPO, env=cluster.env(),
                          capture_output=True, text=True, timeout=STUDY_TIMEOUT_S)


def _scores(storage: Path) -> pl.DataFrame:
    cols = ["cell_id", "epoch", "split", "ability", "score"]
    return pl.read_parquet(storage / "scores.parquet").select(cols).sort(cols[:4])


def _metric_steps(storage: Path, name: str) -> dict[str, list[int]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    out = {}
    for f in storage.glob("cells/*/mlflow.json"):
        run_id = json.loads(f.read_text())["run_id"]
        out[f.parent.name] = sorted(m.step for m in client.get_metric_history(run_id, name))
    return out


def _console(label: str, proc: subprocess.CompletedProcess) -> None:
    """What the user saw, in the test's output (pytest -s / -rA): the docs quote it."""
    print(f"\n----- {label}: exit {proc.returncode} -----\n{proc.stdout}\n{proc.stderr[-3000:]}")


@pytest.fixture
def cluster():
    from tests.cluster_nodes import LocalCluster

    c = LocalCluster(head_cpus=1, head_resources=HEAD)
    try:
        yield c
    finally:
        c.shutdown()


def _wait_for(predicate, what: str, timeout: float = STUDY_TIMEOUT_S, proc=None) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the study ended (exit {proc.returncode}) before {what}")
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_training_node_lost_mid_epoch_resumes_on_a_replacement(cluster, small_data, tmp_path):
    """The node training the cell dies during epoch 2; a replacement node joins. The cell resumes there from
    epoch 1's checkpoint (epoch 1 is not trained again), the scores equal an uninterrupted run's, MLflow
    has one point per epoch, and `growthpace run` exits 0."""
    score_node = cluster.add(1, SCORE_NODE)
    train_node = cluster.add(1, TRAIN_NODE)
    (tmp_path / "whole").mkdir()
    (tmp_path / "lost").mkdir()
    whole = _run(cluster, _spec_file(tmp_path / "whole", small_data, tmp_path / "whole" / "store"))
    _console("uninterrupted", whole)
    assert whole.returncode == 0

    storage = tmp_path / "lost" / "store"
    spec = _spec_file(tmp_path / "lost", small_data, storage)
    proc = subprocess.Popen([sys.executable, "-m", "growthpace", "run", str(spec)], cwd=REPO, env=cluster.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: dict = {}
    reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), proc.communicate())), daemon=True)
    reader.start()
    try:
        # Ray Train has *registered* epoch 1 (its snapshot names a checkpoint): epoch 2 is in flight.
        _wait_for(lambda: any("checkpoint_2" in f.read_text()
                              for f in storage.glob("train/*/checkpoint_manager_snapshot.json")),
                  "epoch 1's checkpoint", proc=proc)
        lost_at = time.time()
        cluster.lose(train_node)
        cluster.add(1, TRAIN_NODE)  # the replacement: the autoscaler's (or a spot pool's) next node
        reader.join(STUDY_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out.get("stdout", ""), out.get("stderr", ""))
    _console(f"node lost {time.time() - lost_at:.0f}s before the end", done)
    assert done.returncode == 0

    (cell_dir,) = list(storage.glob("cells/*/checkpoints.json"))
    cell_id = cell_dir.parent.name
    reported = [json.loads((d / "epoch.json").read_text())["epoch"]
                for d in sorted((storage / "train" / cell_id).glob("checkpoint_2*"))]
    assert reported == [1, 2], f"epoch 1 trained once, epoch 2 once (on the replacement): {reported}"
    # the attempt that trained epoch 2 loaded epoch 1's state (train.py RESUMED_FROM; 0 would be from scratch)
    snapshot = (storage / "train" / cell_id / "checkpoint_manager_snapshot.json").read_text()
    assert re.search(r'resumed_from_epoch\\?"?:\s*1\b', snapshot), snapshot[-2000:]
    assert _scores(storage).equals(_scores(tmp_path / "whole" / "store")), "scores differ from the uninterrupted run"
    assert _metric_steps(storage, "train/loss") == {cell_id: [1, 2]}
    assert _metric_steps(storage, "test/biology") == {cell_id: [1, 2]}
    assert score_node is not None


def test_scoring_node_lost_mid_checkpoint_scores_each_checkpoint_once(cluster, small_data, tmp_path):
    """The node of the scoring actor dies while it scores; a replacement joins. In the end every checkpoint
    has one result, one prediction row per item and one MLflow point per epoch; if the study stopped,
    the rerun a user makes scores only what is missing."""
    import ray

    cluster.add(1, TRAIN_NODE)
    score_node = cluster.add(1, SCORE_NODE)
    storage = tmp_path / "store"
    spec = _spec_file(tmp_path, small_data, storage)
    proc = subprocess.Popen([sys.executable, "-m", "growthpace", "run", str(spec)], cwd=REPO, env=cluster.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: dict = {}
    reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), proc.communicate())), daemon=True)
    reader.start()
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")  # only to watch resources
    try:
        # the scoring actor holds the scoring node's one `score_node` (public: Ray's free resources)
        _wait_for(lambda: storage.glob("cells/*/checkpoints.json") and
                  ray.available_resources().get("score_node", 0.0) < 0.5, "the scoring actor", proc=proc)
        cluster.lose(score_node)
        cluster.add(1, SCORE_NODE)
        reader.join(STUDY_TIMEOUT_S)
    finally:
        ray.shutdown()
        if proc.poll() is None:
            proc.kill()
    first = subprocess.CompletedProcess(proc.args, proc.returncode, out.get("stdout", ""), out.get("stderr", ""))
    _console("scoring node lost", first)
    if first.returncode != 0:
        again = _run(cluster, spec)
        _console("rerun", again)
        assert again.returncode == 0
    (cell_dir,) = list(storage.glob("cells/*/checkpoints.json"))
    cell_id = cell_dir.parent.name
    assert sorted(p.name for p in (storage / "cells" / cell_id / "scores").glob("epoch_*.json")) == [
        "epoch_001.json", "epoch_002.json"]
    for epoch in (1, 2):
        preds = pl.read_parquet(storage / "cells" / cell_id / "predictions" / f"epoch_{epoch:03d}.parquet")
        assert preds.height == preds.unique(subset=["split", "ability", "idx", "kind"]).height, "an item scored twice"
    scores = _scores(storage)
    assert scores.height == scores.unique(subset=["cell_id", "epoch", "split", "ability"]).height
    assert _metric_steps(storage, "test/biology") == {cell_id: [1, 2]}
