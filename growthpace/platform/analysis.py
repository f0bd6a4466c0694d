"""Selected scores -> the report's summary: every number the page shows, as one JSON-ready dict.

Pure: frames and dicts in, a dict out; no files, no plots, no MLflow. The numbers themselves are
platform/growth.py (curves, pace, the recommender); this module decides which of them the report
shows and in what shape. jobs/report.py loads the inputs and writes the outputs.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from growthpace.platform import growth
from growthpace.platform.abilities import ABILITIES
from growthpace.platform.tracking import redact

PER_ABILITY = len(ABILITIES)  # a curated volume v is spread evenly: v / 10 items per ability


def largest_size(params: dict[str, float], sizes: list[str]) -> str:
    known = [s for s in sizes if math.isfinite(params.get(s, math.nan))]
    return max(known, key=lambda s: params[s]) if known else sizes[-1]


def analyse(selected: pl.DataFrame, settings, *, params: dict[str, float], verdicts: pl.DataFrame | None = None,
            mixes: dict[str, dict[str, int]] | None = None, available: dict[str, int] | None = None,
            budget: int | None = None, size: str | None = None, name: str | None = None):
    """Everything the report shows, as (summary, measured, fits, recommendation)."""
    sizes = list(dict.fromkeys(selected.sort("size")["size"].to_list()))
    params = {s: params.get(s, growth.params_from_label(s) or math.nan) for s in sizes}
    measured = growth.measure(selected, verdicts, samples=settings.bootstrap_samples, seed=settings.seed,
                              confidence=settings.confidence, params=params)
    fits = growth.fit_curves(measured)
    curves, abilities = growth.pace_table(fits, settings, settings.confidence)
    extrap = growth.extrapolation_table(measured, settings.extrapolate_from)
    errs = [abs(r["error"]) for r in extrap if r["error"] is not None]

    rec = None
    curated = measured.rows.filter((pl.col("source") == "curated") & (pl.col("mix") == ""))
    if fits:
        fitted_sizes = sorted({s for _, s in fits}, key=sizes.index)
        size = size or settings.recommend_size or largest_size(params, fitted_sizes)
        if size not in fitted_sizes:
            from growthpace.platform.spec import SpecError

            raise SpecError(f"field 'analysis.recommend_size': no fitted curves for size {size!r}; sizes: {fitted_sizes}")
        # Default: half the largest volume, so an ability can get twice its even share and stay
        # within volumes that were measured (at the largest volume any shift upward is extrapolation).
        budget = budget or settings.budget or max(1, int(curated["volume"].max()) // 2)
        rec = growth.recommendation(fits, size, budget, name=name, floor=settings.floor, available=available,
                                    per_ability=PER_ABILITY, confidence=settings.confidence,
                                    trust_doublings=settings.trust_doublings, min_gain=settings.volume_gain)

    method = measured.rows.group_by("bootstrap").len()
    summary = {
        "settings": redact(settings.model_dump(mode="json")),
        "model": ("score(v) = a + (c - a) * sigmoid(k * (log2 v - m)); start a held at the random baseline unless "
                  "the data show otherwise; see docs/analysis.md"),
        "bootstrap": {
            "samples": settings.bootstrap_samples, "confidence": settings.confidence,
            "rows_by_method": dict(zip(method["bootstrap"].to_list(), method["len"].to_list())),
            "seeds": sorted(selected["seed"].unique().to_list()),
        },
        "params": {s: growth._num(p) for s, p in params.items()},
        "measured": [
            {**{k: r[k] for k in ("size", "source", "volume", "mix", "split", "ability", "seeds", "bootstrap")},
             "score": r["score"], "lo": growth._num(r["lo"]), "hi": growth._num(r["hi"]), "baseline": r["expected"]}
            for r in measured.rows.iter_rows(named=True)
        ],
        "curves": curves,
        "abilities": abilities,
        "source_gap": growth.source_gap(measured),
        "transfer": growth.transfer(measured),
        "extrapolation": {"fraction": settings.extrapolate_from, "rows": extrap,
                          "mean_abs_error": growth._num(np.mean(errs)) if errs else None},
        "recommendation": None if rec is None else {
            "size": rec.size, "budget": rec.budget, "name": rec.name, "allocations": rec.allocations,
            "predicted": rec.predicted, "per_ability": rec.per_ability, "gain_over_even": rec.gain,
            "gain_over_reconstruct": rec.gain_vs_reconstruct, "mix": rec.mix, "beyond_data": rec.beyond_data,
        },
        "mix_check": growth.mix_check(measured, fits, mixes or {}, PER_ABILITY, settings.trust_doublings),
    }
    return summary, measured, fits, rec
