"""Ray internals growthpace still leans on, each pinned: a Ray upgrade that removes or changes one fails
here with the place in growthpace to change, not in the middle of a study. And the node types of the
pre-flight, read from the cluster file now that Ray reports none (docs/cluster.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from growthpace.platform.core.capacity import NodeType, cluster_node_types
from growthpace.platform.core.spec import Spec, SpecError

REPO = Path(__file__).resolve().parents[1]


def _spec(**ray) -> Spec:
    return Spec.model_validate({"name": "apis", "storage": "store", "models": [{"name": "llama-nano", "size": "7b"}],
                                "data": {"root": "data"}, "ray": ray})


def test_node_types_of_cluster_yaml():
    types = cluster_node_types(yaml.safe_load((REPO / "cluster.yaml").read_text()))
    assert types == [
        NodeType("gpu_a100_80g", {"CPU": 96.0, "GPU": 8.0, "accelerator_type:A100": 1.0}, 6),
        NodeType("gpu_h200", {"CPU": 192.0, "GPU": 8.0, "large_gpu": 8.0, "accelerator_type:H200": 1.0}, 2),
    ]  # the head type (CPU: 0) is a node present, not one the autoscaler adds


def test_node_types_come_from_the_cluster_file(tmp_path, monkeypatch):
    from growthpace.jobs.cluster import autoscaler_node_types

    monkeypatch.setenv("HOME", str(tmp_path))
    assert autoscaler_node_types(_spec()) is None  # no file: the cluster is what it is
    (tmp_path / "ray_bootstrap_config.yaml").write_text((REPO / "cluster.yaml").read_text())
    assert [t.name for t in autoscaler_node_types(_spec())] == ["gpu_a100_80g", "gpu_h200"]  # what `ray up` left
    own = tmp_path / "mine.yaml"
    own.write_text(yaml.safe_dump({"head_node_type": "h", "available_node_types": {
        "h": {"resources": {"CPU": 0}}, "cpu": {"resources": {"CPU": 4}, "max_workers": 3}}}))
    assert autoscaler_node_types(_spec(cluster_file=str(own))) == [NodeType("cpu", {"CPU": 4.0}, 3)]


@pytest.mark.parametrize("text, message", [
    (None, "No such file"),
    ("- a\n- b\n", "not a mapping"),
    ("available_node_types: {a: {resources: [1]}}\n", "cluster_file"),
])
def test_a_bad_cluster_file_names_the_field(tmp_path, text, message):
    from growthpace.jobs.cluster import autoscaler_node_types

    path = tmp_path / "cluster.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(SpecError, match=rf"^field 'ray.cluster_file': {path}: .*") as e:
        autoscaler_node_types(_spec(cluster_file=str(path)))
    assert message in str(e.value)


def test_driver_resources_no_node_has_are_refused_before_the_study():
    from growthpace.platform.core.capacity import placement_problems

    spec = _spec(driver_resources={"trial_driver": 1.0})
    head = [{"CPU": 2.0, "trial_driver": 4.0}]
    assert placement_problems(spec, head, None, scoring=False) == []
    (field, why), = placement_problems(spec, [{"CPU": 2.0}], None, scoring=False)
    assert field == "ray.driver_resources" and "trial_driver" in why


def test_pin_enable_ray_cluster(monkeypatch):
    """jobs/cluster.py connect() keeps a local cluster on 127.0.0.1 through this constant (no public switch:
    Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, at import)."""
    from ray._private import ray_constants, services

    assert hasattr(ray_constants, "ENABLE_RAY_CLUSTER"), (
        "Ray no longer has ray._private.ray_constants.ENABLE_RAY_CLUSTER: change jobs/cluster.py connect(), "
        "which sets it for a loopback-only local cluster")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    assert services.get_node_ip_address() == "127.0.0.1", (
        "ENABLE_RAY_CLUSTER=False no longer keeps Ray's node address on 127.0.0.1: jobs/cluster.py connect() "
        "would start a local cluster listening on the machine's routable address")


def test_pin_gcs_actor_table():
    """evaluators/llm_processor.py engine_actors reads the GCS actor table: the dashboard-free way to see an
    actor pool worker still in __init__ (ray.util.state needs the dashboard, off on a local cluster)."""
    from ray._private import state
    from ray.core.generated import gcs_pb2

    assert callable(getattr(state.state, "_connect_and_get_accessor", None)), (
        "Ray no longer has ray._private.state.state._connect_and_get_accessor: change "
        "evaluators/llm_processor.py engine_actors (ray.util.state.list_actors, with the dashboard on)")
    fields = set(gcs_pb2.ActorTableData.DESCRIPTOR.fields_by_name)
    assert {"actor_id", "class_name", "repr_name", "state"} <= fields, (
        f"gcs_pb2.ActorTableData lost fields evaluators/llm_processor.py engine_actors reads: {sorted(fields)}")


@pytest.mark.integration
def test_pin_gcs_actor_table_sees_an_engine_actor(ray_cluster):
    """The same read on a real cluster: an actor named like ray.data.llm's engine stage is found while alive,
    and gone once killed."""
    import ray

    from growthpace.evaluators.llm_processor import ENGINE_ACTOR_MARK, engine_actors

    before = engine_actors()
    cls = type(ENGINE_ACTOR_MARK, (), {"ping": lambda self: 1})
    actor = ray.remote(num_cpus=0)(cls).remote()
    assert ray.get(actor.ping.remote()) == 1
    mine = {a: n for a, n in engine_actors().items() if a not in before}
    assert len(mine) == 1 and ENGINE_ACTOR_MARK in next(iter(mine.values())), mine
    ray.kill(actor)
    deadline = time.time() + 30
    while any(a not in before for a in engine_actors()) and time.time() < deadline:
        time.sleep(0.2)
    assert not [a for a in engine_actors() if a not in before], "a killed actor is still in the GCS table as ALIVE"
