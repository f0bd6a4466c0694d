"""Placement of trials and scoring actors (jobs/placement.py): the Ray arguments, built without Ray running."""

from __future__ import annotations

import pytest

from growthpace.jobs.placement import estimated_cost, longest_first, scaling_config, scoring_remote_args
from growthpace.platform.core.allocation import Allocation
from growthpace.platform.core.cells import Cell
from growthpace.platform.core.spec import EvaluationSpec, ScoringResources

TRAINING = {"per_device_batch": 8, "grad_accum": 1, "zero_stage": 2, "precision": "bf16"}


def _cell(cell_id="c", model="m", items=100, epochs=3, workers=8, gpus=1.0, **kw) -> Cell:
    return Cell(cell_id=cell_id, study="s", model=model, size=model, source="curated", volume=items, mix=None, seed=0,
                allocation=Allocation({"math": items}), epochs=epochs, training=dict(TRAINING), workers=workers,
                cpus_per_worker=10, gpus_per_worker=gpus, **kw)


def test_a_trial_is_kept_on_one_node_and_pinned_by_accelerator_or_custom_resource():
    sc = scaling_config(_cell(accelerator_type="A100"))
    assert sc.placement_strategy == "STRICT_PACK" and sc.num_workers == 8 and sc.use_gpu
    per_worker = sc._resources_per_worker_not_none
    assert per_worker["GPU"] == 1 and per_worker["CPU"] == 10
    assert per_worker["accelerator_type:A100"] > 0  # Ray schedules only on nodes reporting an A100
    big = scaling_config(_cell(custom_resources={"large_gpu": 1}))
    assert big.total_resources["large_gpu"] == 8 and not any(k.startswith("accelerator_type") for k in big.total_resources)
    spread = scaling_config(_cell(workers=16, placement="pack"))
    assert spread.placement_strategy == "PACK"


def test_cpu_trial_asks_for_no_gpu():
    sc = scaling_config(_cell(gpus=0.0, workers=2))
    assert not sc.use_gpu and "GPU" not in sc._resources_per_worker_not_none


def test_scoring_actors_can_have_their_own_node_group():
    assert scoring_remote_args(EvaluationSpec()) == {}
    ev = EvaluationSpec(resources=ScoringResources(accelerator_type="L40S", custom={"scoring_node": 1}))
    assert scoring_remote_args(ev) == {"accelerator_type": "L40S", "resources": {"scoring_node": 1}}


def test_scoring_node_group_reaches_the_vllm_processor_engine(tmp_path):
    pytest.importorskip("ray.data.llm")
    from growthpace.evaluators.llm_processor import processor_config

    (tmp_path / "config.json").write_text('{"dtype": "float16"}')  # the engine's dtype is the checkpoint's
    cfg = processor_config(tmp_path, batch_size=8, gpus=1, max_length=256,
                           remote_args={"accelerator_type": "L40S", "resources": {"scoring_node": 1}})
    assert cfg.accelerator_type == "L40S"
    assert cfg.placement_group_config["bundles"] == [{"CPU": 1, "GPU": 1.0, "scoring_node": 1}]
    assert cfg.engine_kwargs["dtype"] == "float16"


def test_longest_trials_start_first():
    small = _cell("small", model="7b", items=10, epochs=25, workers=4)
    big_data = _cell("big-data", model="7b", items=40960, epochs=15, workers=4)
    big_model = _cell("big-model", model="33b", items=10000, epochs=15, workers=8)
    params = {"7b": 7e9, "33b": 33e9}
    order = [c.cell_id for c in longest_first([small, big_data, big_model], params)]
    # wall time, not size: 7b on 40,960 items with 4 GPUs outlasts 33b on 10,000 with 8
    assert order == ["big-data", "big-model", "small"]
    # an epoch is filled to whole global batches (4 workers x micro 8): 10 items cost as much as 32
    assert estimated_cost(small, 7e9) == estimated_cost(_cell(model="7b", items=32, epochs=25, workers=4), 7e9)


def test_scoring_resources_per_model_size():
    from growthpace.jobs.placement import scoring_placement
    from growthpace.platform.core.spec import SizeScoring

    ev = EvaluationSpec(gpus_per_actor=1.0, concurrency=4, resources=ScoringResources(
        custom={"scoring_node": 1}, by_size={"33b": SizeScoring(gpus=2.0, accelerator_type="H200", concurrency=1),
                                             "13b": SizeScoring(custom={"big_scoring_node": 1})}))
    big = scoring_placement(ev, "33b")  # two GPUs per engine on an H200 node, one warm engine
    assert (big.gpus, big.concurrency) == (2.0, 1)
    assert big.remote_args == {"resources": {"scoring_node": 1}, "accelerator_type": "H200"}
    mid = scoring_placement(ev, "13b")  # its own node type, the evaluation-wide GPUs and actors
    assert (mid.gpus, mid.concurrency, mid.remote_args) == (1.0, 4, {"resources": {"big_scoring_node": 1}})
    small = scoring_placement(ev, "7b")  # no entry: the evaluation-wide settings
    assert (small.gpus, small.concurrency, small.remote_args) == (1.0, 4, {"resources": {"scoring_node": 1}})
    assert scoring_remote_args(ev, "33b") == big.remote_args


def test_tensor_parallel_engine_settings_follow_the_gpus():
    from growthpace.evaluators.vllm_backend import engine_args

    assert "tensor_parallel_size" not in engine_args(2048, True, "bfloat16", gpus=1.0)
    tp = engine_args(2048, True, "float16", gpus=4.0)
    assert tp["tensor_parallel_size"] == 4 and tp["dtype"] == "float16" and tp["max_model_len"] == 2048
    assert "kv_cache_memory_bytes" not in tp and not tp["enforce_eager"]  # GPU: graphs and vLLM's own KV sizing
    cpu = engine_args(256, False, "float16")
    assert cpu["dtype"] == "float32" and cpu["enforce_eager"] and "kv_cache_memory_bytes" in cpu

