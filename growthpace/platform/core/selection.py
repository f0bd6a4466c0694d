"""The study's one model-selection rule: the best valid epoch after the warm-up epochs.

An epoch is eligible once it is past the warm-up (epoch > warmup); among eligible epochs the one with
the highest validation score wins, ties going to the earlier epoch. The score is per ability where the
selection is per ability (in-domain test scores), and the mean over abilities where one epoch serves
the whole cell (OOD subjects, which have no valid split, and checkpoint retention).

Pure: polars frames in, polars frames (or an epoch) out. jobs/evaluate.py keeps the checkpoint this
picks; jobs/report.py reports the test score at the epoch it picks.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

WarmUp = int | Callable[[int], int]  # a fixed warm-up, or warm-up for a cell's planned epochs


def eligible_valid(scores: pl.DataFrame, warmup: WarmUp) -> pl.DataFrame:
    """Valid rows past the warm-up. With a callable, the frame needs an `epochs` column (planned epochs)."""
    valid = scores.filter(pl.col("split") == "valid")
    if callable(warmup):
        warm = {int(e): int(warmup(int(e))) for e in valid["epochs"].unique().to_list()}
        limit = pl.col("epochs").replace_strict(warm, return_dtype=pl.Int64)
    else:
        limit = pl.lit(int(warmup))
    return valid.filter(pl.col("epoch") > limit)


def _best(valid: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """keys + selected_epoch: the highest score per key, the earlier epoch on ties."""
    return (
        valid.sort([*keys, "score", "epoch"], descending=[*([False] * len(keys)), True, False])
        .group_by(keys, maintain_order=True)
        .first()
        .select(*keys, pl.col("epoch").alias("selected_epoch"))
    )


def best_epoch_per_ability(scores: pl.DataFrame, warmup: WarmUp, by: tuple[str, ...] = ("cell_id",)) -> pl.DataFrame:
    """by + ability + selected_epoch: the best valid epoch of each ability."""
    return _best(eligible_valid(scores, warmup), [*by, "ability"])


def best_epoch_overall(scores: pl.DataFrame, warmup: WarmUp, by: tuple[str, ...] = ("cell_id",)) -> pl.DataFrame:
    """by + selected_epoch: the epoch whose mean valid score over abilities is best."""
    valid = eligible_valid(scores, warmup)
    mean = valid.group_by([*by, "epoch"]).agg(pl.col("score").mean())
    return _best(mean, list(by))


def best_valid_epoch(scores: pl.DataFrame, warmup: WarmUp) -> int | None:
    """One cell's scores (any epochs, splits, abilities) -> its best epoch overall, or None before any
    valid score past the warm-up exists."""
    if scores.is_empty():
        return None
    best = best_epoch_overall(scores.with_columns(_one=pl.lit(0)), warmup, by=("_one",))
    return int(best["selected_epoch"][0]) if best.height else None


def select(scores: pl.DataFrame, warmup: WarmUp) -> pl.DataFrame:
    """One row per (cell, ability or OOD subject) at its selected epoch, with `selected_epoch` in place
    of `epoch`: test rows at each ability's best valid epoch, OOD rows at the cell's best epoch overall."""
    keys = ["cell_id", "ability"]
    per_ability = best_epoch_per_ability(scores, warmup)
    overall = best_epoch_overall(scores, warmup)
    test = scores.filter(pl.col("split") == "test").join(per_ability, on=keys)
    ood = scores.filter(pl.col("split") == "ood").join(overall, on="cell_id")
    picked = pl.concat([test, ood], how="vertical_relaxed")
    return picked.filter(pl.col("epoch") == pl.col("selected_epoch")).drop("epoch")
