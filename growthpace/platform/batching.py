"""How a cell's items become optimizer steps: the one rule that training, `plan` and the tests share.

One optimizer step consumes a global batch of micro x workers x accumulation items. Each epoch is padded
up to a whole number of global batches (the padding repeats items of the same epoch), so every epoch ends
on an accumulation boundary and the step count does not depend on how items fall across ranks.
"""

from __future__ import annotations

import math


def global_batch(per_device_batch: int, workers: int, grad_accum: int) -> int:
    """Items consumed by one optimizer step."""
    if min(per_device_batch, workers, grad_accum) < 1:
        raise ValueError(f"batch settings must be >= 1, got micro {per_device_batch}, workers {workers}, "
                         f"accumulation {grad_accum}")
    return per_device_batch * workers * grad_accum


def steps_per_epoch(items: int, global_batch_items: int) -> int:
    """Optimizer steps in one epoch of ``items`` items (at least one, even for a tiny cell)."""
    return max(1, math.ceil(items / global_batch_items))


def optimizer_steps(items: int, epochs: int, global_batch_items: int) -> int:
    """Optimizer steps of a whole cell: epochs x ceil(items / global batch)."""
    return epochs * steps_per_epoch(items, global_batch_items)
