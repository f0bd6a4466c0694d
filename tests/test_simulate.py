"""`growthpace simulate`: a small grid on stand-ins of two node types, through real Ray Tune (own cluster:
`make test-cluster`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SECONDS_PER_HOUR = 10

CLUSTER = {
    "cluster_name": "sim", "max_workers": 3, "idle_timeout_minutes": 6, "head_node_type": "head",
    "available_node_types": {
        "head": {"resources": {"CPU": 1}},
        "small": {"resources": {"CPU": 4, "GPU": 2, "accelerator_type:A100": 1}, "max_workers": 2},
        "large": {"resources": {"CPU": 4, "GPU": 2, "large_gpu": 2, "accelerator_type:H200": 1}, "max_workers": 1},
    },
}


def _spec(tmp: Path, small_data: Path) -> Path:
    gpu = {"gpus_per_worker": 1, "cpus_per_worker": 1, "driver_cpus": 0.25, "throughput_tokens_per_gpu_s": 1}
    raw = {
        "name": "sim", "storage": str(tmp / "store"),
        "models": [{"name": "llama-nano", "size": "nano", "resources": {**gpu, "workers": 1, "accelerator_type": "A100"}},
                   {"name": "llama-micro", "size": "micro",
                    "resources": {**gpu, "workers": 2, "custom": {"large_gpu": 1.0}}}],
        "data": {"root": str(small_data), "train_split": "1000", "sources": ["curated"], "volumes": [20, 60]},
        "training": {"epochs": 1, "per_device_batch": 4, "max_length": 128, "max_concurrent_trials": 3},
    }
    p = tmp / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.mark.cluster
def test_simulate_a_small_grid(small_data, tmp_path):
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    out = subprocess.run([sys.executable, "-m", "growthpace", "simulate", str(_spec(tmp_path, small_data)),
                          "--cluster", str(tmp_path / "cluster.yaml"), "--seconds-per-hour", str(SECONDS_PER_HOUR)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    print(out.stdout, out.stderr[-3000:])
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    order = [line.split(". ", 1)[1] for line in lines if re.match(r"\s+\d+\. ", line)]
    assert len(order) == 4, out.stdout
    assert all("(small)" in o for o in order if o.startswith("nano/"))  # pinned by accelerator type
    assert all("(large)" in o for o in order if o.startswith("micro/"))  # pinned by a custom resource
    assert not (tmp_path / "store").exists(), "simulate writes nothing to the study's storage"
    makespan = float(lines[1].split("makespan: ")[1].split(" h")[0])
    bound = float(lines[1].split("lower bound: ")[1].split(" h")[0])
    # Tune and Ray start each trial in 1-4 s on this busy machine: up to 4 s a trial, in simulated hours
    assert bound * 0.99 <= makespan <= bound + 4 * 4 / SECONDS_PER_HOUR, lines[1]
    used, billed = (float(x.split()[0]) for x in lines[2].split(": ", 1)[1].split(", ")[:2])
    assert billed >= used > 0


def test_a_cluster_file_without_node_types_is_one_error(tmp_path, small_data):
    (tmp_path / "cluster.yaml").write_text("cluster_name: x\n")
    out = subprocess.run([sys.executable, "-m", "growthpace", "simulate", str(_spec(tmp_path, small_data)),
                          "--cluster", str(tmp_path / "cluster.yaml")], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'cluster.yaml'}: no worker node types")
