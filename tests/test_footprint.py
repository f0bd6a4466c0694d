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
    assert checkpoint_footprint(P, 1, "fp16", 2, "all").peak == 2 * P  # a last epoch writes no resume state
    assert checkpoint_footprint(P, 15, "fp16", 2, "all", resume_writes=1).peak == 15 * 2 * P + 14 * P
    assert checkpoint_footprint(P, 15, "fp16", 2, "all", resume_writes=0).peak == 15 * 2 * P


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


def test_written_bytes_count_every_epochs_weights_and_each_resume_state():
    assert checkpoint_footprint(P, 15, "fp16", 2, "all").written == 15 * 2 * P + 14 * 14 * P  # all but the last
    assert checkpoint_footprint(P, 15, "fp16", 2, "all", resume_writes=3).written == 15 * 2 * P + 3 * 14 * P
    assert checkpoint_footprint(P, 15, "fp16", 2, "all", keep_resume_state=True).written == 15 * 2 * P + 15 * 14 * P


def test_resume_state_is_never_written_for_the_last_epoch_and_only_when_due():
    from growthpace.platform.core.footprint import resume_state_due, resume_state_epochs

    assert not resume_state_due(15, 15, 10**9, 0)  # nothing left to resume
    assert resume_state_due(15, 15, 0, 10**9, keep_last=True)  # training.keep_resume_state keeps the last
    assert resume_state_due(3, 15, 1800, 1800) and not resume_state_due(3, 15, 1799.9, 1800)
    assert resume_state_epochs(15, 600, 0) == tuple(range(1, 15))  # 0: every epoch but the last
    assert resume_state_epochs(15, 600, 1800) == (3, 6, 9, 12)  # 30 min of training between states
    assert resume_state_epochs(15, 2.6, 1800) == ()  # a short cell restarts from scratch on a failure
    assert resume_state_epochs(4, None, 1800) == (1, 2, 3)  # no time estimate: the most it can be


def test_default_resume_interval_is_youngs_from_the_states_write_time():
    from growthpace.platform.core.footprint import resume_interval_s, write_seconds

    state = 14 * 6_885_486_592  # 7b, ZeRO-2
    assert write_seconds(2**30, 1.0) == 1.0 and write_seconds(2**30, 2.0) == 0.5
    assert resume_interval_s(state, 1.0, 24) == pytest.approx((2 * state / 2**30 * 24 * 3600) ** 0.5)
    assert 60 * 60 < resume_interval_s(state, 1.0, 24) < 70 * 60  # about 66 min
    assert resume_interval_s(state, 1.0, 24, every_s=0) == 0  # the spec's value wins
    # a slower store or more frequent failures: a state is worth writing less often / more often
    assert resume_interval_s(state, 0.25, 24) > resume_interval_s(state, 1.0, 24) > resume_interval_s(state, 1.0, 6)
