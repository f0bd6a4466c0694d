"""How much storage a cell's checkpoints take: the arithmetic `plan` reports, in one place.

Per epoch a cell writes the HF weights in its training dtype (what scoring loads). The DeepSpeed resume
state (what an interrupted run restarts from) is 6-7x larger, so it is written only where it pays: never
after the last epoch (nothing is left to resume), and after another epoch only once the training since
the last saved state (or the start) reaches training.resume_every_s (`resume_state_due`, the one rule
platform/train/train.py applies to measured time and `plan` to estimated time). Training keeps the newest
resume state only, and none once the cell has finished, unless the spec keeps it
(training.keep_resume_state, which also writes the last epoch's). So while a cell trains it holds every
epoch's weights (until scoring and retention decide) plus, for a moment, two resume states: the new one is
written before the old one is deleted. After scoring, evaluation.retention keeps every epoch's weights
(`all`), one epoch's (`best`) or none.

Bytes per parameter of the resume state, measured with DeepSpeed 0.19.8 on CPU (docs/performance.md):
ZeRO-2 14 (fp32 master weights, Adam moments, 16-bit module states), ZeRO-3 12 (the 16-bit weights
live in the HF save). Stages 0 and 1 store the same tensors as stage 2.
"""

from __future__ import annotations

from dataclasses import dataclass

WEIGHT_BYTES_PER_PARAM = {"bf16": 2, "fp16": 2, "fp32": 4}
RESUME_BYTES_PER_PARAM = {0: 14, 1: 14, 2: 14, 3: 12}
RETENTIONS = ("all", "best", "none")


@dataclass(frozen=True)
class CheckpointFootprint:
    weights_per_epoch: int  # bytes of one epoch's HF weights
    resume_state: int  # bytes of one DeepSpeed resume state
    peak: int  # while the cell trains and before its epochs are scored
    retained: int  # after scoring and retention
    written: int  # bytes written over the whole cell: every epoch's weights and each resume state saved


def resume_state_due(epoch: int, epochs: int, trained_since_s: float, every_s: float,
                     keep_last: bool = False) -> bool:
    """Whether epoch ``epoch`` (1-based, just trained) writes the resume state: never the last one (unless
    ``keep_last``: training.keep_resume_state), another once ``trained_since_s`` seconds of training have
    passed since the last saved state (or the start) and so would be lost to a failure."""
    if epoch >= epochs:
        return keep_last
    return trained_since_s >= every_s


def resume_interval_s(resume_state_bytes: int, gib_per_s: float, failure_every_h: float,
                      every_s: float | None = None) -> float:
    """Seconds of training between resume states: ``every_s`` (training.resume_every_s) when set, else
    Young's interval sqrt(2 x write time x mean time between failures), which minimises the expected
    time lost to writes plus the time lost to failures (Young 1974, "A first order approximation to the
    optimum checkpoint interval")."""
    if every_s is not None:
        return every_s
    return (2 * write_seconds(resume_state_bytes, gib_per_s) * failure_every_h * 3600) ** 0.5


def resume_state_epochs(epochs: int, epoch_s: float | None, every_s: float, keep_last: bool = False) -> tuple[int, ...]:
    """The epochs that write the resume state when each epoch trains for ``epoch_s`` seconds; with no
    estimate (None), every epoch but the last: the most it can be."""
    due, since = [], 0.0
    for epoch in range(1, epochs + 1):
        since += float("inf") if epoch_s is None else epoch_s
        if resume_state_due(epoch, epochs, since, every_s, keep_last):
            due.append(epoch)
            since = 0.0
    return tuple(due)


def write_seconds(nbytes: int, gib_per_s: float) -> float:
    """Seconds to write ``nbytes`` to storage at ``gib_per_s`` (training.storage_write_gib_s)."""
    return nbytes / (gib_per_s * 2**30)


def checkpoint_footprint(
    params: int, epochs: int, precision: str, zero_stage: int, retention: str, keep_resume_state: bool = False,
    resume_writes: int | None = None,
) -> CheckpointFootprint:
    """``resume_writes``: how many resume states the cell writes (resume_state_epochs); None = every epoch
    but the last, plus the last with keep_resume_state."""
    if precision not in WEIGHT_BYTES_PER_PARAM:
        raise ValueError(f"precision must be one of {', '.join(WEIGHT_BYTES_PER_PARAM)}, got {precision!r}")
    if zero_stage not in RESUME_BYTES_PER_PARAM:
        raise ValueError(f"zero_stage must be one of {sorted(RESUME_BYTES_PER_PARAM)}, got {zero_stage!r}")
    if retention not in RETENTIONS:
        raise ValueError(f"retention must be one of {', '.join(RETENTIONS)}, got {retention!r}")
    if params < 0 or epochs < 1:
        raise ValueError(f"params must be >= 0 and epochs >= 1, got {params} and {epochs}")
    weights = params * WEIGHT_BYTES_PER_PARAM[precision]
    resume = params * RESUME_BYTES_PER_PARAM[zero_stage]
    kept_epochs = {"all": epochs, "best": 1, "none": 0}[retention]
    if resume_writes is None:
        resume_writes = epochs - 1 + bool(keep_resume_state)
    # the new state is written before the old one is deleted: two at most, fewer when fewer are written
    peak = epochs * weights + min(2, resume_writes) * resume
    retained = kept_epochs * weights + (resume if keep_resume_state else 0)
    return CheckpointFootprint(weights, resume, peak, retained, epochs * weights + resume_writes * resume)
