"""Micro-batches as the model sees them: packed (the default) or padded to the longest item.

Packed: a micro-batch's items are laid end to end in one row with position ids that restart at every
item and no attention mask. transformers finds the items from the restarting position ids (its
packed-sequence path) and keeps attention inside each one: on a GPU with flex_attention (a block mask;
blocks wholly masked are skipped), or flash-attention-2's variable-length kernels where flash_attn is
installed (the project does not install it); on CPU with sdpa and a dense L x L block-diagonal mask,
which computes the masked blocks too (torch 2.13 has no flex_attention backward on CPU). flex_attention
matched sdpa on a packed row on CPU: loss equal, logits within 1.8e-7 (bench/packing_attention.py).
No pad token is computed, and the per-token loss is the
padded path's: the first label of every item is ignored, so no item is ever trained to predict the next
item's first token. A micro-batch still holds ``per_device_batch`` items, so optimizer steps and the
learning-rate schedule are those of platform/core/batching.py either way.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from growthpace.platform.core.batching import epoch_order, global_batch, rank_micro_batches
from growthpace.platform.data.chat import IGNORE

Example = tuple[Sequence[int], Sequence[int]]  # (input ids, labels), as ChatEncoder.example makes them


def pad_batch(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows padded to the longest item, with an attention mask."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, : len(x)] = torch.as_tensor(x)
        labels[i, : len(y)] = torch.as_tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pack_batch(batch: list[Example]) -> dict[str, torch.Tensor]:
    """One row of every item end to end; position ids restart per item (that is what isolates them)."""
    ids, labels, positions = [], [], []
    for x, y in batch:
        if len(x) < 2:
            raise ValueError("an item of fewer than 2 tokens cannot be packed (its position ids would not restart)")
        ids.append(torch.as_tensor(x, dtype=torch.long))
        y = torch.as_tensor(y, dtype=torch.long).clone()
        y[0] = IGNORE  # the previous item's last token must not learn to predict this item's first one
        labels.append(y)
        positions.append(torch.arange(len(x), dtype=torch.long))
    return {"input_ids": torch.cat(ids)[None], "labels": torch.cat(labels)[None],
            "position_ids": torch.cat(positions)[None]}


def collate(batch: list[Example], pad_id: int, packed: bool, device) -> dict[str, torch.Tensor]:
    out = pack_batch(batch) if packed else pad_batch(batch, pad_id)
    return {k: v.to(device) for k, v in out.items()}


def fed_tokens(lengths: Iterable[int], packed: bool) -> int:
    """Tokens the model computes for one micro-batch of items of these lengths."""
    lengths = list(lengths)
    return sum(lengths) if packed else len(lengths) * max(lengths)


def train_tokens(lengths: Sequence[int], epochs: int, per_device_batch: int, workers: int, grad_accum: int,
                 seed: int, packed: bool = True) -> int:
    """Tokens a cell feeds the model over all its epochs (every rank together), on the very schedule
    training uses: each epoch padded to whole global batches, cut into micro-batches. With packing this is
    the real token count of the padded epochs; GPU-hour estimates should use it."""
    g = global_batch(per_device_batch, workers, grad_accum)
    total = 0
    for epoch in range(epochs):
        order = epoch_order(len(lengths), g, seed, epoch)
        for rank in range(workers):
            for micro in rank_micro_batches(order, per_device_batch, workers, grad_accum, rank):
                total += fed_tokens((lengths[i] for i in micro), packed)
    return total


def attention_implementation(device: torch.device, packed: bool = True) -> str:
    """On a GPU: flash-attention-2 where installed, else flex_attention for packed rows (it skips the
    masked blocks sdpa's dense mask computes; its kernel compiles once per process), else sdpa.
    On CPU sdpa: flex_attention has no backward there."""
    import importlib.util

    if device.type != "cuda":
        return "sdpa"
    if importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "flex_attention" if packed else "sdpa"
