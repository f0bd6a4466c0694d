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


def epoch_order(items: int, global_batch_items: int, seed: int, epoch: int) -> list[int]:
    """The item indices one epoch consumes, in order: a seeded shuffle, padded to whole global batches
    by repeating that epoch's own first items (so a repeated item is never one the epoch lacks)."""
    import random

    if items < 1:
        raise ValueError("a cell needs at least one item")
    order = list(range(items))
    random.Random(seed * 100003 + epoch).shuffle(order)
    total = steps_per_epoch(items, global_batch_items) * global_batch_items
    return (order * -(-total // items))[:total]


def rank_micro_batches(order: list[int], per_device_batch: int, workers: int, grad_accum: int,
                       rank: int) -> list[list[int]]:
    """This rank's micro-batches of an epoch, step by step: global batch s is order[s*G:(s+1)*G], cut
    into ``grad_accum`` slices of micro x workers items, and this rank takes its micro-sized share of each.
    Every rank gets the same number, a multiple of ``grad_accum``: epochs end on an accumulation boundary."""
    g = global_batch(per_device_batch, workers, grad_accum)
    if len(order) % g:
        raise ValueError(f"an epoch of {len(order)} items is not whole global batches of {g}")
    share = per_device_batch * workers
    return [order[start + rank * per_device_batch : start + (rank + 1) * per_device_batch]
            for start in range(0, len(order), share)]
