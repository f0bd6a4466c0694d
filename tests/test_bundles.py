"""The bundles a trial and a scoring actor ask Ray for, written once (platform/core/capacity.py): what
jobs/placement.py requests is what placement_problems checks against the cluster."""

from __future__ import annotations

from growthpace.jobs.placement import ray_scaling, scaling_config, scoring_placement
from growthpace.platform.core.allocation import Allocation
from growthpace.platform.core.capacity import NodeType, model_trial, placement_problems, scoring_bundle
from growthpace.platform.core.cells import Cell
from growthpace.platform.core.spec import Spec

RESOURCES = {"workers": 4, "cpus_per_worker": 6.0, "gpus_per_worker": 1.0, "driver_cpus": 0.5,
             "custom": {"large_gpu": 1.0}, "accelerator_type": "H200", "placement": "strict_pack"}


def _spec(resources: dict, evaluation: dict | None = None) -> Spec:
    return Spec.model_validate({"name": "b", "storage": "store", "data": {"root": "data"}, "evaluation": evaluation or {},
                                "models": [{"name": "llama-nano", "size": "7b", "resources": resources}]})


def _cell(resources: dict) -> Cell:
    r = dict(resources)
    return Cell(cell_id="c", study="b", model="llama-nano", size="7b", source="curated", volume=10, mix=None, seed=0,
                allocation=Allocation({"math": 10}), epochs=1, training={}, workers=r["workers"],
                cpus_per_worker=r["cpus_per_worker"], gpus_per_worker=r["gpus_per_worker"], driver_cpus=r["driver_cpus"],
                custom_resources=r["custom"], accelerator_type=r["accelerator_type"], placement=r["placement"])


def test_the_trial_placement_requests_is_the_one_capacity_checks():
    trial = model_trial(_spec(RESOURCES).models[0].resources)
    assert trial.worker == {"CPU": 6.0, "GPU": 1.0, "large_gpu": 1.0} and trial.driver == {"CPU": 0.5}
    assert trial.placed_worker["accelerator_type:H200"] > 0  # what Ray Train adds for the pin
    asked, checked = scaling_config(_cell(RESOURCES)), ray_scaling(trial)
    # what Ray Train places per worker, pin included, is the bundle capacity compares with the nodes
    assert asked._resources_per_worker_not_none == checked._resources_per_worker_not_none == trial.placed_worker
    assert (asked.num_workers, asked.use_gpu, asked.placement_strategy, asked.accelerator_type) == \
        (checked.num_workers, checked.use_gpu, checked.placement_strategy, checked.accelerator_type) == (4, True, "STRICT_PACK", "H200")
    # a node of exactly the bundle's four workers and driver holds the trial; with one GPU fewer per node,
    # two nodes have GPUs enough but strict_pack keeps the workers on one
    node = {"CPU": 24.5, "GPU": 4.0, "large_gpu": 4.0, "accelerator_type:H200": 1.0}
    assert placement_problems(_spec(RESOURCES), [{"CPU": 0.0}], [NodeType("n", node, 1)]) == []
    (field, _), = placement_problems(_spec(RESOURCES), [{"CPU": 0.0}], [NodeType("n", {**node, "GPU": 3.0}, 2)])
    assert field == "models[0].resources.placement"


def test_a_cpu_trial_and_a_cpu_scoring_actor_ask_for_no_gpu():
    cpu = {**RESOURCES, "gpus_per_worker": 0.0, "custom": {}, "accelerator_type": None}
    trial = model_trial(_spec(cpu).models[0].resources)
    assert trial.worker == {"CPU": 6.0} and not trial.gpu and not ray_scaling(trial).use_gpu
    actor = scoring_bundle(_spec(cpu).evaluation.scoring_for("7b"))
    assert actor.resources == {"CPU": 1.0} and actor.placed == {"CPU": 1.0}


def test_the_scoring_actor_placement_requests_is_the_one_capacity_checks():
    ev = {"gpus_per_actor": 2.0, "resources": {"custom": {"scoring_node": 1.0}, "accelerator_type": "L40S"}}
    spec = _spec(RESOURCES, ev)
    actor = scoring_bundle(spec.evaluation.scoring_for("7b"))
    assert actor.placed == {"CPU": 1.0, "GPU": 2.0, "scoring_node": 1.0, "accelerator_type:L40S": 0.001}
    where = scoring_placement(spec.evaluation, "7b")
    assert where.gpus == actor.gpus
    assert where.remote_args == {"resources": actor.custom, "accelerator_type": actor.accelerator_type}
    node = {"CPU": 1.0, "GPU": 2.0, "scoring_node": 1.0, "accelerator_type:L40S": 1.0}
    assert placement_problems(spec, [{"CPU": 0.0}], [NodeType("s", node, 1)], training=False) == []
    (field, _), = placement_problems(spec, [{"CPU": 0.0}], [NodeType("s", {**node, "GPU": 1.0}, 1)], training=False)
    assert field == "evaluation.gpus_per_actor"
