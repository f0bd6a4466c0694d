"""Selected scores -> the report's summary: every number the page shows, as one JSON-ready dict.

Pure: frames and dicts in, a dict out; no files, no plots, no MLflow. The numbers themselves are
platform/growth.py (curves, pace, the recommender); this module decides which of them the report
shows and in what shape. jobs/report.py loads the inputs and writes the outputs.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from growthpace.platform import decisions, growth
from growthpace.platform.abilities import ABILITIES
from growthpace.platform.tracking import redact

PER_ABILITY = len(ABILITIES)  # a curated volume v is spread evenly: v / 10 items per ability


def largest_size(params: dict[str, float], sizes: list[str]) -> str:
    known = [s for s in sizes if math.isfinite(params.get(s, math.nan))]
    return max(known, key=lambda s: params[s]) if known else sizes[-1]


def analyse(selected: pl.DataFrame, settings, *, params: dict[str, float], verdicts: pl.DataFrame | None = None,
            mixes: dict[str, dict[str, int]] | None = None, available: dict[str, int] | None = None,
            budget: int | None = None, size: str | None = None, name: str | None = None,
            cell_costs: dict[str, dict] | None = None):
    """Everything the report shows, as (summary, measured, fits, recommendation).

    cell_costs: cell_id -> {gpu_hours, core_hours, basis} (jobs/report.py: measured or planned); every
    comparison and the recommendation carry the cost of the cells behind them."""
    sizes = list(dict.fromkeys(selected.sort("size")["size"].to_list()))
    params = {s: params.get(s, growth.params_from_label(s) or math.nan) for s in sizes}
    measured = growth.measure(selected, verdicts, samples=settings.bootstrap_samples, seed=settings.seed,
                              confidence=settings.confidence, params=params)
    fits = growth.fit_curves(measured)
    curves, abilities = growth.pace_table(fits, settings, settings.confidence)
    extrap = growth.extrapolation_table(measured, settings.extrapolate_from)
    errs = [abs(r["error"]) for r in extrap if r["error"] is not None]
    costs = decisions.setting_costs(selected, cell_costs or {})

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

    paired = {"method": None, "alpha": 1 - settings.confidence, "rows": []}
    if verdicts is not None and verdicts.height:
        paired = decisions.paired(decisions.item_means(verdicts, selected), samples=settings.bootstrap_samples,
                                  confidence=settings.confidence, seed=settings.seed, costs=costs)
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
        "source_gap": _mark_gaps(growth.source_gap(measured), paired["rows"], costs),
        "transfer": growth.transfer(measured),
        "extrapolation": {"fraction": settings.extrapolate_from, "rows": extrap,
                          "mean_abs_error": growth._num(np.mean(errs)) if errs else None},
        "recommendation": None if rec is None else _recommendation(rec, costs),
        "mix_check": _mark_mixes(growth.mix_check(measured, fits, mixes or {}, PER_ABILITY, settings.trust_doublings),
                                 paired["rows"], costs),
        "size_holdout": _holdout(measured, fits, costs),
        "decision_accuracy": _decisions(measured, params, settings.seed, costs),
        "paired": paired,
    }
    return summary, measured, fits, rec


def _recommendation(rec: growth.Recommendation, costs: dict[tuple, dict]) -> dict:
    per_1000 = {k: (None if v is None else v * 1000 / rec.budget) for k, v in rec.gain.items()}
    return {
        "size": rec.size, "budget": rec.budget, "name": rec.name, "allocations": rec.allocations,
        "predicted": rec.predicted, "per_ability": rec.per_ability, "gain_over_even": rec.gain,
        "gain_over_reconstruct": rec.gain_vs_reconstruct, "mix": rec.mix, "beyond_data": rec.beyond_data,
        "gain_per_1000_items": per_1000,
        # what the curves it stands on cost: the size's plain curated cells
        "cost": decisions.cost_of(costs, [k for k in costs if k[0] == rec.size and k[1] == "curated" and not k[3]]),
    }


def _paired_index(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["a"], r["b"], r["split"], r["ability"]): r for r in rows}


def _verdict(row: dict | None) -> dict | None:
    return None if row is None else {k: row[k] for k in ("gap", "lo", "hi", "p", "q", "significant", "items")}


def _mark_gaps(gaps: list[dict], paired: list[dict], costs: dict[tuple, dict]) -> list[dict]:
    """Each curated-vs-synthetic gap with its paired test (per ability; None without stored verdicts)
    and the cost of the two settings' cells."""
    index = _paired_index(paired)
    for g in gaps:
        a = decisions.setting_label(g["size"], "curated", g["volume"], "")
        b = decisions.setting_label(g["size"], "synthetic", g["volume"], "")
        g["paired"] = _verdict(index.get((a, b, "test", g["ability"])))
        g["cost"] = decisions.cost_of(costs, [(g["size"], "curated", g["volume"], ""),
                                              (g["size"], "synthetic", g["volume"], "")])
    return gaps


def _mark_mixes(check: dict, paired: list[dict], costs: dict[tuple, dict]) -> dict:
    """Mix gains over their even reference with the paired test on the mean over abilities (the
    recommender's verification when the mix is a recommended-* one) and the cells' cost."""
    index = _paired_index(paired)
    for g in check["gains"]:
        a, b = (decisions.setting_label(g["size"], "mix", 0, m) for m in (g["mix"], g["reference"]))
        g["paired"] = _verdict(index.get((a, b, "test", "mean")))
        g["cost"] = decisions.cost_of(costs, [k for k in costs if k[0] == g["size"] and k[3] in (g["mix"], g["reference"])])
        g["predicted_gain_per_1000_items"] = (None if g["predicted"]["value"] is None or not g["total"]
                                              else g["predicted"]["value"] * 1000 / g["total"])
    for m in check["mixes"]:
        m["cost"] = decisions.cost_of(costs, [k for k in costs if k[0] == m["size"] and k[3] == m["mix"]])
    return check


def _holdout(measured: growth.Measured, fits, costs: dict[tuple, dict]) -> dict:
    out = decisions.size_holdout(measured, fits)
    plain = [k for k in costs if k[1] == "curated" and not k[3]]
    out["cost_fitted"] = decisions.cost_of(costs, [k for k in plain if k[0] in out["fitted_on"]])
    out["cost_target"] = decisions.cost_of(costs, [k for k in plain if k[0] == out["target"]])
    return out


def _decisions(measured: growth.Measured, params: dict[str, float], seed: int, costs: dict[tuple, dict]) -> dict:
    out = decisions.decision_accuracy(measured, params, seed=seed)
    out["cost_smaller"] = decisions.cost_of(costs, [k for k in costs if k[0] in out["smaller"]])
    out["cost_target"] = decisions.cost_of(costs, [k for k in costs if k[0] == out["target"]])
    return out
