"""The schedule arithmetic `growthpace simulate` is measured against (platform/core/schedule.py)."""

import pytest

from growthpace.platform.core.capacity import NodeType
from growthpace.platform.core.schedule import SimTrial, gpu_hours_billed, lpt_schedule, makespan_lower_bound

ONE_GPU = [NodeType("g", {"CPU": 4.0, "GPU": 1.0}, 2)]


def _trial(name, hours, workers=1, gpus=1.0, **extra):
    return SimTrial(name, hours, workers, {"CPU": 1.0, "GPU": gpus, **extra})


def test_lpt_is_greedy_and_the_bound_is_the_optimum_here():
    """Graham's example: LPT on 2 machines gives 7 where 6 is optimal (3+3 | 2+2+2); the bound says 6."""
    trials = [_trial(n, h) for n, h in zip("abcde", [3, 3, 2, 2, 2])]
    s = lpt_schedule(trials, ONE_GPU, max_concurrent=8)
    assert s.makespan_h == pytest.approx(7.0)
    assert s.order == ("a", "b", "c", "d", "e")
    assert s.starts == {"a": 0.0, "b": 0.0, "c": 3.0, "d": 3.0, "e": 5.0}
    assert makespan_lower_bound(trials, ONE_GPU) == pytest.approx(6.0)


def test_concurrency_limit_and_strict_pack():
    node = [NodeType("n", {"CPU": 8.0, "GPU": 8.0}, 1)]
    four = [_trial(str(i), 1.0) for i in range(4)]
    assert lpt_schedule(four, node, max_concurrent=2).makespan_h == pytest.approx(2.0)
    assert lpt_schedule(four, node, max_concurrent=4).makespan_h == pytest.approx(1.0)
    halves = [NodeType("h", {"CPU": 8.0, "GPU": 4.0}, 2)]
    with pytest.raises(ValueError, match="fits no node"):
        lpt_schedule([_trial("big", 1.0, workers=8)], halves, max_concurrent=1)
    spread = SimTrial("big", 1.0, 8, {"CPU": 1.0, "GPU": 1.0}, placement="pack")
    assert lpt_schedule([spread], halves, max_concurrent=1).makespan_h == pytest.approx(1.0)


def test_a_pinned_size_is_bounded_by_its_own_node_type():
    """33b fits only the large-GPU type: its 2 x 8 GPU-hours on 8 GPUs take 2 h however idle the rest is."""
    types = [NodeType("a100", {"CPU": 96.0, "GPU": 8.0}, 6), NodeType("h200", {"CPU": 96.0, "GPU": 8.0, "large_gpu": 8.0}, 1)]
    trials = [_trial("33b-1", 1.0, workers=8, large_gpu=1.0), _trial("33b-2", 1.0, workers=8, large_gpu=1.0),
              _trial("7b", 0.5, workers=4)]
    assert makespan_lower_bound(trials, types) == pytest.approx(2.0)
    s = lpt_schedule(trials, types, max_concurrent=8)
    assert s.makespan_h == pytest.approx(2.0) and s.starts["7b"] == 0.0
    assert {n.type for n in s.nodes if n.busy} == {"a100", "h200"}


def test_billed_gpu_hours_keep_a_node_until_its_idle_timeout():
    assert gpu_hours_billed([(0.0, 1.0), (1.05, 2.0)], gpus=8, idle_timeout_h=0.1) == pytest.approx(8 * 2.1)
    assert gpu_hours_billed([(0.0, 1.0), (1.5, 2.0)], gpus=8, idle_timeout_h=0.1) == pytest.approx(8 * (1.1 + 0.6))
    assert gpu_hours_billed([], gpus=8, idle_timeout_h=0.1) == 0.0  # never launched
