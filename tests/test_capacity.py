"""Can the cluster place what the spec asks for (platform/core/capacity.py), compared before the first write.

The rule alone on made-up clusters (fast), then one real local Ray cluster: the resources Ray reports
(jobs/cluster.py capacity) and `growthpace sweep` refusing a GPU spec on it with exit 2, nothing written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from growthpace.platform.core.capacity import NodeType, cluster_totals, placement_problems
from growthpace.platform.core.spec import Spec

REPO = Path(__file__).resolve().parents[1]


def _spec(resources: dict | None = None, gpus_per_actor: float = 0.0, size: str = "7b") -> Spec:
    model = {"name": "llama-nano", "size": size, **({"resources": resources} if resources else {})}
    return Spec.model_validate({"name": "cap", "storage": "store", "models": [model], "data": {"root": "data"},
                                "evaluation": {"gpus_per_actor": gpus_per_actor}})


LAPTOP = [{"CPU": 4.0, "memory": 8e9, "node:127.0.0.1": 1.0}]
HEAD = [{"CPU": 0.0}]  # cluster.yaml's head node: no trial runs there
GPU_TYPES = [NodeType("gpu-8x80g", {"CPU": 96.0, "GPU": 8.0}, 6), NodeType("gpu-8x141g", {"CPU": 192.0, "GPU": 8.0, "large_gpu": 8.0}, 2)]


def test_gpu_asked_on_a_cpu_machine_names_the_field_and_the_size():
    (field, why), = placement_problems(_spec({"gpus_per_worker": 1}), LAPTOP, None)
    assert field == "models[0].resources.gpus_per_worker"
    assert "model size '7b'" in why and "1 GPU per training worker" in why and "has 0 GPU" in why
    assert "no autoscaler" in why and "4 CPU" in why and "memory" not in why


def test_more_cpus_than_any_node_and_more_than_the_cluster():
    (field, why), = placement_problems(_spec({"cpus_per_worker": 8}), LAPTOP, None)
    assert field == "models[0].resources.cpus_per_worker" and "8 CPU per training worker" in why
    (field, why), = placement_problems(_spec({"cpus_per_worker": 1, "workers": 4}), LAPTOP, None)
    assert field == "models[0].resources.workers"
    assert "4.25 CPU per trial (4 workers x 1 + 0.25 for the driver)" in why and "can hold 4 CPU" in why
    assert placement_problems(_spec({"cpus_per_worker": 1, "workers": 3}), LAPTOP, None) == []


def test_autoscaler_node_types_count_for_what_the_cluster_can_scale_to():
    fits = _spec({"gpus_per_worker": 1, "cpus_per_worker": 8, "workers": 8, "custom": {"large_gpu": 1}})
    assert placement_problems(fits, HEAD, GPU_TYPES) == []  # two large nodes, 16 GPUs
    (field, why), = placement_problems(_spec({"gpus_per_worker": 1, "workers": 65}), HEAD, GPU_TYPES)
    assert field == "models[0].resources.workers" and "can hold 64 GPU" in why and "no node type" in why
    (field, why), = placement_problems(_spec({"gpus_per_worker": 1, "custom": {"huge_gpu": 1}}), HEAD, GPU_TYPES)
    assert field == "models[0].resources.custom.huge_gpu"
    (field, _), = placement_problems(_spec({"gpus_per_worker": 16}), HEAD, GPU_TYPES)
    assert field == "models[0].resources.gpus_per_worker"  # no node has 16 GPUs, however many are added
    unlimited = [NodeType("gpu", {"CPU": 8.0, "GPU": 1.0}, -1)]
    # 500 one-GPU workers fit the cluster, not one node: strict_pack (the default) cannot place them, pack can
    (field, why), = placement_problems(_spec({"gpus_per_worker": 1, "workers": 500}), HEAD, unlimited)
    assert field == "models[0].resources.placement" and "500 GPU" in why and "placement: pack" in why
    assert placement_problems(_spec({"gpus_per_worker": 1, "workers": 500, "placement": "pack"}), HEAD, unlimited) == []
    assert cluster_totals(HEAD, [NodeType("off", {"GPU": 8.0}, 0)]).get("GPU", 0.0) == 0.0  # max_count 0: never added


def test_accelerator_pins_and_the_scoring_node_group_must_exist():
    a100 = [NodeType("a100", {"CPU": 96.0, "GPU": 8.0, "accelerator_type:A100": 1.0}, 6)]
    pinned = {"gpus_per_worker": 1, "workers": 4, "accelerator_type": "A100"}
    assert placement_problems(_spec(pinned), HEAD, a100) == []
    (field, why), = placement_problems(_spec({**pinned, "accelerator_type": "H200"}), HEAD, a100)
    assert field == "models[0].resources.accelerator_type" and "'H200'" in why
    scoring = Spec.model_validate({"name": "cap", "storage": "store", "models": [{"name": "llama-nano", "size": "s"}],
                                   "data": {"root": "data"},
                                   "evaluation": {"gpus_per_actor": 1, "resources": {"custom": {"scoring_node": 1}}}})
    (field, _), = placement_problems(scoring, HEAD, a100, training=False)
    assert field == "evaluation.resources.custom.scoring_node"
    with_group = [*a100, NodeType("scoring", {"CPU": 8.0, "GPU": 1.0, "scoring_node": 1.0}, 2)]
    assert placement_problems(scoring, HEAD, with_group, training=False) == []


def test_scoring_gpus_and_what_each_command_needs():
    (field, why), = placement_problems(_spec(gpus_per_actor=1), LAPTOP, None)
    assert field == "evaluation.gpus_per_actor" and "1 GPU" in why
    assert placement_problems(_spec(gpus_per_actor=1), LAPTOP, None, scoring=False) == []
    assert placement_problems(_spec({"gpus_per_worker": 1}), LAPTOP, None, training=False) == []


def test_scoring_resources_per_size_are_checked_per_size():
    models = [{"name": "llama-nano", "size": "7b"}, {"name": "llama-micro", "size": "33b"}]
    spec = Spec.model_validate({"name": "cap", "storage": "store", "models": models, "data": {"root": "data"},
                                "evaluation": {"gpus_per_actor": 1, "resources": {"by_size": {
                                    "33b": {"gpus": 2, "accelerator_type": "H200"}}}}})
    a100 = [NodeType("a100", {"CPU": 96.0, "GPU": 8.0, "accelerator_type:A100": 1.0}, 6)]
    (field, why), = placement_problems(spec, HEAD, a100, training=False)  # 7b fits; 33b asks for H200 nodes
    assert field == "evaluation.resources.by_size.33b.accelerator_type" and "size 33b" in why
    h200 = [*a100, NodeType("h200", {"CPU": 32.0, "GPU": 1.0, "accelerator_type:H200": 1.0}, 2)]
    (field, why), = placement_problems(spec, HEAD, h200, training=False)  # H200 nodes, but one GPU each
    assert field == "evaluation.resources.by_size.33b.gpus" and "2 GPU" in why
    h200x2 = [*a100, NodeType("h200", {"CPU": 32.0, "GPU": 2.0, "accelerator_type:H200": 1.0}, 2)]
    assert placement_problems(spec, HEAD, h200x2, training=False) == []


@pytest.mark.integration
def test_real_cluster_refuses_a_gpu_spec_before_anything_is_written(ray_cluster, tmp_path, small_data):
    """Ray's own view of the shared local cluster (4 CPUs, no GPU), then the real CLI attached to it."""
    from growthpace.jobs.cluster import capacity

    present, node_types = capacity(_spec({"cpus_per_worker": 1}))
    assert node_types is None and sum(n.get("CPU", 0) for n in present) == 4 and not any(n.get("GPU") for n in present)
    assert placement_problems(_spec({"cpus_per_worker": 1}), present, node_types) == []

    (tmp_path / "data").symlink_to(small_data, target_is_directory=True)
    spec = {"name": "gpu", "storage": "store", "models": [{"name": "llama-nano", "size": "7b", "resources": {"gpus_per_worker": 1}}],
            "data": {"root": "data", "train_split": "1000", "volumes": [10]}, "evaluation": {"splits": ["valid"], "ood": False}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-m", "growthpace.cli", "sweep", "spec.yaml"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.stderr.strip().splitlines() == errors, out.stderr  # Ray's start-up output is not shown (issue 28)
    assert errors[0].startswith("error: field 'models[0].resources.gpus_per_worker': model size '7b'"), out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "store").exists() and not list(tmp_path.rglob("mlflow.db"))
