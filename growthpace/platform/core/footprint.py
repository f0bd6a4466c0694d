"""How much storage a cell's checkpoints take: the arithmetic `plan` reports, in one place.

Per epoch a cell writes the HF weights in its training dtype (what scoring loads) and the DeepSpeed
resume state (what an interrupted run restarts from). Training keeps the resume state of the newest
epoch only, and none once the cell has finished, unless the spec keeps it (training.keep_resume_state).
So while a cell trains it holds every epoch's weights (until scoring and retention decide) plus, for a
moment, two resume states: the new one is written before the old one is deleted. After scoring,
evaluation.retention keeps every epoch's weights (`all`), one epoch's (`best`) or none.

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


def checkpoint_footprint(
    params: int, epochs: int, precision: str, zero_stage: int, retention: str, keep_resume_state: bool = False
) -> CheckpointFootprint:
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
    # A single epoch never has an older state to replace: one resume state at most.
    peak = epochs * weights + min(2, epochs) * resume
    retained = kept_epochs * weights + (resume if keep_resume_state else 0)
    return CheckpointFootprint(weights, resume, peak, retained)
