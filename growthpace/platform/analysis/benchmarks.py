"""lm-eval benchmark metrics against data volume: the report's benchmark section (pure numbers).

Each row is one cell's selected epoch on one benchmark metric (lm-eval's value and standard error,
as stored by evaluators/benchmark_results.py). Per metric, size and source: the mean over seeds at
each volume, with a normal interval from lm-eval's standard errors (combined over the seeds); with at
least three volumes, the same growth curve as an in-domain ability (growth.fit_growth), its gain per
doubling over the studied range with an interval from refits of draws within those standard errors,
and the same pace class (growth.classify). The fit's start prior is the smallest volume's score: a
benchmark has no random baseline the study knows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import NormalDist

import numpy as np

from growthpace.platform.analysis.growth import (classify, fit_growth, fit_growth_batch, growth_score, interval,
                                                 size_sensitivity)


def _ci(value: float, lo: float, hi: float) -> dict:
    return {"value": float(value), "lo": float(lo), "hi": float(hi)}


def benchmark_summary(rows: list[dict], settings, params: dict[str, float] | None = None) -> list[dict]:
    """``rows``: {metric, size, source, volume, seed, value (0-1), stderr (0-1 or None)}; ``settings``:
    spec.analysis (confidence, bootstrap_samples, seed, thresholds); ``params``: size -> parameters."""
    z = NormalDist().inv_cdf(0.5 + settings.confidence / 2)
    rng = np.random.default_rng(settings.seed)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["metric"], r["size"], r["source"])].append(r)
    out: dict[str, dict] = {}
    means: dict[tuple, dict[int, float]] = defaultdict(dict)  # (metric, source) -> size -> {volume: mean}
    for (metric, size, source), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        by_volume: dict[int, list[dict]] = defaultdict(list)
        for r in rs:
            by_volume[int(r["volume"])].append(r)
        points = []
        for v in sorted(by_volume):
            vals = [100 * r["value"] for r in by_volume[v]]
            ses = [100 * r["stderr"] for r in by_volume[v] if r.get("stderr") is not None]
            mean = float(np.mean(vals))
            se = math.sqrt(sum(s * s for s in ses)) / len(ses) if len(ses) == len(vals) else None
            points.append({"volume": v, "seeds": len(vals), "se": se,
                           "score": _ci(mean, mean - z * se, mean + z * se) if se is not None else
                           {"value": mean, "lo": None, "hi": None}})
            means[(metric, source)].setdefault(size, {})[v] = mean
        entry = out.setdefault(metric, {"metric": metric, "groups": []})
        entry["groups"].append({"size": size, "source": source, "points": points,
                                **_fit(points, settings, rng)})
    for (metric, source), per_size in means.items():
        _size_gain(out[metric], source, per_size, params or {}, settings)
    return list(out.values())


def _fit(points: list[dict], settings, rng) -> dict:
    vols = np.array([p["volume"] for p in points], dtype=float)
    y = np.array([p["score"]["value"] for p in points])
    if len(np.unique(vols)) < 3 or (vols <= 0).any():
        return {"class": None, "evidence": "fewer than 3 volumes: no growth curve"}
    prior = float(y[np.argmin(vols)])
    curve = fit_growth(vols, y, prior)
    doublings = math.log2(vols.max() / vols.min())
    gain = (curve(vols.max()) - curve(vols.min())) / doublings
    se = np.array([p["se"] if p["se"] is not None else 0.0 for p in points])
    draws = y[None, :] + rng.standard_normal((settings.bootstrap_samples, len(y))) * se[None, :]
    fits = fit_growth_batch(vols, draws, prior)
    gains = (growth_score(vols.max(), *fits.T) - growth_score(vols.min(), *fits.T)) / doublings
    lo, hi = interval(gains, settings.confidence)
    cls, why = classify(gain, float(lo), math.nan, math.nan, curve.volume_at(), float(vols.max()),
                        volume_threshold=settings.volume_gain, size_threshold=settings.size_gain,
                        early_doublings=settings.early_saturation_doublings, require_interval=settings.require_interval)
    return {"class": cls, "evidence": why, "range_gain_per_doubling": _ci(gain, lo, hi),
            "curve": {"start": curve.start, "ceiling": curve.ceiling, "midpoint_log2": curve.midpoint,
                      "steepness": curve.steepness, "r2": curve.r2}}


def _size_gain(entry: dict, source: str, per_size: dict[str, dict[int, float]], params: dict[str, float], settings) -> None:
    """Points per doubling of parameters at the volumes every size has (NaN with one size)."""
    sizes = [s for s in per_size if s in params]
    common = sorted(set.intersection(*(set(per_size[s]) for s in sizes))) if len(sizes) >= 2 else []
    if not common:
        return
    scores = np.array([[per_size[s][v] for v in common] for s in sizes])
    entry.setdefault("size_gain_per_doubling", {})[source] = float(size_sensitivity([params[s] for s in sizes], scores))
