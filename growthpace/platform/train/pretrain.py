"""Pre-training a base model on plain text before the cells: its identity, its examples, its figures.

A random preset base learns only the answer-letter prior from a few hundred instruction items; a short
causal-LM pre-training on a plain-text rendering of the procedural world first teaches it the facts.
The pre-trained base is a step of its own (Marin's executor): stored at ``base/<key>`` where the key
hashes everything that decides its weights (the raw base, the corpus bytes, the settings, the
tokenizer), so a rerun with the same inputs finds it and a changed input gets a new folder.

Pure logic only (no torch, no Ray): jobs/pretrain.py runs it, platform/train/train.py pretrain_base trains.
"""

from __future__ import annotations

from typing import Any

from growthpace.platform.core.batching import global_batch, steps_per_epoch
from growthpace.platform.core.identity import stable_hash

PRETRAIN_INFO = "pretrain.json"  # written with the weights: steps, tokens seen, first/last loss, wall time


def pretrained_key(raw_key: str, corpus_sha: str, settings_: dict[str, Any], tokenizer_key: str | None) -> str:
    """The folder name of a pre-trained base under base/: the raw base's key plus a hash of the rest."""
    return f"{raw_key}-pt{stable_hash([raw_key, corpus_sha, settings_, tokenizer_key], 10)}"


def blocks(token_lists: list[list[int]], eot: int, block: int) -> list[list[int]]:
    """Documents end to end, each closed by the end-of-turn token, cut into ``block``-token sequences
    (the last partial sequence is dropped)."""
    stream = [t for ids in token_lists for t in (*ids, eot)]
    return [stream[i : i + block] for i in range(0, len(stream) - block + 1, block)]


def epoch_examples(sequences: list[list[int]], steps: int, batch: int) -> list[tuple[list[int], list[int]]]:
    """The (ids, labels = ids) items of the one epoch that is the whole pre-training: the sequences cycled
    or cut to exactly ``steps`` global batches, so training's step rule (platform/core/batching.py) gives
    ``steps`` optimizer steps and the lr schedule ends where the spec says."""
    if not sequences:
        raise ValueError("the corpus has fewer tokens than one block")
    want = steps * batch
    examples = [(s, s) for s in (sequences[i % len(sequences)] for i in range(want))]
    assert steps_per_epoch(len(examples), batch) == steps and len(examples) % batch == 0
    return examples


def train_settings(settings_: dict[str, Any]) -> dict[str, Any]:
    """CellTraining's config for a pre-training: one epoch whose items are fixed-length sequences, so
    no padding and no packing (packing would make one row of a whole micro-batch, and attention over it
    quadratic in the batch); the global batch is ``batch`` over the workers without accumulation."""
    s = settings_
    per_device = s["batch"] // s["workers"]
    assert global_batch(per_device, s["workers"], 1) == s["batch"]
    return {
        **{k: s[k] for k in ("lr", "end_lr", "betas", "weight_decay", "precision", "zero_stage",
                             "gradient_checkpointing", "seed", "steps", "batch", "block")},
        "per_device_batch": per_device, "grad_accum": 1, "epochs": 1, "packing": False,
    }


def tokens_seen(settings_: dict[str, Any]) -> int:
    return settings_["steps"] * settings_["batch"] * settings_["block"]
