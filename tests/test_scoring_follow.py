"""Streaming scoring beside a sweep: it looks for newly trained cells less often while none appear."""

from growthpace.jobs.evaluate import FOLLOW_WAIT_S, Scoring


class _Sweep:
    """A sweep's done-event that ends after ``n`` waits and records each wait's length."""

    def __init__(self, n: int):
        self.n, self.waits = n, []

    def is_set(self) -> bool:
        return len(self.waits) >= self.n

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_follow_backs_off_while_nothing_new_and_resets_after_a_scored_pass():
    found = iter([0, 0, 1, 0, 0, 0, 0, 0, 0, 0])  # checkpoints scored per pass: the third pass finds one
    scoring = Scoring.__new__(Scoring)  # the loop alone: no spec, Ray or MLflow
    scoring.once = lambda: next(found)
    scoring.pools = {}  # no scoring actors started: follow closes none
    sweep, errors = _Sweep(7), []
    scoring.follow(sweep, errors)
    first, cap = FOLLOW_WAIT_S
    assert not errors
    assert sweep.waits[:5] == [first, 2 * first, first, 2 * first, 4 * first]
    assert max(sweep.waits) <= cap
