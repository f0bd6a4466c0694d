import pytest

from growthpace.platform.core.batching import global_batch, optimizer_steps, steps_per_epoch


def test_doit_7b_ten_items_make_one_step_per_epoch_not_a_partial_one():
    g = global_batch(per_device_batch=8, workers=4, grad_accum=2)
    assert g == 64
    assert steps_per_epoch(10, g) == 1
    assert optimizer_steps(10, 25, g) == 25


def test_steps_round_up_to_whole_global_batches():
    assert steps_per_epoch(65, 64) == 2
    assert steps_per_epoch(64, 64) == 1
    assert optimizer_steps(130, 3, 64) == 9


def test_zero_or_negative_batch_settings_are_rejected():
    with pytest.raises(ValueError):
        global_batch(0, 1, 1)


from growthpace.platform.core.batching import epoch_order, rank_micro_batches  # noqa: E402


def test_doit_7b_ten_items_every_rank_gets_whole_accumulation_rounds():
    """4 workers x micro 8 x accumulation 2, 10 items: one optimizer step per epoch (not a partial one),
    so 25 epochs make 25 steps; every rank gets exactly `accum` micro-batches of `micro` items."""
    order = epoch_order(10, global_batch(8, 4, 2), seed=3, epoch=0)
    assert len(order) == 64 and set(order) == set(range(10))
    per_rank = [rank_micro_batches(order, 8, 4, 2, r) for r in range(4)]
    assert [len(m) for m in per_rank] == [2, 2, 2, 2]
    assert all(len(b) == 8 for m in per_rank for b in m)
    assert sorted(i for m in per_rank for b in m for i in b) == sorted(order)  # each slot used once


def test_epoch_order_is_seeded_per_epoch_and_pads_with_its_own_items():
    a, b = epoch_order(100, 64, 0, 0), epoch_order(100, 64, 0, 1)
    assert a == epoch_order(100, 64, 0, 0) and a != b
    assert len(a) == 128 and sorted(a[:100]) == list(range(100)) and a[100:] == a[:28]


def test_micro_batches_reject_a_partial_global_batch():
    with pytest.raises(ValueError, match="global batches"):
        rank_micro_batches(list(range(10)), 2, 2, 2, 0)


def test_schedule_over_the_planned_steps_ends_at_end_lr():
    """doit's 7b 10-item cell: 25 epochs x 1 step; the old schedule stopped at 5.7e-6 instead of 1e-6."""
    from growthpace.platform.train.train import lr_lambda

    steps = optimizer_steps(10, 25, global_batch(8, 4, 2))
    f = lr_lambda(steps, 1e-5, 1e-6)
    assert f(0) == 1.0 and 1e-5 * f(steps) == pytest.approx(1e-6, rel=1e-12)
    assert 1e-5 * f(12) > 5e-6  # after 12 of the 25 steps: still half way
