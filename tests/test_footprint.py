"""Checkpoint storage per cell (platform/core/footprint.py): weights per epoch, resume states, retention."""

import pytest

from growthpace.platform.core.footprint import checkpoint_footprint

P = 1_000_000


def test_weights_follow_the_training_dtype_and_resume_state_the_zero_stage():
    bf16 = checkpoint_footprint(P, 3, "bf16", 3, "all")
    fp32 = checkpoint_footprint(P, 3, "fp32", 2, "all")
    assert (bf16.weights_per_epoch, bf16.resume_state) == (2 * P, 12 * P)
    assert (fp32.weights_per_epoch, fp32.resume_state) == (4 * P, 14 * P)
    assert checkpoint_footprint(P, 3, "fp16", 2, "all").weights_per_epoch == 2 * P


def test_peak_holds_every_epochs_weights_and_two_resume_states():
    f = checkpoint_footprint(P, 15, "fp16", 2, "all")
    assert f.peak == 15 * 2 * P + 2 * 14 * P
    assert checkpoint_footprint(P, 1, "fp16", 2, "all").peak == 2 * P + 14 * P  # nothing older to replace


@pytest.mark.parametrize("retention, epochs_kept", [("all", 15), ("best", 1), ("none", 0)])
def test_retained_after_scoring_by_retention(retention, epochs_kept):
    f = checkpoint_footprint(P, 15, "bf16", 3, retention)
    assert f.retained == epochs_kept * 2 * P
    kept = checkpoint_footprint(P, 15, "bf16", 3, retention, keep_resume_state=True)
    assert kept.retained == epochs_kept * 2 * P + 12 * P  # the newest epoch's state only
    assert kept.peak == f.peak


def test_past_epoch_costs_at_most_2_2_bytes_per_param_in_bf16():
    one, two = (checkpoint_footprint(P, e, "bf16", 3, "all").retained for e in (1, 2))
    assert (two - one) / P <= 2.2


@pytest.mark.parametrize("args", [(P, 3, "int8", 2, "all"), (P, 3, "bf16", 4, "all"), (P, 3, "bf16", 2, "some"),
                                  (P, 0, "bf16", 2, "all")])
def test_bad_settings_are_refused(args):
    with pytest.raises(ValueError):
        checkpoint_footprint(*args)
