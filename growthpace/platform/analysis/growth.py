"""Growth pace: fitted curves of score against log data volume, with bootstrap intervals.

Pure functions on numbers and polars frames: no files, no MLflow (jobs/report.py loads and writes).
docs/analysis.md explains the model, the numbers and the classes for readers of the report.

The curve, per ability and model size (v = training items, x = log2 v):

    score(v) = a + (c - a) * sigmoid(k * (x - m))

a is where the score starts with (almost) no instruction data: the random baseline b, unless the
data say otherwise (a weak prior holds a at b; tiny models that answer below chance at small volumes
move it). c is the ceiling the score approaches with unlimited data, m the log2 volume at which half of
the way from a to c is covered, k the steepness per doubling. A logistic in log volume covers the
shapes the study saw: steady growth (m beyond the grid), early saturation (m inside the grid, large
k), flat (c close to a, or the whole grid past the bend), and a late inflection (synthetic data).

From a curve: the gain per doubling at the start (score(2 v0) - score(v0), v0 the smallest volume
studied) and averaged over the studied range, the saturation volume (90% of the way from a to c), the
ceiling c. Across sizes: the size sensitivity, the score change per doubling of parameters at fixed
volume.

Uncertainty comes from bootstrap replicates of every measured score (over test items, and over seeds
when there are several); every curve is refitted on each replicate, and every derived number is
computed per replicate, so its interval is the percentile interval of those values.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import polars as pl
from scipy.optimize import least_squares
from scipy.special import expit, logit

from growthpace.platform.core.allocation import AllocationError, even_counts

# Bounds of the fit. The midpoint may lie a few doublings outside the studied volumes (a curve that
# bends before or after the grid); the steepness spans "10-90% over 18 doublings" to "a step".
MARGIN_DOUBLINGS = 3.0
STEEPNESS = (0.25, 8.0)
SCORE = (0.0, 100.0)
_K_GRID = np.geomspace(*STEEPNESS, 24)
_M_STEP = 0.125  # doublings: well below the width of any interval a 40-item test set allows
# Weak priors, as penalties in points^2 per point^2 added to the squared error:
# - START_PRIOR holds the start a at the random baseline b like a tenth of one measurement: where the
#   data reach down to the start they decide it, where they do not (every point past the bend) a = b.
# - RIDGE on the rise c - a: when the data cannot tell a small ceiling reached soon from a large one
#   reached just past the last volume (0, 0, 0, 10 fits both exactly), the fit takes the small one
#   instead of an arbitrary jump to 100. It is kept tiny so that it only breaks such ties: on a curve
#   the data pin down, even without noise, it moves nothing.
START_PRIOR = 0.1
RIDGE = 1e-5

SATURATION = 0.9  # the saturation volume reaches this fraction of the way from start to ceiling

# The study's hand-made reconstruct mix at its 10,000-item budget: ethics 64, role-play 64, creative
# writing 1,000, the rest even. Scaled to another budget it is the reference the recommender must beat.
RECONSTRUCT = {"ethics": 64 / 10000, "role_play": 64 / 10000, "creative_writing": 1000 / 10000}

# The pace classes, named once (pace_class assigns them; the summary and the report read them).
VOLUME_AND_SIZE, VOLUME_ONLY, SATURATES_EARLY, SIZE_ONLY, FLAT = (
    "volume and size", "volume only", "saturates early", "size only", "flat")
CLASSES = (VOLUME_AND_SIZE, VOLUME_ONLY, SATURATES_EARLY, SIZE_ONLY, FLAT)
_POSITIVE = 1e-3  # an interval's lower end "above zero" must clear fit round-off (points)


# --------------------------------------------------------------------------------------------------
# The curve and its fit


def growth_score(volume, start, ceiling, midpoint, steepness):
    """score(v) = a + (c - a) * sigmoid(k * (log2 v - m)); broadcasts (parameters as (B, 1) columns)."""
    with np.errstate(divide="ignore"):  # volume 0 -> log2 = -inf -> the start, as it should
        x = np.log2(np.asarray(volume, dtype=float))
    return start + (ceiling - start) * expit(steepness * (x - midpoint))


def saturation_volume(midpoint, steepness, fraction: float = SATURATION):
    """Volume where the curve has covered `fraction` of the way from start to ceiling."""
    return np.exp2(np.asarray(midpoint) + logit(fraction) / np.asarray(steepness))


@dataclass(frozen=True)
class GrowthCurve:
    """One fitted growth curve; calling it gives the score (%) at a volume."""

    baseline: float  # the random baseline b (the prior for the start)
    start: float  # a
    ceiling: float  # c
    midpoint: float  # m: log2 volume at half the gain
    steepness: float  # k: per doubling
    rmse: float = math.nan
    r2: float = math.nan
    points: int = 0

    def __call__(self, volume):
        return growth_score(volume, self.start, self.ceiling, self.midpoint, self.steepness)

    def gain_per_doubling(self, volume: float) -> float:
        return float(self(2.0 * volume) - self(volume))

    def volume_at(self, fraction: float = SATURATION) -> float:
        return float(saturation_volume(self.midpoint, self.steepness, fraction))

    @property
    def params(self) -> np.ndarray:
        return np.array([self.start, self.ceiling, self.midpoint, self.steepness])


def _grid(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ms = np.arange(x.min() - MARGIN_DOUBLINGS, x.max() + MARGIN_DOUBLINGS + 1e-9, _M_STEP)
    m, k = np.meshgrid(ms, _K_GRID, indexing="ij")
    return m.ravel(), k.ravel()


def fit_growth_batch(volumes, scores, baseline: float) -> np.ndarray:
    """Fit many score vectors on the same volumes at once: (B, n) scores -> (B, 4) [a, c, m, k].

    For fixed (m, k) the curve a * (1 - s) + c * s is linear in (a, c), so the penalised least
    squares for (a, c) is a 2x2 solve; a grid over (m, k) then finds the global optimum without local
    minima. This is what makes hundreds of bootstrap refits per curve cheap, and it seeds the polished
    point fit.
    """
    x = np.log2(np.asarray(volumes, dtype=float))
    y = np.atleast_2d(np.asarray(scores, dtype=float))
    m, k = _grid(x)
    w = expit(k[:, None] * (x[None, :] - m[:, None]))  # (G, n): weight of the ceiling at each point
    u = 1.0 - w  # weight of the start
    suu, suw, sww = (u * u).sum(1), (u * w).sum(1), (w * w).sum(1)  # (G,)
    # einsum, not BLAS: with a handful of points the threaded matmul only adds contention.
    yu, yw = np.einsum("bn,gn->bg", y, u), np.einsum("bn,gn->bg", y, w)  # (B, G)
    # Normal equations of |y - a u - c w|^2 + START_PRIOR (a - b)^2 + RIDGE (c - a)^2.
    p, q, r = suu + START_PRIOR + RIDGE, suw - RIDGE, sww + RIDGE
    det = p * r - q * q
    a = np.clip((r * (yu + START_PRIOR * baseline) - q * yw) / det, *SCORE)
    c = np.clip((p * yw - q * (yu + START_PRIOR * baseline)) / det, *SCORE)
    loss = ((y * y).sum(1)[:, None] - 2 * a * yu - 2 * c * yw + a * a * suu + 2 * a * c * suw + c * c * sww
            + START_PRIOR * (a - baseline) ** 2 + RIDGE * (c - a) ** 2)
    best = np.argmin(loss, axis=1)
    rows = np.arange(y.shape[0])
    return np.column_stack([a[rows, best], c[rows, best], m[best], k[best]])


def fit_growth(volumes, scores, baseline: float, *, polish: bool = True) -> GrowthCurve:
    """Penalised least-squares fit of the growth curve: the grid search, then scipy's least_squares
    from its best point."""
    v = np.asarray(volumes, dtype=float)
    y = np.asarray(scores, dtype=float)
    if len(np.unique(v)) < 3:
        raise ValueError(f"a growth curve needs at least 3 distinct volumes, got {sorted(set(v.tolist()))}")
    params = fit_growth_batch(v, y, baseline)[0]

    def residuals(p):
        a, c = p[0], p[1]
        return np.r_[growth_score(v, *p) - y, math.sqrt(START_PRIOR) * (a - baseline), math.sqrt(RIDGE) * (c - a)]

    if polish:
        x = np.log2(v)
        lo = [SCORE[0], SCORE[0], x.min() - MARGIN_DOUBLINGS, STEEPNESS[0]]
        hi = [SCORE[1], SCORE[1], x.max() + MARGIN_DOUBLINGS, STEEPNESS[1]]
        res = least_squares(residuals, x0=params, bounds=(lo, hi))
        if res.cost <= 0.5 * (residuals(params) ** 2).sum():
            params = res.x
    a, c, m, k = (float(t) for t in params)
    sse = float(((growth_score(v, a, c, m, k) - y) ** 2).sum())
    sst = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - sse / sst if sst > 1e-9 else math.nan  # constant data: R^2 is undefined
    return GrowthCurve(baseline, a, c, m, k, rmse=math.sqrt(sse / len(y)), r2=r2, points=len(y))


# --------------------------------------------------------------------------------------------------
# Bootstrap replicates of measured scores


def interval(samples, confidence: float = 0.95, axis: int = -1) -> tuple:
    """Percentile interval of bootstrap replicates (NaN replicates ignored)."""
    tail = (1 - confidence) / 2 * 100
    with np.errstate(all="ignore"):
        lo, hi = np.nanpercentile(np.asarray(samples, dtype=float), [tail, 100 - tail], axis=axis)
    return lo, hi


def bootstrap_items(correct: np.ndarray, present: np.ndarray | None, samples: int, rng) -> np.ndarray:
    """Scores (%) of `samples` resamples of the test items: (units, items) verdicts -> (units, samples).

    Paired: every unit (a cell's checkpoint on one ability) is re-scored on the same resampled items,
    because the units were scored on the same test set; differences between cells (curated minus
    synthetic, a curve's rise) then carry only the uncertainty they really have. `present` marks the
    items a unit was scored on (all, normally).
    """
    correct = np.asarray(correct, dtype=float)
    present = np.ones_like(correct) if present is None else np.asarray(present, dtype=float)
    n = correct.shape[1]
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=samples)  # (samples, items): draws per item
    num = counts @ (correct * present).T
    den = counts @ present.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return (100.0 * num / den).T


def bootstrap_binomial(score, items, samples: int, rng) -> np.ndarray:
    """Parametric fallback when per-item verdicts are not stored: (units,) -> (units, samples).

    Each resample draws the number of correct items from Binomial(items, score/100). This is what the
    item bootstrap gives for independent items; it cannot pair cells on the same items, so intervals of
    differences come out somewhat wider than with stored verdicts. A score of 0 or 100 gets a zero-width
    interval, as it does with the item bootstrap.
    """
    score = np.asarray(score, dtype=float)
    items = np.maximum(np.asarray(items, dtype=int), 1)
    p = np.clip(score / 100.0, 0.0, 1.0)
    return 100.0 * rng.binomial(items[:, None], p[:, None], size=(len(p), samples)) / items[:, None]


def resample_seeds(boot: np.ndarray, group: np.ndarray, seed: np.ndarray, rng) -> np.ndarray:
    """Average replicates over seeds, resampling the seeds: (rows, B) per cell -> (groups, B).

    Each replicate draws the seeds with replacement (the same draw for every group: a seed fixes the
    nested data order for all volumes) and averages the drawn seeds' item replicates. With one seed
    this is the identity.
    """
    seeds, seed_ix = np.unique(seed, return_inverse=True)
    n_groups = int(group.max()) + 1 if len(group) else 0
    samples = boot.shape[1]
    draws = rng.multinomial(len(seeds), np.full(len(seeds), 1.0 / len(seeds)), size=samples)  # (B, S)
    w = draws[:, seed_ix].T.astype(float)  # (rows, B) weight of each cell in each replicate
    onehot = np.zeros((len(group), n_groups))
    onehot[np.arange(len(group)), group] = 1.0
    num = onehot.T @ np.nan_to_num(w * boot)
    den = onehot.T @ w
    plain = (onehot.T @ np.nan_to_num(boot)) / np.maximum(onehot.sum(axis=0), 1)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        # A replicate that drew none of a group's seeds falls back to the group's plain mean.
        return np.where(den > 0, num / np.where(den > 0, den, 1), plain)


@dataclass
class Measured:
    """Selected scores, one row per (size, source, volume, mix, split, ability), seeds averaged.

    boot[i] holds the bootstrap replicates of rows[i]; the same replicate index is the same item
    (and seed) resample in every row, so differences between rows are bootstrapped paired.
    """

    rows: pl.DataFrame
    boot: np.ndarray
    confidence: float = 0.95

    def pick(self, **eq) -> tuple[pl.DataFrame, np.ndarray]:
        mask = pl.lit(True)
        for k, v in eq.items():
            mask = mask & (pl.col(k) == v)
        part = self.rows.with_row_index("_row").filter(mask)
        return part.drop("_row"), self.boot[part["_row"].to_numpy()]


GROUP_KEYS = ["size", "source", "volume", "mix", "split", "ability"]


def measure(
    selected: pl.DataFrame,
    verdicts: pl.DataFrame | None = None,
    *,
    samples: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
    params: dict[str, float] | None = None,
) -> Measured:
    """Bootstrap every selected score, then average seeds.

    selected: one row per (cell_id, ability) with split (test/ood), score, items, expected and the
    cell's size, source, volume, mix, seed (report.select's output). verdicts: per-item results of the
    selected checkpoints (cell_id, split, ability, idx, correct), or None; a (cell, ability) without
    verdicts gets the binomial fallback. params: size label -> parameter count.
    """
    rng = np.random.default_rng(seed)
    cells = selected.with_columns(
        pl.col("mix").fill_null(""), pl.col("volume").fill_null(0), pl.col("seed").fill_null(0)
    ).with_row_index("_row")
    boot = np.full((cells.height, samples), np.nan)
    method = np.array(["binomial"] * cells.height, dtype=object)
    if verdicts is not None and verdicts.height:
        v = (
            verdicts.select("cell_id", "split", "ability", pl.col("idx").cast(pl.String), pl.col("correct").cast(pl.Float64))
            .group_by(["cell_id", "split", "ability", "idx"]).agg(pl.col("correct").mean())
            .join(cells.select("cell_id", "split", "ability", "_row"), on=["cell_id", "split", "ability"])
        )
        for _, part in v.sort(["split", "ability"]).group_by(["split", "ability"], maintain_order=True):
            rows, row_ix = np.unique(part["_row"].to_numpy(), return_inverse=True)
            items, item_ix = np.unique(part["idx"].to_numpy(), return_inverse=True)
            correct = np.zeros((len(rows), len(items)))
            present = np.zeros_like(correct)
            correct[row_ix, item_ix] = part["correct"].to_numpy()
            present[row_ix, item_ix] = 1.0
            boot[rows] = bootstrap_items(correct, present, samples, rng)
            method[rows] = "items"
    fallback = np.flatnonzero(method == "binomial")
    if len(fallback):
        part = cells[fallback]
        boot[fallback] = bootstrap_binomial(part["score"].to_numpy(), part["items"].to_numpy(), samples, rng)

    keys = [k for k in GROUP_KEYS if k in cells.columns]
    groups = cells.select(keys).unique().sort(keys).with_row_index("_group")
    cells = cells.join(groups, on=keys, how="left")
    order = cells["_row"].to_numpy()
    gboot = resample_seeds(boot[order], cells["_group"].to_numpy(), cells["seed"].to_numpy(), rng)
    cells = cells.with_columns(_method=pl.Series(method[order].tolist()))
    rows = (
        cells.group_by(["_group", *keys])
        .agg(
            pl.col("score").mean(),
            pl.col("expected").mean(),
            pl.col("items").sum(),
            pl.col("seed").n_unique().alias("seeds"),
            pl.col("_method").min().alias("bootstrap"),  # "binomial" if any seed fell back
        )
        .sort("_group")
    )
    lo, hi = interval(gboot, confidence)
    sizes = rows["size"].to_list()
    rows = rows.drop("_group").with_columns(
        lo=pl.Series(lo), hi=pl.Series(hi),
        params=pl.Series([float((params or {}).get(s, math.nan)) for s in sizes], dtype=pl.Float64),
    )
    return Measured(rows, gboot, confidence)


# --------------------------------------------------------------------------------------------------
# Curves per ability and size, and the numbers derived from them


@dataclass
class CurveFit:
    """A point fit and its bootstrap refits (boot: (B, 4) rows of [start, ceiling, midpoint, steepness])."""

    ability: str
    size: str
    params: float
    curve: GrowthCurve
    boot: np.ndarray
    volumes: np.ndarray
    scores: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def predict(self, volume, trusted: float = math.inf) -> tuple[np.ndarray, np.ndarray]:
        """(point, (B, len) replicates) of the fitted score at `volume` (held flat past `trusted`)."""
        v = np.minimum(np.atleast_1d(np.asarray(volume, dtype=float)), trusted)
        a, c, m, k = (self.boot[:, i : i + 1] for i in range(4))
        return self.curve(v), growth_score(v, a, c, m, k)

    def pace(self) -> dict[str, tuple[float, np.ndarray]]:
        """(point, replicates) of: the gain per doubling at the start (first doubling past the smallest
        volume) and averaged over the studied range, the saturation volume and the ceiling."""
        v0, v1 = float(self.volumes.min()), float(self.volumes.max())
        point, reps = self.predict([v0, 2 * v0, v1])
        a, c, m, k = self.boot.T
        span = math.log2(v1 / v0)
        return {
            "gain_per_doubling": (float(point[1] - point[0]), reps[:, 1] - reps[:, 0]),
            "range_gain_per_doubling": (float(point[2] - point[0]) / span, (reps[:, 2] - reps[:, 0]) / span),
            "saturation_volume": (self.curve.volume_at(), saturation_volume(m, k)),
            "ceiling": (self.curve.ceiling, c),
            "start": (self.curve.start, a),
        }


def fit_curves(measured: Measured, source: str = "curated", split: str = "test") -> dict[tuple[str, str], CurveFit]:
    """(ability, size) -> CurveFit over the plain volumes of one source (named mixes excluded)."""
    part, boot = measured.pick(source=source, split=split, mix="")
    fits: dict[tuple[str, str], CurveFit] = {}
    frame = part.with_row_index("_i")
    for (ability, size), g in frame.sort(["ability", "size", "volume"]).group_by(["ability", "size"], maintain_order=True):
        if g["volume"].n_unique() < 3:
            continue  # too few volumes for a curve (the start is pinned by a prior, not by data)
        ix = g["_i"].to_numpy()
        volumes, scores = g["volume"].to_numpy().astype(float), g["score"].to_numpy()
        baseline = float(g["expected"].mean())
        curve = fit_growth(volumes, scores, baseline)
        reps = fit_growth_batch(volumes, np.nan_to_num(boot[ix].T, nan=baseline), baseline)
        fits[(ability, size)] = CurveFit(
            ability, size, float(g["params"][0]), curve, reps, volumes, scores, g["lo"].to_numpy(), g["hi"].to_numpy()
        )
    return fits


def size_sensitivity(params, scores):
    """Score change per doubling of parameters at fixed volume: (..., sizes, volumes) -> (...).

    The least-squares slope of score on log2(parameters) at each volume, averaged over the volumes.
    """
    p = np.log2(np.asarray(params, dtype=float))
    s = np.asarray(scores, dtype=float)
    dp = p - p.mean()
    if len(p) < 2 or not np.isfinite(dp).all() or (dp**2).sum() == 0:
        return np.full(s.shape[:-2], np.nan)
    slope = np.einsum("s,...sv->...v", dp, s - s.mean(axis=-2, keepdims=True)) / (dp**2).sum()
    return slope.mean(axis=-1)


def classify(
    gain: float,
    gain_lo: float,
    size_gain: float,
    size_lo: float,
    saturation: float,
    largest: float,
    *,
    volume_threshold: float = 1.0,
    size_threshold: float = 1.0,
    early_doublings: float = 2.0,
    require_interval: bool = True,
) -> tuple[str, str]:
    """An ability's class and the evidence for it.

    gain: the fitted gain per doubling of data averaged over the studied range (the start alone would
    call a late riser, such as the study's synthetic data after 2,560 items, flat). Responds to
    volume: gain >= volume_threshold (and, with require_interval, its interval's lower end above 0).
    Responds to size likewise with the size sensitivity. Saturates early: responds to volume, and 90%
    of the gain is reached at least `early_doublings` doublings before the largest volume studied.
    """
    vol = gain >= volume_threshold and (gain_lo > _POSITIVE or not require_interval)
    size = bool(np.isfinite(size_gain) and size_gain >= size_threshold and (size_lo > _POSITIVE or not require_interval))
    early = vol and np.isfinite(saturation) and saturation <= largest / 2**early_doublings
    why = [
        f"volume {gain:+.1f} (low {gain_lo:+.1f}) pts/doubling {'>=' if vol else 'below'} {volume_threshold:g}",
        "size: n/a (one size)" if not np.isfinite(size_gain) else
        f"size {size_gain:+.1f} (low {size_lo:+.1f}) pts/doubling of params {'>=' if size else 'below'} {size_threshold:g}",
    ]
    if vol:
        where = "<=" if early else ">"
        why.append(f"90% of gain at {saturation:,.0f} items {where} {largest / 2**early_doublings:,.0f} "
                   f"({early_doublings:g} doublings before {largest:,.0f})")
    if early:
        cls = SATURATES_EARLY
    elif vol:
        cls = VOLUME_AND_SIZE if size else VOLUME_ONLY
    else:
        cls = SIZE_ONLY if size else FLAT
    return cls, "; ".join(why)


def extrapolation_error(volumes, scores, baseline: float, fraction: float = 4, boot: np.ndarray | None = None) -> dict:
    """Fit on volumes <= largest / fraction, predict the largest: predicted - measured (points).

    boot: optional (n, B) replicates of the scores, for an interval of the error. NaN if fewer than
    three volumes are small enough to fit.
    """
    v = np.asarray(volumes, dtype=float)
    y = np.asarray(scores, dtype=float)
    top = v.max()
    use = v <= top / fraction
    last = int(np.argmax(v))
    out = {"volume": float(top), "fit_volumes": v[use].tolist(), "measured": float(y[last]),
           "predicted": math.nan, "error": math.nan, "error_lo": math.nan, "error_hi": math.nan}
    if len(np.unique(v[use])) < 3:
        return out
    pred = float(fit_growth(v[use], y[use], baseline)(top))
    out.update(predicted=pred, error=pred - float(y[last]))
    if boot is not None:
        reps = fit_growth_batch(v[use], np.nan_to_num(boot[use].T, nan=baseline), baseline)
        errs = growth_score(top, *reps.T) - boot[last]
        out["error_lo"], out["error_hi"] = (float(x) for x in interval(errs))
    return out


# --------------------------------------------------------------------------------------------------
# The recommender


def predicted_scores(curves: dict[str, GrowthCurve], counts: dict[str, int], per_ability: int) -> dict[str, float]:
    """Each ability's predicted score with `counts[a]` items of its own.

    The curves are fitted against total volume spread evenly over `per_ability` abilities, so n items
    of one ability sit at total volume n * per_ability. Transfer between abilities is ignored.
    """
    return {a: float(c(counts.get(a, 0) * per_ability)) for a, c in curves.items()}


def recommend(
    curves: dict[str, GrowthCurve],
    budget: int,
    *,
    per_ability: int | None = None,
    floor: float = 0.1,
    available: dict[str, int] | None = None,
    trusted_volume: float = math.inf,
    min_gain: float = 1.0,
    steps: int = 400,
) -> dict[str, int]:
    """Allocate `budget` items over abilities to maximise the predicted mean score.

    Every ability first gets `floor` of its even share (no ability is dropped on a fitted curve's
    word); then items go, a chunk at a time, where the predicted gain per item is highest. Chunks of
    several sizes are compared so an ability whose curve is still in its slow start (convex in log
    volume) is not passed over for a gain that only comes after a few chunks.

    Two guards keep the curves' weakest parts from deciding: past `trusted_volume` (total volume, the
    curve's x axis) a curve is held flat, as nothing was measured there; and a chunk whose gain is
    under `min_gain` points per doubling of the ability's items counts as no gain, since a saturating
    curve's tail is always slightly positive. Once no ability gains, the rest is spread evenly (to
    the ability with fewest items first) instead of being poured into a negligible tail.
    """
    abilities = list(curves)
    per_ability = per_ability or len(abilities)

    def score(a: str, n: np.ndarray) -> np.ndarray:
        return curves[a](np.minimum(n * per_ability, trusted_volume))

    cap = {a: (available or {}).get(a, budget) for a in abilities}
    # budget_problem decides against the whole pool before the study; here only the fitted abilities count
    if sum(min(cap[a], budget) for a in abilities) < budget:
        raise AllocationError(f"budget {budget} is more than the {sum(cap.values())} items that exist")
    base = max(0, math.floor(floor * budget / len(abilities)))
    alloc = {a: min(base, cap[a]) for a in abilities}
    remaining = budget - sum(alloc.values())
    step = max(1, budget // steps)
    chunks = step * 2 ** np.arange(8)
    while remaining > 0:
        best = None
        for a in abilities:
            room = min(remaining, cap[a] - alloc[a])
            if room <= 0:
                continue
            sizes = np.unique(np.minimum(chunks, room))
            n = alloc[a]
            gains = score(a, np.r_[n, n + sizes].astype(float))
            gain = gains[1:] - gains[0]
            with np.errstate(divide="ignore"):
                doublings = np.log2((n + sizes) / max(n, 0.5))
            rate = np.where(gain >= min_gain * doublings, gain / sizes, 0.0)
            i = int(np.argmax(rate))
            key = (float(rate[i]), -n, -abilities.index(a))
            if best is None or key > best[0]:
                best = (key, a, int(sizes[i]) if rate[i] > 0 else min(step, room))
        _, a, d = best
        alloc[a] += d
        remaining -= d
    return alloc


def even_split(abilities: Iterable[str], budget: int, available: dict[str, int] | None = None) -> dict[str, int]:
    abilities = list(abilities)
    return even_counts(budget, {a: (available or {}).get(a, budget) for a in abilities})


def reconstruct_split(abilities: Iterable[str], budget: int, available: dict[str, int] | None = None) -> dict[str, int]:
    """The study's reconstruct mix scaled to `budget` (its caps are shares of its 10,000 items)."""
    abilities = list(abilities)
    caps = {a: max(1, round(share * budget)) for a, share in RECONSTRUCT.items() if a in abilities}
    return even_counts(budget, {a: (available or {}).get(a, budget) for a in abilities}, caps)


def as_mix(alloc: dict[str, int], name: str) -> dict:
    """The allocation as a spec mix ({name, total, caps, fill}): every ability capped at its count
    except the largest, which 'even' fill gives exactly the rest."""
    top = max(alloc, key=lambda a: (alloc[a], a))
    return {"name": name, "total": int(sum(alloc.values())),
            "caps": {a: int(n) for a, n in alloc.items() if a != top}, "fill": "even"}


# --------------------------------------------------------------------------------------------------
# Tables for the report (pure: frames and fits in, rows out)


def _ci(point: float, reps: np.ndarray, confidence: float) -> dict:
    lo, hi = interval(reps, confidence)
    return {"value": _num(point), "lo": _num(lo), "hi": _num(hi)}


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def pace_table(fits: dict[tuple[str, str], CurveFit], settings, confidence: float = 0.95) -> tuple[list[dict], list[dict]]:
    """(one row per ability and size, one row per ability with size sensitivity and class)."""
    curves = []
    for (ability, size), f in sorted(fits.items(), key=lambda kv: (kv[0][0], kv[1].params, kv[0][1])):
        p = f.pace()
        curves.append({
            "ability": ability, "size": size, "params": _num(f.params), "baseline": f.curve.baseline,
            "midpoint_log2": f.curve.midpoint, "steepness": f.curve.steepness,
            "r2": _num(f.curve.r2), "rmse": f.curve.rmse, "points": f.curve.points,
            "smallest_volume": float(f.volumes.min()), "largest_volume": float(f.volumes.max()),
            **{k: _ci(v, r, confidence) for k, (v, r) in p.items()},
        })
    abilities = []
    for ability in sorted({a for a, _ in fits}):
        fs = sorted((f for (a, _), f in fits.items() if a == ability), key=lambda f: (f.params, f.size))
        volumes = np.unique(np.concatenate([f.volumes for f in fs]))
        paces = [f.pace() for f in fs]
        gain = np.mean([p["gain_per_doubling"][0] for p in paces])
        gain_reps = np.mean([p["gain_per_doubling"][1] for p in paces], axis=0)
        rng_gain = np.mean([p["range_gain_per_doubling"][0] for p in paces])
        rng_reps = np.mean([p["range_gain_per_doubling"][1] for p in paces], axis=0)
        # The typical saturation volume: geometric middle of the sizes' (median in log volume).
        sat = float(np.exp2(np.median(np.log2([p["saturation_volume"][0] for p in paces]))))
        sat_reps = np.exp2(np.median(np.log2([p["saturation_volume"][1] for p in paces]), axis=0))
        ceiling = np.mean([p["ceiling"][0] for p in paces])
        ceiling_reps = np.mean([p["ceiling"][1] for p in paces], axis=0)
        params = [f.params for f in fs]
        point = np.stack([f.predict(volumes)[0] for f in fs])  # (sizes, volumes)
        reps = np.stack([f.predict(volumes)[1] for f in fs], axis=1)  # (B, sizes, volumes)
        size_pt, size_reps = float(size_sensitivity(params, point)), size_sensitivity(params, reps)
        g, r, s = (_ci(gain, gain_reps, confidence), _ci(rng_gain, rng_reps, confidence),
                   _ci(size_pt, size_reps, confidence))
        cls, evidence = classify(
            rng_gain, r["lo"] if r["lo"] is not None else math.nan,
            size_pt, s["lo"] if s["lo"] is not None else math.nan,
            sat, float(volumes.max()),
            volume_threshold=settings.volume_gain, size_threshold=settings.size_gain,
            early_doublings=settings.early_saturation_doublings, require_interval=settings.require_interval,
        )
        abilities.append({
            "ability": ability, "class": cls, "evidence": evidence, "sizes": [f.size for f in fs],
            "gain_per_doubling": g, "range_gain_per_doubling": r, "size_gain_per_doubling": s,
            "saturation_volume": _ci(sat, sat_reps, confidence), "ceiling": _ci(ceiling, ceiling_reps, confidence),
            "baseline": fs[0].curve.baseline,
        })
    return curves, abilities


def source_gap(measured: Measured, a: str = "curated", b: str = "synthetic") -> list[dict]:
    """Source a minus source b at each (size, volume), per ability and averaged over abilities."""
    cur, cb = measured.pick(source=a, split="test", mix="")
    syn, sb = measured.pick(source=b, split="test", mix="")
    keys = ["size", "volume", "ability"]
    pair = cur.select(*keys, "score", "expected").with_row_index("_c").join(
        syn.select(*keys, "score").with_row_index("_s"), on=keys, suffix="_synthetic")
    rows = []
    conf = measured.confidence
    for r in pair.sort(keys).iter_rows(named=True):
        diff = cb[r["_c"]] - sb[r["_s"]]
        rows.append({"size": r["size"], "volume": r["volume"], "ability": r["ability"], "a": a, "b": b,
                     "score_a": r["score"], "score_b": r["score_synthetic"], "baseline": r["expected"],
                     "gap": _ci(r["score"] - r["score_synthetic"], diff, conf)})
    for (size, volume), g in pair.sort(keys).group_by(["size", "volume"], maintain_order=True):
        diff = cb[g["_c"].to_numpy()].mean(axis=0) - sb[g["_s"].to_numpy()].mean(axis=0)
        rows.append({"size": size, "volume": volume, "ability": "mean", "a": a, "b": b,
                     "score_a": g["score"].mean(), "score_b": g["score_synthetic"].mean(),
                     "baseline": g["expected"].mean(),
                     "gap": _ci(g["score"].mean() - g["score_synthetic"].mean(), diff, conf)})
    return rows


def transfer(measured: Measured) -> dict:
    """OOD against in-domain: the mean over abilities and over OOD subjects per (size, source, volume),
    and how closely the two move together across those settings (Pearson r, with interval)."""
    keys = ["size", "source", "volume", "mix"]
    ind, ib = measured.pick(split="test")
    ood, ob = measured.pick(split="ood")
    if not ood.height or not ind.height:
        return {"rows": [], "r": None}
    rows, a_pts, b_pts, a_reps, b_reps = [], [], [], [], []
    oi = ood.with_row_index("_o")
    ii = ind.with_row_index("_i")
    for k, g in ii.sort(keys).group_by(keys, maintain_order=True):
        o = oi.join(pl.DataFrame([dict(zip(keys, k))], schema={c: ind.schema[c] for c in keys}), on=keys)
        if not o.height:
            continue
        ir, orp = ib[g["_i"].to_numpy()].mean(axis=0), ob[o["_o"].to_numpy()].mean(axis=0)
        a, b = g["score"].mean(), o["score"].mean()
        a_pts.append(a), b_pts.append(b), a_reps.append(ir), b_reps.append(orp)
        rows.append({**dict(zip(keys, k)), "in_domain": _ci(a, ir, measured.confidence),
                     "ood": _ci(b, orp, measured.confidence),
                     "in_domain_baseline": g["expected"].mean(), "ood_baseline": o["expected"].mean()})
    out = {"rows": rows, "r": None}
    if len(a_pts) >= 3:
        def corr(x, y):
            x, y = x - x.mean(axis=0), y - y.mean(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                return (x * y).sum(axis=0) / np.sqrt((x**2).sum(axis=0) * (y**2).sum(axis=0))
        out["r"] = _ci(corr(np.array(a_pts), np.array(b_pts)), corr(np.array(a_reps), np.array(b_reps)),
                       measured.confidence)
    return out


def extrapolation_table(measured: Measured, fraction: float, source: str = "curated") -> list[dict]:
    """Per ability and size: fit on volumes <= largest / fraction, error at the largest (points)."""
    part, boot = measured.pick(source=source, split="test", mix="")
    rows = []
    frame = part.with_row_index("_i")
    for (ability, size), g in frame.sort(["ability", "size", "volume"]).group_by(["ability", "size"], maintain_order=True):
        e = extrapolation_error(g["volume"].to_numpy(), g["score"].to_numpy(), float(g["expected"].mean()),
                                fraction, boot[g["_i"].to_numpy()])
        rows.append({"ability": ability, "size": size, **{k: (_num(v) if isinstance(v, float) else v) for k, v in e.items()}})
    return rows


@dataclass
class Recommendation:
    size: str
    budget: int
    name: str
    allocations: dict[str, dict[str, int]]  # even / reconstruct / recommended -> ability -> items
    predicted: dict[str, dict]  # same keys -> mean predicted score with interval
    per_ability: dict[str, dict[str, float]]  # same keys -> ability -> predicted score
    gain: dict  # recommended minus even, with interval
    gain_vs_reconstruct: dict
    mix: dict
    beyond_data: list[str] = field(default_factory=list)  # abilities given more than the grid studied


def budget_problem(budget: int, available: dict[str, int]) -> str | None:
    """Why a recommendation budget cannot be allocated: more curated train items than the pool has."""
    total = sum(available.values())
    return f"{budget} is more than the {total} curated train items that exist" if budget > total else None


def recommendation(
    fits: dict[tuple[str, str], CurveFit],
    size: str,
    budget: int,
    *,
    name: str | None = None,
    floor: float = 0.1,
    available: dict[str, int] | None = None,
    per_ability: int = 10,
    confidence: float = 0.95,
    trust_doublings: float = 1.0,
    min_gain: float = 1.0,
) -> Recommendation:
    """The recommender on one size's curves, with the even split and the reconstruct mix as references;
    predicted gains get intervals by evaluating the same allocations on every bootstrap refit. Every
    prediction holds a curve flat `trust_doublings` past the largest volume it was fitted on."""
    mine = {a: f for (a, s), f in fits.items() if s == size}
    if not mine:
        raise ValueError(f"no fitted curves for size {size!r}")
    curves = {a: f.curve for a, f in mine.items()}
    largest = max(float(f.volumes.max()) for f in mine.values())
    trusted = largest * 2**trust_doublings
    allocs = {
        "even": even_split(curves, budget, available),
        "reconstruct": reconstruct_split(curves, budget, available),
        "recommended": recommend(curves, budget, per_ability=per_ability, floor=floor, available=available,
                                 trusted_volume=trusted, min_gain=min_gain),
    }
    means, reps, per = {}, {}, {}
    for key, alloc in allocs.items():
        pts, rs = zip(*(mine[a].predict(alloc[a] * per_ability, trusted) for a in curves))
        per[key] = {a: float(p[0]) for a, p in zip(curves, pts)}
        means[key] = float(np.mean([p[0] for p in pts]))
        reps[key] = np.mean([r[:, 0] for r in rs], axis=0)
    return Recommendation(
        size=size, budget=budget, name=name or f"recommended-{budget}", allocations=allocs,
        predicted={k: _ci(means[k], reps[k], confidence) for k in allocs},
        per_ability=per,
        gain=_ci(means["recommended"] - means["even"], reps["recommended"] - reps["even"], confidence),
        gain_vs_reconstruct=_ci(means["recommended"] - means["reconstruct"], reps["recommended"] - reps["reconstruct"], confidence),
        mix=as_mix(allocs["recommended"], name or f"recommended-{budget}"),
        beyond_data=[a for a, n in allocs["recommended"].items() if n * per_ability > largest],
    )


def mix_check(
    measured: Measured,
    fits: dict[tuple[str, str], CurveFit],
    counts: dict[str, dict[str, int]],
    per_ability: int = 10,
    trust_doublings: float = 1.0,
) -> dict[str, list[dict]]:
    """Named-mix cells, measured against predicted (mean over abilities; predictions as the recommender
    makes them, flat `trust_doublings` past the data). "gains": each mix against an even split of the
    same total at the same size (a mix named even*), measured gain paired over test items."""
    part, boot = measured.pick(source="mix", split="test")
    conf = measured.confidence
    found = {}
    frame = part.with_row_index("_i")
    for (size, mix), g in frame.sort(["size", "mix", "ability"]).group_by(["size", "mix"], maintain_order=True):
        alloc = counts.get(mix)
        g = g.filter(pl.col("ability").is_in([a for (a, s) in fits if s == size]))
        if not alloc or not g.height:
            continue
        abilities = g["ability"].to_list()
        preds = [fits[(a, size)].predict(alloc.get(a, 0) * per_ability,
                                         float(fits[(a, size)].volumes.max()) * 2**trust_doublings) for a in abilities]
        found[(size, mix)] = {
            "total": int(sum(alloc.values())), "abilities": abilities,
            "measured": (float(g["score"].mean()), boot[g["_i"].to_numpy()].mean(axis=0)),
            "predicted": (float(np.mean([p[0][0] for p in preds])), np.mean([p[1][:, 0] for p in preds], axis=0)),
            "per_ability": {a: {"items": int(alloc.get(a, 0)), "measured": float(sc), "predicted": float(p[0][0])}
                            for a, sc, p in zip(abilities, g["score"].to_list(), preds)},
        }
    mixes = [{"size": size, "mix": mix, "total": f["total"], "abilities": len(f["abilities"]),
              "measured": _ci(*f["measured"], conf), "predicted": _ci(*f["predicted"], conf),
              "per_ability": f["per_ability"]} for (size, mix), f in found.items()]
    gains = []
    for (size, mix), f in found.items():
        for (size2, ref), e in found.items():
            if size2 != size or ref == mix or not ref.startswith("even") or e["total"] != f["total"] \
                    or e["abilities"] != f["abilities"] or mix.startswith("even"):
                continue
            gains.append({
                "size": size, "mix": mix, "reference": ref, "total": f["total"],
                **{k: _ci(f[k][0] - e[k][0], f[k][1] - e[k][1], conf) for k in ("measured", "predicted")},
            })
    return {"mixes": mixes, "gains": gains}


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([kKmMbBgGtT]?)\s*$")
_UNIT = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def params_from_label(label: str) -> float | None:
    """'0.2M' -> 2e5, '7b' -> 7e9; None when the label is not a number with an optional unit."""
    m = _SIZE.match(str(label))
    return float(m.group(1)) * _UNIT[m.group(2).lower()] if m else None
