import pytest

from growthpace.platform.batching import global_batch, optimizer_steps, steps_per_epoch


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
