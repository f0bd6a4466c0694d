"""Does the small run predict the big one? Size hold-out, decision accuracy and paired tests per ability.

Pure functions on platform/analysis/growth.py's objects (Measured rows with their paired bootstrap replicates,
CurveFits) and on per-item verdicts; no files, no plots. docs/analysis.md explains the methods.

- size_holdout: fit the growth curves of all sizes but the largest, extrapolate the curve parameters
  in log2(parameters) to the largest size, compare with its measured scores (MAE), next to the
  baseline "the second-largest size's measured score".
- decision_accuracy: DataDecide's share of setting pairs whose ranking at a smaller size is the
  ranking at the largest size.
- paired: gaps between two settings scored on the same items, tested on per-item verdicts (McNemar's
  exact test for 0/1 verdicts, else a sign-flip test), q-values by Benjamini-Hochberg.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.stats import binom, norm

from growthpace.platform.analysis import growth

HOLDOUT_TOLERANCE = 5.0  # points: an MAE interval below this (and below the baseline's) is a usable predictor
SETTING = ["source", "volume", "mix"]  # what, besides the size, makes a setting


def setting_label(size: str, source: str, volume, mix: str) -> str:
    """'1.6M/curated-640', '1.6M/mix:even-320': how the report names a setting."""
    return f"{size}/mix:{mix}" if mix else f"{size}/{source}-{int(volume)}"


def _num(x) -> float | None:
    return growth._num(x) if x is not None else None


# --------------------------------------------------------------------------------------------------
# Costs: GPU-hours (and CPU core-hours) of the cells behind a conclusion


def add_costs(*costs: dict | None) -> dict:
    """Sum cost dicts {gpu_hours, core_hours, basis}; an unknown part makes the sum unknown."""
    parts = [c for c in costs if c is not None]
    out = {"gpu_hours": 0.0, "core_hours": 0.0, "cells": 0, "basis": set()}
    for c in parts:
        for k in ("gpu_hours", "core_hours"):
            out[k] = None if out[k] is None or c.get(k) is None else out[k] + c[k]
        out["cells"] += int(c.get("cells", 1))
        out["basis"] |= set(str(c.get("basis") or "unknown").split("+"))  # a sum's basis is "a+b"
    if not parts:
        out.update(gpu_hours=None, core_hours=None)
    out["basis"] = "+".join(sorted(out["basis"])) or "unknown"
    return out


def setting_costs(selected: pl.DataFrame, cell_costs: dict[str, dict]) -> dict[tuple, dict]:
    """(size, source, volume, mix) -> the summed cost of its cells (seeds); cell_costs: cell_id -> cost."""
    cells = selected.select("cell_id", "size", "source", pl.col("volume").fill_null(0), pl.col("mix").fill_null("")).unique()
    out: dict[tuple, list] = {}
    for cell_id, *key in cells.iter_rows():
        out.setdefault(tuple(key), []).append(cell_costs.get(cell_id, {"gpu_hours": None, "core_hours": None,
                                                                       "basis": "unknown"}))
    return {k: add_costs(*v) for k, v in out.items()}


def cost_of(costs: dict[tuple, dict], keys: Iterable[tuple]) -> dict:
    return add_costs(*(costs.get(k) for k in set(keys)))


# --------------------------------------------------------------------------------------------------
# Size hold-out


def _curve_space(p: np.ndarray) -> np.ndarray:
    """[start, ceiling, midpoint, steepness] -> the space the ladder is linear in (log steepness, so it stays > 0)."""
    out = np.array(p, dtype=float, copy=True)
    out[..., 3] = np.log(out[..., 3])
    return out


def _from_curve_space(q: np.ndarray) -> np.ndarray:
    out = np.array(q, dtype=float, copy=True)
    out[..., 0:2] = np.clip(out[..., 0:2], *growth.SCORE)
    out[..., 3] = np.clip(np.exp(out[..., 3]), *growth.STEEPNESS)
    return out


def extrapolate_in_size(log_params: np.ndarray, values: np.ndarray, target: float) -> np.ndarray:
    """Least-squares line of `values` (..., S, P) on log_params (S,), read at `target` -> (..., P).

    One size: its values (a constant: nothing says how they move with size)."""
    x = np.asarray(log_params, dtype=float)
    y = np.asarray(values, dtype=float)
    if len(x) == 1:
        return y[..., 0, :]
    dx = x - x.mean()
    slope = np.einsum("s,...sp->...p", dx, y - y.mean(axis=-2, keepdims=True)) / (dx**2).sum()
    return y.mean(axis=-2) + slope * (target - x.mean())


def ladder_curve(fits: list[growth.CurveFit], target_params: float) -> tuple[np.ndarray, np.ndarray]:
    """Curve parameters at target_params from smaller sizes' fits: (point (4,), replicates (B, 4)).

    Start, ceiling, midpoint and log steepness are each linear in log2(parameters). Replicate b uses
    every size's refit b, which was fitted to the same resample of test items."""
    x = np.log2([f.params for f in fits])
    t = math.log2(target_params)
    point = extrapolate_in_size(x, _curve_space(np.stack([f.curve.params for f in fits]))[None], t)[0]
    reps = extrapolate_in_size(x, _curve_space(np.stack([f.boot for f in fits], axis=1)), t)
    return _from_curve_space(point), _from_curve_space(reps)


def ladder_scores(log_params: np.ndarray, scores: np.ndarray, target: float) -> np.ndarray:
    """The alternative ladder: at each volume the score itself linear in log2(parameters).
    scores (..., S, V) -> (..., V), held within 0-100 as a score is."""
    return np.clip(extrapolate_in_size(log_params, scores, target), *growth.SCORE)


def _mae(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.nanmean(np.abs(pred - truth), axis=-1)


def _debias(point: float, reps: np.ndarray) -> np.ndarray:
    """An absolute error's replicates carry the noise of both sides on top of the point's, so they
    sit above it; shift them by that bias (the bootstrap's own estimate), keeping them >= 0."""
    return np.maximum(reps - (np.nanmean(reps) - point), 0.0)


def _holdout_verdict(mae: float, hi: float | None, baseline: float, tolerance: float) -> str:
    if not math.isfinite(mae):
        return "n/a"
    if hi is not None and hi <= tolerance and mae <= baseline:
        return "usable"
    if mae < baseline:
        return f"better than the baseline, not within {tolerance:g} points"
    return "not usable: no better than the second-largest size"


@dataclass
class _Ladder:
    """One ability's curated test rows and curves, to predict a size's scores at the target's volumes."""

    ability: str
    rows: pl.DataFrame  # size, params, volume, score, _i (the row's index into boot)
    boot: np.ndarray
    fits: dict[tuple[str, str], growth.CurveFit]
    volumes: np.ndarray

    def at(self, size: str) -> pl.DataFrame:
        return self.rows.filter((pl.col("size") == size) & pl.col("volume").is_in(self.volumes.tolist())).sort("volume")

    def params(self, size: str) -> float:
        return float(self.rows.filter(pl.col("size") == size)["params"][0])

    def complete(self, size: str) -> bool:
        """Measured at every target volume (what the score ladder and the baseline need)."""
        return self.at(size).height == len(self.volumes)

    def predict(self, method: str, use: list[str], params: float) -> tuple[np.ndarray, np.ndarray]:
        """(point (V,), replicates (B, V)) of the score at `params` from the sizes `use`."""
        t = math.log2(params)
        if method == "curve":
            p, reps = ladder_curve([self.fits[(self.ability, s)] for s in use], params)
            return growth.growth_score(self.volumes, *p), growth.growth_score(self.volumes, *(reps.T[:, :, None]))
        x = np.log2([self.params(s) for s in use])
        rows = [self.at(s) for s in use]
        reps = np.stack([self.boot[r["_i"].to_numpy()] for r in rows])  # (S, V, B)
        return (ladder_scores(x, np.stack([r["score"].to_numpy() for r in rows]), t),
                ladder_scores(x, np.moveaxis(reps, -1, 0), t))

    def choose(self, method: str, with_fit: list[str], complete: list[str]) -> str:
        if method != "auto":
            return method
        inner = [s for s in complete if s in with_fit]
        if len(inner) >= 3:  # the evidence: which ladder predicts the second-largest from the rest
            truth = self.at(inner[-1])["score"].to_numpy()
            errs = {m: float(_mae(self.predict(m, inner[:-1], self.params(inner[-1]))[0], truth))
                    for m in ("curve", "score")}
            return min(errs, key=errs.get)
        # Without evidence, the score ladder: on synthetic ladders it erred less than extrapolated curve
        # parameters, whose midpoint and steepness are poorly pinned where a curve has not turned yet.
        return "score" if complete else "curve"


def size_holdout(measured: growth.Measured, fits: dict[tuple[str, str], growth.CurveFit], *, source: str = "curated",
                 method: str = "auto", tolerance: float = HOLDOUT_TOLERANCE) -> dict:
    """Per ability: predict the largest size's curated test scores at every volume from the smaller sizes.

    method: "curve" (curve parameters linear in log2 params), "score" (score at each volume linear in
    log2 params) or "auto": with three or more smaller sizes, the one whose own hold-out (predict the
    second-largest from the rest) errs less; else "score" where a smaller size was measured at all the
    largest size's volumes, "curve" otherwise.
    Rows: ability, mae, lo, hi (interval over the item/seed bootstrap), baseline_mae (+ its interval),
    method, verdict, per-volume predictions.
    """
    part, boot = measured.pick(source=source, split="test", mix="")
    part = part.with_row_index("_i").filter(pl.col("params").is_finite()).with_columns(pl.col("volume").cast(pl.Float64))
    sizes = part.select("size", "params").unique().sort("params")["size"].to_list()
    out = {"target": sizes[-1] if sizes else None, "fitted_on": sizes[:-1], "tolerance": tolerance, "rows": []}
    if len(sizes) < 2:
        return out
    target = sizes[-1]
    for ability in sorted(part["ability"].unique().to_list()):
        g = part.filter(pl.col("ability") == ability)
        big = g.filter(pl.col("size") == target).sort("volume")
        here = [s for s in sizes[:-1] if g.filter(pl.col("size") == s).height]
        if not big.height or not here:
            continue
        lad = _Ladder(ability, g, boot, fits, big["volume"].to_numpy())
        truth, truth_b = big["score"].to_numpy(), boot[big["_i"].to_numpy()].T  # (V,), (B, V)
        with_fit = [s for s in here if (ability, s) in fits]
        complete = [s for s in here if lad.complete(s)]
        chosen = lad.choose(method, with_fit, complete)
        use = with_fit if chosen == "curve" else complete
        if not use:
            continue
        # Both ladders' point MAE where each can be built: the reader sees what the choice changed.
        by_ladder = {m: float(_mae(lad.predict(m, u, lad.params(target))[0], truth))
                     for m, u in (("curve", with_fit), ("score", complete)) if u}
        pred, pred_b = lad.predict(chosen, use, lad.params(target))
        mae = float(_mae(pred, truth))
        ci = growth._ci(mae, _debias(mae, _mae(pred_b, truth_b)), measured.confidence)
        # Baseline: the largest of the smaller sizes measured at every target volume, as it is.
        second = complete[-1] if complete else None
        bci, base_scores = {"value": None, "lo": None, "hi": None}, np.full(len(truth), np.nan)
        if second is not None:
            at = lad.at(second)
            base_scores = at["score"].to_numpy()
            base = float(_mae(base_scores, truth))
            bci = growth._ci(base, _debias(base, _mae(boot[at["_i"].to_numpy()].T, truth_b)), measured.confidence)
        out["rows"].append({
            "ability": ability, "mae": ci["value"], "lo": ci["lo"], "hi": ci["hi"],
            "baseline_mae": bci["value"], "baseline_lo": bci["lo"], "baseline_hi": bci["hi"], "baseline_size": second,
            "method": chosen, "fitted_on": use, "target": target, "mae_by_ladder": by_ladder,
            "verdict": _holdout_verdict(mae, ci["hi"], bci["value"] if bci["value"] is not None else math.inf,
                                        tolerance),
            "volumes": [{"volume": float(v), "predicted": float(p), "measured": float(m), "baseline": _num(b)}
                        for v, p, m, b in zip(lad.volumes, pred, truth, base_scores)],
        })
    return out


# --------------------------------------------------------------------------------------------------
# Decision accuracy


# The sources a report compares when the spec names none: DoIT's two.
DOIT_PAIRS: tuple[tuple[str, str], ...] = (("curated", "synthetic"),)


def setting_pairs(settings: Iterable[tuple], source_pairs: Iterable[tuple[str, str]] = DOIT_PAIRS
                  ) -> list[tuple[str, tuple, tuple]]:
    """The comparisons a spec makes among (source, volume, mix) settings: (kind, a, b).

    Two sources at the same volume (each of ``source_pairs``, its first source as a), two volumes of the
    same source, two named mixes."""
    ordered = {frozenset(p): tuple(p) for p in source_pairs}
    s = sorted(set(settings), key=lambda t: (t[0], float(t[1] or 0), t[2]))
    pairs = []
    for i, a in enumerate(s):
        for b in s[i + 1:]:
            if a[2] or b[2]:
                if a[2] and b[2]:
                    pairs.append(("mix", a, b))
            elif a[0] != b[0] and a[1] == b[1] and frozenset((a[0], b[0])) in ordered:
                pairs.append(("source", *((a, b) if a[0] == ordered[frozenset((a[0], b[0]))][0] else (b, a))))
            elif a[0] == b[0] and a[1] != b[1]:
                pairs.append(("volume", b, a) if float(b[1]) > float(a[1]) else ("volume", a, b))
    return pairs


def _agreement(small: np.ndarray, large: np.ndarray) -> np.ndarray:
    """1 when the smaller size ranks a pair as the largest does, 0 when reversed, 0.5 on a tie at the
    smaller size; NaN when the largest size ties (no winner to predict)."""
    agree = np.where(np.sign(small) == np.sign(large), 1.0, 0.0)
    agree = np.where(small == 0, 0.5, agree)
    return np.where(large == 0, np.nan, agree)


def decision_accuracy(measured: growth.Measured, params: dict[str, float], *, seed: int = 0,
                      split: str = "test", source_pairs: Iterable[tuple[str, str]] = DOIT_PAIRS) -> dict:
    """Per ability and overall ("all"): the share of (pair, smaller size) decisions that match the
    largest size's ranking. The interval resamples both the test items and seeds (the replicates)
    and the decisions themselves (with replacement), so few pairs give a wide interval."""
    rows_all, boot = measured.pick(split=split)
    frame = rows_all.with_row_index("_i").with_columns(pl.col("volume").cast(pl.Float64))
    known = {s: p for s, p in params.items() if p is not None and math.isfinite(p)}
    sizes = sorted({s for s in frame["size"].unique().to_list() if s in known}, key=known.get)
    out = {"target": sizes[-1] if sizes else None, "smaller": sizes[:-1], "rows": []}
    if len(sizes) < 2:
        return out
    target = sizes[-1]
    rng = np.random.default_rng(seed)
    index = {(r["size"], r["ability"], (r["source"], r["volume"], r["mix"])): r["_i"] for r in frame.iter_rows(named=True)}
    inst: dict[str, list[tuple]] = {}  # ability -> (small a, small b, large a, large b, kind) row indices
    for ability in sorted(frame["ability"].unique().to_list()):
        settings = [k[2] for k in index if k[0] == target and k[1] == ability]
        for kind, a, b in setting_pairs(settings, source_pairs):
            for size in sizes[:-1]:
                ia, ib = index.get((size, ability, a)), index.get((size, ability, b))
                if ia is not None and ib is not None:
                    inst.setdefault(ability, []).append(
                        (ia, ib, index[(target, ability, a)], index[(target, ability, b)], kind))
    score = frame["score"].to_numpy()

    def row(name: str, ix: list[tuple]) -> dict:
        a_s, b_s, a_l, b_l = (np.asarray(c, dtype=int) for c in list(zip(*ix))[:4])
        kind = np.asarray([t[4] for t in ix])
        point = _agreement(score[a_s] - score[b_s], score[a_l] - score[b_l])
        reps = _agreement(boot[a_s] - boot[b_s], boot[a_l] - boot[b_l])  # (decisions, B)
        draw = rng.integers(0, len(ix), size=(reps.shape[1], len(ix)))
        with warnings.catch_warnings():  # a replicate whose draws all tie at the largest size is NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            per_rep = np.nanmean(reps[draw, np.arange(reps.shape[1])[:, None]], axis=1)
            value = float(np.nanmean(point))
            by_kind = {k: _num(np.nanmean(point[kind == k])) for k in sorted(set(kind.tolist()))}
        lo, hi = growth.interval(per_rep, measured.confidence)
        return {"ability": name, "agree": _num(value), "pairs": int(np.isfinite(point).sum()),
                "lo": _num(lo), "hi": _num(hi), "by_kind": by_kind,
                "kinds": {k: int((kind == k).sum()) for k in by_kind}}

    out["rows"] = [row(ability, ix) for ability, ix in inst.items()]
    pooled = [t for ix in inst.values() for t in ix]
    if pooled:
        out["rows"].append(row("all", pooled))
    return out


# --------------------------------------------------------------------------------------------------
# Paired comparisons on per-item verdicts


@dataclass(frozen=True)
class PairedResult:
    gap: float  # points: mean over groups of (a - b) item means
    lo: float
    hi: float
    p: float
    items: int
    test: str  # "mcnemar" (exact) or "sign-flip" (its normal approximation)


def mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar test of paired 0/1 verdicts: of the n discordant items, is the split
    between "only a right" and "only b right" a fair coin's?"""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    n = only_a + only_b
    return 1.0 if n == 0 else min(1.0, 2.0 * float(binom.cdf(min(only_a, only_b), n, 0.5)))


def sign_flip_p(diffs: list[np.ndarray]) -> float:
    """Two-sided sign-flip randomization test of the mean over groups of mean differences, by its normal
    approximation: under "a and b are equally good on every item" each difference's sign is a fair
    coin, so the statistic has mean 0 and variance sum_g sum_i d_gi^2 / n_g^2 / G^2. Analytic, so p has
    no Monte Carlo floor (Benjamini-Hochberg over hundreds of tests needs p far below 1/draws)."""
    stat = np.mean([d.mean() for d in diffs])
    var = sum(float((d**2).sum()) / len(d) ** 2 for d in diffs) / len(diffs) ** 2
    return 1.0 if var <= 0 else float(min(1.0, 2.0 * norm.sf(abs(stat) / math.sqrt(var))))


def paired_test(groups: list[tuple[np.ndarray, np.ndarray]], *, samples: int = 1000, confidence: float = 0.95,
                rng=None) -> PairedResult:
    """Gap a - b (points) over one or more groups of items, each group's items scored for both.

    The statistic is the mean over groups of the mean per-item difference (one group: the plain
    paired gap). Interval: paired bootstrap, resampling items within each group. p: McNemar's exact
    test for one group of 0/1 verdicts (one seed), else the sign-flip test (seed-averaged verdicts,
    or the mean over abilities).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    pairs = [(np.asarray(a, dtype=float), np.asarray(b, dtype=float)) for a, b in groups if len(a)]
    if not pairs:
        return PairedResult(math.nan, math.nan, math.nan, math.nan, 0, "none")
    diffs = [100.0 * (a - b) for a, b in pairs]
    gap = float(np.mean([d.mean() for d in diffs]))
    boots = np.zeros(samples)
    for d in diffs:
        n = len(d)
        boots += rng.multinomial(n, np.full(n, 1.0 / n), size=samples) @ d / n
    lo, hi = growth.interval(boots / len(diffs), confidence)
    binary = len(pairs) == 1 and all(np.isin(x, (0.0, 1.0)).all() for x in pairs[0])
    p, test = (mcnemar_p(*pairs[0]), "mcnemar") if binary else (sign_flip_p(diffs), "sign-flip")
    return PairedResult(gap, float(lo), float(hi), p, int(sum(len(d) for d in diffs)), test)


def benjamini_hochberg(p: Iterable[float]) -> np.ndarray:
    """q-values (BH step-up adjusted p-values) in the input order; NaN stays NaN and is not counted."""
    p = np.asarray(list(p), dtype=float)
    q = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if not len(ok):
        return q
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    ranked = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return q


def item_means(verdicts: pl.DataFrame, selected: pl.DataFrame) -> pl.DataFrame:
    """Per-item verdicts -> one row per (size, source, volume, mix, split, ability, idx): the verdict
    averaged over seeds (a setting's cells share the eval items)."""
    meta = selected.select("cell_id", "size", "source", pl.col("volume").fill_null(0).cast(pl.Float64),
                           pl.col("mix").fill_null("")).unique()
    return (
        verdicts.select("cell_id", "split", "ability", pl.col("idx").cast(pl.String), pl.col("correct").cast(pl.Float64))
        .join(meta, on="cell_id")
        .group_by(["size", *SETTING, "split", "ability", "idx"]).agg(pl.col("correct").mean())
    )


def comparisons(items: pl.DataFrame, source_pairs: Iterable[tuple[str, str]] = DOIT_PAIRS) -> list[dict]:
    """What the report tests: per size, each pair of sources at each volume and every pair of named
    mixes ("recommendation" when one is a recommended-* mix and the other an even-* mix)."""
    out = []
    for size in sorted(items["size"].unique().to_list()):
        settings = items.filter(pl.col("size") == size).select(SETTING).unique().rows()
        for kind, a, b in setting_pairs(settings, source_pairs):
            if kind == "volume":
                continue  # a volume's rise is the growth curve, reported with its own intervals
            if kind == "mix":
                if b[2].startswith("recommended") or (a[2].startswith("even") and not b[2].startswith("even")):
                    a, b = b, a  # the mix under test first, the even reference second
                if a[2].startswith("recommended") and b[2].startswith("even"):
                    kind = "recommendation"
            out.append({"kind": kind, "size": size, "a": a, "b": b})
    return out


def paired(items: pl.DataFrame, *, samples: int = 1000, confidence: float = 0.95, seed: int = 0,
           costs: dict[tuple, dict] | None = None, source_pairs: Iterable[tuple[str, str]] = DOIT_PAIRS) -> dict:
    """Every comparison, per split and ability, plus the mean over in-domain abilities for mixes and
    recommendation checks; q-values by Benjamini-Hochberg over all rows (one family: every mark on
    the page); significant = q <= 1 - confidence."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in comparisons(items, source_pairs):
        size, a, b = c["size"], c["a"], c["b"]

        def side(key):
            return items.filter((pl.col("size") == size) & (pl.col("source") == key[0])
                                & (pl.col("volume") == float(key[1] or 0)) & (pl.col("mix") == key[2]))

        both = side(a).join(side(b).select("split", "ability", "idx", pl.col("correct").alias("b")),
                            on=["split", "ability", "idx"])
        groups = {}
        for (split, ability), g in both.sort(["split", "ability", "idx"]).group_by(["split", "ability"], maintain_order=True):
            groups[(split, ability)] = (g["correct"].to_numpy(), g["b"].to_numpy())
        tests = [((split, ability), [ab]) for (split, ability), ab in groups.items()]
        if c["kind"] != "source":
            test_groups = [ab for (split, _), ab in groups.items() if split == "test"]
            if len(test_groups) > 1:
                tests.append((("test", "mean"), test_groups))
        cost = cost_of(costs or {}, [(size, *a), (size, *b)]) if costs is not None else None
        for (split, ability), gs in tests:
            r = paired_test(gs, samples=samples, confidence=confidence, rng=rng)
            rows.append({"kind": c["kind"], "size": size, "a": setting_label(size, *a), "b": setting_label(size, *b),
                         "ability": ability, "split": split, "gap": _num(r.gap), "lo": _num(r.lo), "hi": _num(r.hi),
                         "p": _num(r.p), "test": r.test, "items": r.items, "cost": cost})
    q = benjamini_hochberg([r["p"] if r["p"] is not None else math.nan for r in rows])
    alpha = 1 - confidence
    for r, qi in zip(rows, q):
        r["q"] = _num(qi)
        r["significant"] = bool(np.isfinite(qi) and qi <= alpha)
    return {"method": "paired bootstrap interval; p: exact McNemar (0/1 verdicts) or sign-flip test (normal "
                      "approximation); Benjamini-Hochberg q over all rows", "alpha": alpha, "rows": rows}
