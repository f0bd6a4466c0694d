"""Growth-pace analysis (platform/analysis/growth.py) on synthetic curves whose true parameters are known."""

import math

import numpy as np
import polars as pl
import pytest

from growthpace.platform.analysis import growth
from growthpace.platform.core.allocation import AllocationError, even_counts
from growthpace.platform.core.spec import AnalysisSpec, Mix

VOLUMES = 10 * 4.0 ** np.arange(6)  # 10 ... 10240, the study's spacing


def test_fit_recovers_known_parameters():
    true = growth.GrowthCurve(baseline=25, start=25, ceiling=70, midpoint=math.log2(500), steepness=1.2)
    fit = growth.fit_growth(VOLUMES, true(VOLUMES), baseline=25)
    assert fit.start == pytest.approx(25, abs=0.5)
    assert fit.ceiling == pytest.approx(70, abs=0.5)
    assert fit.midpoint == pytest.approx(math.log2(500), abs=0.05)
    assert fit.steepness == pytest.approx(1.2, rel=0.03)
    assert fit.r2 > 0.999 and fit.points == 6
    # Derived numbers: the analytic values of the true curve.
    assert fit.volume_at(0.9) == pytest.approx(2 ** (math.log2(500) + math.log(9) / 1.2), rel=0.03)
    assert fit.gain_per_doubling(10) == pytest.approx(true(20) - true(10), abs=0.1)


def test_start_below_the_baseline_is_fitted_where_the_data_show_it():
    # Tiny models answer below chance at small volumes: the start follows the data, not the baseline.
    true = growth.GrowthCurve(baseline=35, start=15, ceiling=60, midpoint=math.log2(800), steepness=1.5)
    fit = growth.fit_growth(VOLUMES, true(VOLUMES), baseline=35)
    assert fit.start == pytest.approx(15, abs=1.0) and fit.ceiling == pytest.approx(60, abs=1.0)


def test_unidentified_ceiling_takes_the_conservative_one():
    # 0, 0, 0, 10: a ceiling of 10 reached at the last volume fits as well as a jump towards 100 just
    # past it; the weak ridge picks the ceiling the data support.
    fit = growth.fit_growth([10, 40, 160, 640], [0, 0, 0, 10], baseline=0)
    assert fit.ceiling == pytest.approx(10, abs=0.5)
    flat = growth.fit_growth([10, 40, 160, 640], [25, 25, 25, 25], baseline=25)
    assert abs(flat(10240) - 25) < 0.1 and math.isnan(flat.r2)


def test_bootstrap_intervals_cover_the_truth():
    true = growth.GrowthCurve(baseline=25, start=25, ceiling=70, midpoint=math.log2(500), steepness=1.2)
    rng = np.random.default_rng(1)
    items = np.full(len(VOLUMES), 400)
    measured = 100 * rng.binomial(items, true(VOLUMES) / 100) / items
    reps = growth.bootstrap_binomial(measured, items, 200, rng)  # (volumes, B)
    fit = growth.CurveFit("code", "7b", 7e9, growth.fit_growth(VOLUMES, measured, 25),
                          growth.fit_growth_batch(VOLUMES, reps.T, 25), VOLUMES, measured, measured, measured)
    pace = fit.pace()
    for name, truth in [("ceiling", 70), ("gain_per_doubling", true(20) - true(10)),
                        ("saturation_volume", true.volume_at(0.9))]:
        lo, hi = growth.interval(pace[name][1])
        assert lo <= truth <= hi, (name, lo, truth, hi)
    assert 0 < hi - lo  # a real interval


def test_item_bootstrap_is_paired_and_has_binomial_spread():
    rng = np.random.default_rng(0)
    correct = (rng.random(400) < 0.3).astype(float)
    reps = growth.bootstrap_items(np.stack([correct, correct]), None, 500, rng)
    assert reps.shape == (2, 500)
    assert np.allclose(reps[0], reps[1])  # same items resampled for both units: their difference is exact
    assert reps[0].mean() == pytest.approx(100 * correct.mean(), abs=0.5)
    sd = 100 * math.sqrt(correct.mean() * (1 - correct.mean()) / 400)
    assert reps[0].std() == pytest.approx(sd, rel=0.15)
    # The parametric fallback: same centre and spread; 0% stays 0%.
    binom = growth.bootstrap_binomial(np.array([100 * correct.mean(), 0.0]), np.array([400, 40]), 500, rng)
    assert binom[0].std() == pytest.approx(sd, rel=0.15) and (binom[1] == 0).all()


def test_seed_resampling():
    boot = np.array([[10.0, 10.0], [30.0, 30.0], [50.0, 50.0]])
    one = growth.resample_seeds(boot[:1], np.array([0]), np.array([0]), np.random.default_rng(0))
    assert np.allclose(one, boot[:1])
    # Group 0 has seeds 0 and 1 (10 and 30); replicates are means of resampled seeds: 10, 20 or 30.
    two = growth.resample_seeds(np.tile(boot[:2], (1, 100)), np.array([0, 0]), np.array([0, 1]), np.random.default_rng(0))
    assert set(np.round(two[0], 6)) <= {10.0, 20.0, 30.0} and len(set(np.round(two[0], 6))) == 3


def _selected(curves: dict, sizes: dict, volumes, items=40, seeds=(0,), source="curated", rng=None):
    """Selected test rows of a synthetic study: curves[(ability, size)] -> GrowthCurve."""
    rows = []
    for (ability, size), c in curves.items():
        for v in volumes:
            for seed in seeds:
                p = float(c(v))
                if rng is not None:
                    p = 100 * rng.binomial(items, p / 100) / items
                rows.append({"cell_id": f"{size}-{source}-{v}-{seed}", "ability": ability, "split": "test",
                             "score": p, "expected": c.baseline, "items": items, "size": size, "source": source,
                             "volume": int(v), "mix": "", "seed": seed, "selected_epoch": 3})
    return pl.DataFrame(rows)


def test_measure_uses_verdicts_when_present_and_binomial_otherwise():
    c = growth.GrowthCurve(25, 25, 60, 8, 1)
    sel = _selected({("code", "1B"): c}, {}, [10, 40, 160], seeds=(0, 1))
    cell = sel["cell_id"][0]
    verdicts = pl.DataFrame({"cell_id": [cell] * 4, "split": ["test"] * 4, "ability": ["code"] * 4,
                             "idx": ["1", "2", "3", "4"], "correct": [True, False, False, True]})
    m = growth.measure(sel, verdicts, samples=50, params={"1B": 1e9})
    assert m.rows.height == 3 and m.boot.shape == (3, 50)  # seeds averaged
    row = m.rows.filter(pl.col("volume") == 10).row(0, named=True)
    assert row["bootstrap"] == "binomial" and row["seeds"] == 2 and row["params"] == 1e9  # one seed lacked verdicts
    only = growth.measure(sel.filter(pl.col("cell_id") == cell), verdicts, samples=50)
    assert only.rows["bootstrap"].to_list() == ["items"]
    assert set(np.unique(only.boot)) <= {0.0, 25.0, 50.0, 75.0, 100.0}  # resamples of 4 items


def test_size_sensitivity_recovers_slope():
    params = np.array([1e9, 4e9, 16e9])
    scores = 30 + 3.0 * np.log2(params)[:, None] + np.array([0.0, 5.0, 9.0])[None, :]  # (sizes, volumes)
    assert float(growth.size_sensitivity(params, scores)) == pytest.approx(3.0)
    assert math.isnan(float(growth.size_sensitivity(params[:1], scores[:1])))


@pytest.mark.parametrize(
    "args, expected",
    [
        ((4.0, 2.0, 3.0, 1.0, 5000, 10000), "volume and size"),
        ((4.0, 2.0, 0.2, -1.0, 5000, 10000), "volume only"),
        ((4.0, 2.0, 3.0, 1.0, 1000, 10000), "saturates early"),  # 90% at 1000 <= 10000 / 4
        ((0.2, -0.5, 3.0, 1.0, 5000, 10000), "size only"),
        ((0.2, -0.5, 0.1, -2.0, 5000, 10000), "flat"),
        ((4.0, -0.5, 0.1, -2.0, 5000, 10000), "flat"),  # big but uncertain: the interval reaches 0
    ],
)
def test_classify(args, expected):
    cls, evidence = growth.classify(*args)
    assert cls == expected and "pts/doubling" in evidence


def test_classify_without_interval_requirement():
    assert growth.classify(4.0, -0.5, 0.1, -2.0, 5000, 10000, require_interval=False)[0] == "volume only"


def test_pace_table_finds_the_classes_of_a_known_study():
    """Four abilities with the study's four behaviours, two sizes, scores measured on 20,000 items."""
    sizes = {"1B": 1e9, "4B": 4e9}
    curves = {}
    for size, extra in (("1B", 0.0), ("4B", 16.0)):  # a ceiling 16 points higher for two doublings of params
        curves[("code", size)] = growth.GrowthCurve(33, 33, 60 + extra, math.log2(3000), 0.8)
        curves[("reasoning", size)] = growth.GrowthCurve(25, 25, 65, math.log2(3000), 0.8)
        curves[("creative_writing", size)] = growth.GrowthCurve(33, 33, 60, math.log2(60), 2.0)
        curves[("ethics", size)] = growth.GrowthCurve(22, 22, 22.5, math.log2(500), 1.0)
    sel = _selected(curves, sizes, VOLUMES, items=20000, rng=np.random.default_rng(3))
    m = growth.measure(sel, None, samples=100, params=sizes)
    fits = growth.fit_curves(m)
    assert len(fits) == 8
    rows, abilities = growth.pace_table(fits, AnalysisSpec())
    got = {a["ability"]: a["class"] for a in abilities}
    assert got == {"code": "volume and size", "reasoning": "volume only", "creative_writing": "saturates early",
                   "ethics": "flat"}
    # Size sensitivity by its definition: score change per doubling of parameters at each volume, averaged.
    truth = np.mean((curves[("code", "4B")](VOLUMES) - curves[("code", "1B")](VOLUMES)) / 2)
    code = next(a for a in abilities if a["ability"] == "code")["size_gain_per_doubling"]
    assert code["value"] == pytest.approx(truth, abs=0.3) and code["lo"] <= truth <= code["hi"]


def test_extrapolation_error():
    true = growth.GrowthCurve(25, 25, 70, math.log2(300), 1.0)
    e = growth.extrapolation_error(VOLUMES, true(VOLUMES), 25, fraction=4)
    assert e["fit_volumes"] == VOLUMES[:5].tolist() and e["volume"] == VOLUMES[-1]
    assert abs(e["error"]) < 0.5
    # Too few small volumes to fit: NaN, not a guess.
    assert math.isnan(growth.extrapolation_error([10, 40, 160, 640], [1, 2, 3, 4], 0, fraction=8)["error"])


KNOWN = {  # per-ability curves against total volume (items of one ability x 10)
    "code": growth.GrowthCurve(33, 33, 80, math.log2(4000), 1.0),  # keeps growing
    "math": growth.GrowthCurve(0, 0, 40, math.log2(2500), 1.2),  # keeps growing
    "creative_writing": growth.GrowthCurve(33, 33, 60, math.log2(300), 2.0),  # saturates early
    "ethics": growth.GrowthCurve(22, 22, 22.5, 8, 1.0),  # flat
    "role_play": growth.GrowthCurve(33, 33, 33.5, 8, 1.0),  # flat
}


def _mean(alloc):
    return np.mean(list(growth.predicted_scores(KNOWN, alloc, 10).values()))


def test_recommender_beats_the_even_split_on_a_known_family():
    budget = 1000
    rec = growth.recommend(KNOWN, budget, per_ability=10, floor=0.1)
    even = growth.even_split(KNOWN, budget)
    assert sum(rec.values()) == budget
    assert _mean(rec) > _mean(even) + 1.0
    assert rec["ethics"] == rec["role_play"] == 20  # the floor: a tenth of the even share of 200
    assert rec["code"] > even["code"] and rec["math"] > even["math"]
    assert rec["creative_writing"] < even["creative_writing"]  # saturated past ~60 items
    # No allocation the greedy search could reach by moving a chunk is better.
    for a in rec:
        for b in rec:
            if a != b and rec[a] - 10 >= 20:  # not below the floor
                moved = {**rec, a: rec[a] - 10, b: rec[b] + 10}
                assert _mean(moved) <= _mean(rec) + 1e-6


def test_recommender_respects_availability_trust_and_flat_curves():
    rec = growth.recommend(KNOWN, 1000, per_ability=10, available={"code": 300, "math": 1000, "creative_writing": 1000,
                                                                    "ethics": 1000, "role_play": 1000})
    assert rec["code"] <= 300 and sum(rec.values()) == 1000
    # Held flat past 2,000 total (200 items): no ability gains beyond it, the rest is spread evenly.
    capped = growth.recommend(KNOWN, 1000, per_ability=10, trusted_volume=2000)
    assert max(capped["code"], capped["math"]) <= 250 and sum(capped.values()) == 1000
    flat = {a: growth.GrowthCurve(30, 30, 30.2, 8, 1) for a in ("ethics", "role_play", "math")}
    assert growth.recommend(flat, 300, per_ability=10) == {"ethics": 100, "role_play": 100, "math": 100}
    with pytest.raises(AllocationError):
        growth.recommend(flat, 300, per_ability=10, available={"ethics": 10, "role_play": 10, "math": 10})


def test_mix_output_is_a_spec_mix_that_reproduces_the_allocation():
    rec = growth.recommend(KNOWN, 1000, per_ability=10)
    mix = growth.as_mix(rec, "recommended-1000")
    Mix.model_validate(mix)  # the spec's data.mixes format
    assert mix["fill"] == "even" and mix["total"] == 1000
    assert even_counts(mix["total"], {a: 1000 for a in rec}, mix["caps"]) == {a: rec[a] for a in even_counts(
        mix["total"], {a: 1000 for a in rec}, mix["caps"])}


def test_reconstruct_reference_is_the_studys_mix():
    from growthpace.platform.core.abilities import ABILITIES

    r = growth.reconstruct_split(ABILITIES, 10000)
    assert (r["ethics"], r["role_play"], r["creative_writing"]) == (64, 64, 1000)
    assert sum(r.values()) == 10000 and {r[a] for a in ("code", "math", "biology")} <= {1267, 1268}


def test_recommendation_reports_gain_with_interval():
    fits = {}
    rng = np.random.default_rng(0)
    v = VOLUMES
    for a, c in KNOWN.items():
        reps = np.clip(c(v)[None, :] + rng.normal(0, 1.0, (100, len(v))), 0, 100)
        fits[(a, "7b")] = growth.CurveFit(a, "7b", 7e9, growth.fit_growth(v, c(v), c.baseline),
                                          growth.fit_growth_batch(v, reps, c.baseline), v, c(v), c(v), c(v))
    rec = growth.recommendation(fits, "7b", 640, per_ability=10)
    assert rec.gain["lo"] > 0 and rec.predicted["recommended"]["value"] > rec.predicted["even"]["value"]
    assert rec.mix["name"] == "recommended-640" and sum(rec.allocations["recommended"].values()) == 640


def test_params_from_label():
    assert growth.params_from_label("0.2M") == 2e5
    assert growth.params_from_label("7b") == 7e9 and growth.params_from_label("13B") == 13e9
    assert growth.params_from_label("large") is None
