"""Selected scores -> the report's summary: every number the page shows, as one JSON-ready dict.

Pure: frames and dicts in, a dict out; no files, no plots, no MLflow. The numbers themselves are
platform/analysis/growth.py (curves, pace, the recommender); this module decides which of them the report
shows and in what shape. jobs/report.py loads the inputs and writes the outputs.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from growthpace.platform.analysis import decisions
from growthpace.platform.analysis import growth
from growthpace.platform.analysis import transfer
from growthpace.platform.core.abilities import ABILITIES, OOD_SUBJECTS
from growthpace.platform.core.redaction import redact



def largest_size(params: dict[str, float], sizes: list[str]) -> str:
    known = [s for s in sizes if math.isfinite(params.get(s, math.nan))]
    return max(known, key=lambda s: params[s]) if known else sizes[-1]


def analyse(selected: pl.DataFrame, settings, *, params: dict[str, float], verdicts: pl.DataFrame | None = None,
            mixes: dict[str, dict[str, int]] | None = None, available: dict[str, int] | None = None,
            budget: int | None = None, size: str | None = None, name: str | None = None,
            cell_costs: dict[str, dict] | None = None, base: pl.DataFrame | None = None,
            size_from: str = "field 'analysis.recommend_size'", abilities: tuple[str, ...] = ABILITIES,
            primary: str = "curated", source_pairs: list[tuple[str, str]] | tuple = decisions.DOIT_PAIRS,
            ood_sets: tuple[str, ...] = OOD_SUBJECTS):
    """Everything the report shows, as (summary, measured, fits, recommendation).

    base: the untuned bases' rows, shaped as ``selected``'s (source "base", volume 0; their verdicts in
    ``verdicts``): bootstrapped with the cells, so the OOD change over the base is paired on the same
    items, then set apart: only the transfer section (platform/analysis/transfer.py) reads them.
    cell_costs: cell_id -> {gpu_hours, core_hours, basis} (jobs/report.py: measured or planned); every
    comparison and the recommendation carry the cost of the cells behind them.
    abilities, primary, source_pairs: the spec's declaration (DoIT's by default): the abilities in their
    order, the source whose curves are fitted, the pairs of sources compared, the OOD sets in order."""
    sizes = list(dict.fromkeys(selected.sort("size")["size"].to_list()))
    # size_from: what the user set when ``size`` is given (recommend's --size), for the error below
    size_from = size_from if size else "field 'analysis.recommend_size'"
    params = {s: params.get(s, growth.params_from_label(s) or math.nan) for s in sizes}
    # The bases' rows draw no bootstrap numbers of their own (their (split, ability) groups and seed are
    # the cells'), so every other number is the same with or without them.
    with_base = selected if base is None or not base.height else pl.concat([selected, base], how="diagonal_relaxed")
    measured_all = growth.measure(with_base, verdicts, samples=settings.bootstrap_samples, seed=settings.seed,
                                  confidence=settings.confidence, params=params)
    measured = transfer.without_base(measured_all)
    fits = growth.fit_curves(measured, primary)
    curves, paces = growth.pace_table(fits, settings, settings.confidence)
    extrap = growth.extrapolation_table(measured, settings.extrapolate_from, primary)
    errs = [abs(r["error"]) for r in extrap if r["error"] is not None]
    costs = decisions.setting_costs(selected, cell_costs or {})

    rec = None
    curated = measured.rows.filter((pl.col("source") == primary) & (pl.col("mix") == ""))
    if fits:
        fitted_sizes = sorted({s for _, s in fits}, key=sizes.index)
        size = size or settings.recommend_size or largest_size(params, fitted_sizes)
        if size not in fitted_sizes:
            from growthpace.platform.core.spec import SpecError

            raise SpecError(f"{size_from}: no fitted curves for size {size!r}; sizes: {fitted_sizes}")
        # Default: half the largest volume, so an ability can get twice its even share and stay
        # within volumes that were measured (at the largest volume any shift upward is extrapolation).
        budget = budget or settings.budget or max(1, int(curated["volume"].max()) // 2)
        rec = growth.recommendation(fits, size, budget, name=name, floor=settings.floor, available=available,
                                    per_ability=len(abilities), confidence=settings.confidence,
                                    trust_doublings=settings.trust_doublings, min_gain=settings.volume_gain)

    paired = {"method": None, "alpha": 1 - settings.confidence, "rows": []}
    if verdicts is not None and verdicts.height:
        paired = decisions.paired(decisions.item_means(verdicts, selected), samples=settings.bootstrap_samples,
                                  confidence=settings.confidence, seed=settings.seed, costs=costs,
                                  source_pairs=source_pairs)
    method = measured.rows.group_by("bootstrap").len()
    summary = {
        "settings": redact(settings.model_dump(mode="json")),
        # what the study declared: the abilities in order, the fitted source, the compared pairs
        "declaration": {"abilities": list(abilities), "primary": primary, "pairs": [list(p) for p in source_pairs],
                        "ood": list(ood_sets)},
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
        "abilities": paces,
        "source_gap": _mark_gaps([g for a, b in source_pairs for g in growth.source_gap(measured, a, b)],
                                 paired["rows"], costs),
        "transfer": growth.transfer(measured),
        "ood_change": transfer.ood_change(measured_all, primary),
        "extrapolation": {"fraction": settings.extrapolate_from, "rows": extrap,
                          "mean_abs_error": growth._num(np.mean(errs)) if errs else None},
        "recommendation": None if rec is None else _recommendation(rec, costs, primary),
        "mix_check": _mark_mixes(growth.mix_check(measured, fits, mixes or {}, len(abilities), settings.trust_doublings),
                                 paired["rows"], costs),
        "size_holdout": _holdout(measured, fits, costs, primary),
        "decision_accuracy": _decisions(measured, params, settings.seed, costs, source_pairs),
        "paired": paired,
    }
    summary["headline"] = findings(summary)
    return summary, measured, fits, rec


# --------------------------------------------------------------------------------------------------
# The headline: what the report opens with, from the summary alone


def _excludes(ci: dict, level: float) -> str | None:
    """'above' / 'below' when the whole interval is on one side of level, else None (an open end never excludes)."""
    if ci.get("lo") is not None and ci["lo"] > level:
        return "above"
    if ci.get("hi") is not None and ci["hi"] < level:
        return "below"
    return None


def _study(summary: dict) -> dict:
    """The summary's declaration; a summary from before declarations is DoIT's."""
    return summary.get("declaration") or {"abilities": list(ABILITIES), "primary": "curated",
                                     "pairs": [list(p) for p in decisions.DOIT_PAIRS], "ood": list(OOD_SUBJECTS)}


def _in_order(abilities: list[str]):
    """Sort key of rows by the declared order of their abilities."""
    at = {a: i for i, a in enumerate(abilities)}
    return lambda row: (at.get(row["ability"], len(at)), row["ability"])


def _ci_of(row: dict, key: str | None = None) -> dict:
    if key is not None:
        return dict(row[key])
    return {"value": row["score"], "lo": row["lo"], "hi": row["hi"]}


def findings(summary: dict) -> dict:
    """The numbers behind the report's opening sentences (page.headline_sentences words them).

    The cell they are read at: the largest size (by parameter count) and its largest curated volume.
    Four findings, each measured whichever way it comes out: how many abilities beat their random
    baseline there; the pace per ability (the fitted gain per doubling of curated data over the studied
    range, mean over sizes: the number the classes use); curated minus synthetic at that size's largest
    volume with both sources; OOD against its random baseline at the cell. An interval "excludes" a level
    when its whole 95% (settings.confidence) range is on one side of it.
    """
    st = summary["settings"]
    study = _study(summary)
    order = _in_order(study["abilities"])
    out: dict = {"confidence": summary["bootstrap"]["confidence"], "size": None, "volume": None,
                 "source": study["primary"]}
    curated = [r for r in summary["measured"]
               if r["source"] == study["primary"] and r["mix"] == "" and r["split"] == "test"]
    if curated:
        sizes = list(dict.fromkeys(r["size"] for r in curated))
        known = {s: (math.nan if summary["params"].get(s) is None else summary["params"][s]) for s in sizes}
        size = largest_size(known, sorted(sizes))
        volume = max(r["volume"] for r in curated if r["size"] == size)
        out["size"], out["volume"] = size, volume
        cell = [r for r in curated if r["size"] == size and r["volume"] == volume]
        rows = [{"ability": r["ability"], "score": _ci_of(r), "baseline": r["baseline"],
                 "side": _excludes(_ci_of(r), r["baseline"])} for r in sorted(cell, key=order)]
        out["above_baseline"] = {"count": sum(r["side"] == "above" for r in rows), "of": len(rows), "rows": rows}
    else:
        out["above_baseline"] = {"count": 0, "of": 0, "rows": []}
    out["pace"] = _pace_findings(summary["abilities"], st["volume_gain"])
    out["sources"] = _source_findings(summary["source_gap"], out["size"], study["pairs"][0] if study["pairs"] else None,
                                      order)
    out["transfer"] = _transfer_findings(summary["transfer"], out["size"], out["volume"], study["primary"])
    out["ood_change"] = _ood_change_findings(summary.get("ood_change") or {"rows": [], "r": None}, out["size"])
    return out


def _pace_findings(abilities: list[dict], threshold: float) -> dict:
    rows = [{"ability": a["ability"], "class": a["class"], "gain": _ci_of(a, "range_gain_per_doubling")}
            for a in abilities]
    rows.sort(key=lambda r: -math.inf if r["gain"]["value"] is None else r["gain"]["value"], reverse=True)
    fast = [r["ability"] for r in rows if r["gain"]["lo"] is not None and r["gain"]["lo"] >= threshold]
    classes: dict[str, int] = {}
    for r in rows:
        classes[r["class"]] = classes.get(r["class"], 0) + 1
    # Two paces told apart: the highest lower end above the lowest upper end (of another ability).
    with_lo = [r for r in rows if r["gain"]["lo"] is not None]
    with_hi = [r for r in rows if r["gain"]["hi"] is not None]
    pair = None
    if with_lo and with_hi:
        faster = max(with_lo, key=lambda r: r["gain"]["lo"])
        slower = min((r for r in with_hi if r is not faster), key=lambda r: r["gain"]["hi"], default=None)
        if slower is not None:
            pair = {"faster": faster["ability"], "slower": slower["ability"],
                    "separated": faster["gain"]["lo"] > slower["gain"]["hi"]}
    return {"measure": "range_gain_per_doubling", "threshold": threshold, "rows": rows,
            "fastest": fast, "at_least_threshold": len(fast),
            "flat": [r["ability"] for r in rows if r["class"] == growth.FLAT],
            "classes": classes, "class_count": len(classes),
            "widest_pair": pair, "non_overlapping": bool(pair and pair["separated"])}


def _source_findings(gaps: list[dict], size: str | None, pair: list[str] | None, order) -> dict:
    """The headline's source comparison: the first compared pair (a minus b) at the size's largest
    volume with both."""
    a, b = pair or (None, None)
    at_size = [g for g in gaps if g["size"] == size and g.get("a", "curated") == a and g.get("b", "synthetic") == b]
    if not at_size:
        return {"size": size, "a": a, "b": b, "volume": None, "mean": None, "rows": [], "a_better": 0, "b_better": 0,
                "of": 0}
    volume = max(g["volume"] for g in at_size)
    here = [g for g in at_size if g["volume"] == volume]
    mean = next((g for g in here if g["ability"] == "mean"), None)
    rows = [{"ability": g["ability"], "gap": dict(g["gap"]), "side": _excludes(g["gap"], 0.0)}
            for g in sorted(here, key=order) if g["ability"] != "mean"]
    return {"size": size, "a": a, "b": b, "volume": volume,
            "mean": None if mean is None else {"gap": dict(mean["gap"]), "side": _excludes(mean["gap"], 0.0)},
            "rows": rows, "a_better": sum(r["side"] == "above" for r in rows),
            "b_better": sum(r["side"] == "below" for r in rows), "of": len(rows)}


def _transfer_findings(transfer: dict, size: str | None, volume, primary: str = "curated") -> dict:
    row = next((r for r in transfer["rows"] if r["size"] == size and r["source"] == primary
                and r["volume"] == volume and r["mix"] == ""), None)
    if row is None:
        return {"size": size, "volume": volume, "ood": None, "baseline": None, "side": None, "r": transfer.get("r")}
    return {"size": size, "volume": volume, "ood": dict(row["ood"]), "baseline": row["ood_baseline"],
            "in_domain": dict(row["in_domain"]), "side": _excludes(row["ood"], row["ood_baseline"]),
            "r": transfer.get("r")}


def _ood_change_findings(change: dict, size: str | None) -> dict:
    """Finding (iii) as the study means it, at the headline size: the OOD mean at the largest curated
    volume against the smallest and against the untuned base, and the OOD vs in-domain r across the
    curated settings, each with the side of 0 its interval is on ("above" / "below" / None). ``shown``:
    every one of the three rises with its interval excluding 0 (the finding's own numbers agree with it);
    ``falls``: OOD at the largest volume is below the smallest volume's or the base's (the point; a
    negative difference is never worded as transfer), ``falls_excluding_0``: of those two differences,
    how many have their interval below 0."""
    row = next((r for r in change["rows"] if r["size"] == size), None)
    r = change.get("r")
    r_side = None if not r else _excludes(r, 0.0)
    if row is None:
        return {"size": size, "row": None, "r": r, "r_side": r_side, "change_side": None, "base_side": None,
                "shown": False, "falls": False, "falls_excluding_0": 0}
    change_side = None if row["change"] is None else _excludes(row["change"], 0.0)
    base_side = None if row["over_base"] is None else _excludes(row["over_base"], 0.0)
    diffs = [d for d in (row["change"], row["over_base"]) if d is not None and d["value"] is not None]
    return {"size": size, "row": row, "r": r, "r_side": r_side, "change_side": change_side, "base_side": base_side,
            "shown": change_side == "above" and base_side == "above" and r_side == "above",
            "falls": any(d["value"] < 0 for d in diffs),
            "falls_excluding_0": [change_side, base_side].count("below")}


def _recommendation(rec: growth.Recommendation, costs: dict[tuple, dict], primary: str = "curated") -> dict:
    per_1000 = {k: (None if v is None else v * 1000 / rec.budget) for k, v in rec.gain.items()}
    return {
        "size": rec.size, "budget": rec.budget, "name": rec.name, "allocations": rec.allocations,
        "predicted": rec.predicted, "per_ability": rec.per_ability, "gain_over_even": rec.gain,
        "gain_over_reconstruct": rec.gain_vs_reconstruct, "mix": rec.mix, "beyond_data": rec.beyond_data,
        "gain_per_1000_items": per_1000,
        # what the curves it stands on cost: the size's plain cells of the fitted source
        "cost": decisions.cost_of(costs, [k for k in costs if k[0] == rec.size and k[1] == primary and not k[3]]),
    }


def _paired_index(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["a"], r["b"], r["split"], r["ability"]): r for r in rows}


def _verdict(row: dict | None) -> dict | None:
    return None if row is None else {k: row[k] for k in ("gap", "lo", "hi", "p", "q", "significant", "items")}


def _mark_gaps(gaps: list[dict], paired: list[dict], costs: dict[tuple, dict]) -> list[dict]:
    """Each source-vs-source gap with its paired test (per ability; None without stored verdicts)
    and the cost of the two settings' cells."""
    index = _paired_index(paired)
    for g in gaps:
        a = decisions.setting_label(g["size"], g["a"], g["volume"], "")
        b = decisions.setting_label(g["size"], g["b"], g["volume"], "")
        g["paired"] = _verdict(index.get((a, b, "test", g["ability"])))
        g["cost"] = decisions.cost_of(costs, [(g["size"], g["a"], g["volume"], ""),
                                              (g["size"], g["b"], g["volume"], "")])
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


def _holdout(measured: growth.Measured, fits, costs: dict[tuple, dict], primary: str = "curated") -> dict:
    out = decisions.size_holdout(measured, fits, source=primary)
    plain = [k for k in costs if k[1] == primary and not k[3]]
    out["cost_fitted"] = decisions.cost_of(costs, [k for k in plain if k[0] in out["fitted_on"]])
    out["cost_target"] = decisions.cost_of(costs, [k for k in plain if k[0] == out["target"]])
    return out


def _decisions(measured: growth.Measured, params: dict[str, float], seed: int, costs: dict[tuple, dict],
               source_pairs=decisions.DOIT_PAIRS) -> dict:
    out = decisions.decision_accuracy(measured, params, seed=seed, source_pairs=source_pairs)
    out["cost_smaller"] = decisions.cost_of(costs, [k for k in costs if k[0] in out["smaller"]])
    out["cost_target"] = decisions.cost_of(costs, [k for k in costs if k[0] == out["target"]])
    return out


# --------------------------------------------------------------------------------------------------
# Formulations: which one every score used, and the secondary ones beside the primary


def formulations(scores: pl.DataFrame, selected: pl.DataFrame, listed: list[str] | None = None,
                 abilities: tuple[str, ...] = ABILITIES) -> dict:
    """What the report says of formulations (platform/core/formulation.py): the primary (every other number
    of the report is its), a sentence naming it, and one row per (size, source, volume, mix, split,
    ability), seeds averaged, with each secondary formulation's score at the checkpoint the primary
    selected (selection reads the primary's valid scores only). ``listed``: the spec's
    evaluation.formulation; without it, read from the stored split names (primary: letter unless
    letter is a secondary)."""
    from growthpace.platform.core.formulation import describe, parse_split

    parsed = {s: parse_split(s) for s in (scores["split"].unique().to_list() if scores.height else [])}
    stored = sorted({f for _, f in parsed.values() if f})
    if listed is None:
        listed = ["option" if "letter" in stored else "letter", *stored]
    primary, secondary = listed[0], [f for f in listed[1:] if f in stored]
    out = {"primary": primary, "secondary": list(listed[1:]), "sentence": describe(listed), "rows": []}
    if not secondary or selected.is_empty():
        return out
    setting, where = ["size", "source", "volume", "mix"], ["cell_id", "split", "ability"]
    columns = ["cell_id", *setting, "split", "ability", "score", "expected", "formulation"]
    frames = [selected.with_columns(formulation=pl.lit(primary)).select(columns)]
    for f in secondary:
        names = {s: b for s, (b, g) in parsed.items() if g == f}
        frames.append(scores.filter(pl.col("split").is_in(list(names)))
                      .with_columns(pl.col("split").replace_strict(names, return_dtype=pl.String), formulation=pl.lit(f))
                      .join(selected.select(*where, "selected_epoch"), on=where)
                      .filter(pl.col("epoch") == pl.col("selected_epoch")).select(columns))
    keys = [*setting, "split", "ability"]
    long = (pl.concat(frames, how="vertical_relaxed").group_by([*keys, "formulation"])
            .agg(pl.col("score").mean(), pl.col("expected").mean(), seeds=pl.col("cell_id").n_unique()))
    rows: dict[tuple, dict] = {}
    for r in long.iter_rows(named=True):
        row = rows.setdefault(tuple(r[k] for k in keys), {**{k: r[k] for k in keys}, "seeds": 0, "scores": {},
                                                        "baselines": {}})
        row["scores"][r["formulation"]] = growth._num(r["score"])
        row["baselines"][r["formulation"]] = growth._num(r["expected"])
        row["seeds"] = max(row["seeds"], r["seeds"])
    in_order = {a: i for i, a in enumerate(abilities)}
    out["rows"] = sorted(rows.values(), key=lambda r: (r["size"], r["source"], r["volume"], r["mix"], r["split"],
                                                       in_order.get(r["ability"], len(in_order)), r["ability"]))
    return out
