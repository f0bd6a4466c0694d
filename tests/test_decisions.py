"""Size hold-out, decision accuracy and paired tests (platform/analysis/decisions.py) on synthetic data whose truth is known."""

import math

import numpy as np
import polars as pl
import pytest

from growthpace.platform.analysis import decisions
from growthpace.platform.analysis import growth

PARAMS = {"1M": 1e6, "4M": 4e6, "16M": 16e6, "64M": 64e6}
VOLUMES = [10, 40, 160, 640, 2560]
ABILITIES = ["code", "math", "ethics"]
ITEMS = 1500


def _ladder(size: str, ability: str, jump: float = 0.0) -> growth.GrowthCurve:
    """Curve parameters linear in log2 params (ceiling +3 points, midpoint -0.25 per doubling); `jump`
    adds points to the largest size's ceiling only, which no ladder of the smaller sizes can see."""
    d = math.log2(PARAMS[size] / 1e6)
    i = ABILITIES.index(ability)
    ceiling = 45 + 3 * i + 3.0 * d + (jump if size == "64M" else 0.0)
    return growth.GrowthCurve(25.0, 25.0, min(ceiling, 99.0), 7.0 + i - 0.25 * d, 1.2)


def _study(curve_of, seed: int = 0, items: int = ITEMS, sizes=PARAMS):
    """(selected, verdicts) for every size x volume x ability, verdicts drawn from the true score."""
    rng = np.random.default_rng(seed)
    sel, ver = [], []
    for size in sizes:
        for source in ("curated", "synthetic"):
            for v in VOLUMES:
                cell = f"{size}-{source}-{v}"
                for a in ABILITIES:
                    p = curve_of(size, a, source, v) / 100
                    correct = rng.random(items) < p
                    sel.append({"cell_id": cell, "size": size, "source": source, "volume": v, "mix": "", "seed": 0,
                                "split": "test", "ability": a, "score": 100 * correct.mean(), "items": items,
                                "expected": 25.0, "selected_epoch": 1})
                    ver += [{"cell_id": cell, "split": "test", "ability": a, "idx": str(i), "correct": bool(c)}
                            for i, c in enumerate(correct)]
    return pl.DataFrame(sel), pl.DataFrame(ver)


def _measured(curve_of, **kw):
    selected, verdicts = _study(curve_of, **kw)
    m = growth.measure(selected, verdicts, samples=100, seed=0, params=PARAMS)
    return m, growth.fit_curves(m)


def _by_ability(out):
    return {r["ability"]: r for r in out["rows"]}


@pytest.mark.parametrize("method", ["curve", "score", "auto"])
def test_holdout_small_sizes_predict_a_ladder_family(method):
    m, fits = _measured(lambda s, a, src, v: float(_ladder(s, a)(v)))
    out = decisions.size_holdout(m, fits, method=method)
    assert out["target"] == "64M" and out["fitted_on"] == ["1M", "4M", "16M"]
    rows = _by_ability(out)
    assert set(rows) == set(ABILITIES)
    for r in rows.values():
        assert r["mae"] < 3.0 and r["lo"] <= r["mae"] <= r["hi"]
        # the second-largest size sits ~6 points below where the ceiling has been reached
        assert r["baseline_mae"] > r["mae"] + 1.0
        assert len(r["volumes"]) == len(VOLUMES)
    if method == "score":  # extrapolated curve parameters are noisier where a curve has not turned yet
        assert all(r["verdict"] == "usable" for r in rows.values())


def test_holdout_flags_a_family_the_small_sizes_do_not_predict():
    m, fits = _measured(lambda s, a, src, v: float(_ladder(s, a, jump=25.0)(v)))
    rows = _by_ability(decisions.size_holdout(m, fits, method="curve"))
    for r in rows.values():
        assert r["lo"] > decisions.HOLDOUT_TOLERANCE  # the error is certainly large
        assert r["verdict"] != "usable"


def test_ladder_recovers_linear_parameters_exactly():
    x = np.log2([1e6, 4e6, 16e6])
    vals = np.stack([[25, 45 + 3 * d, 7 - 0.25 * d, 1.2] for d in (0, 2, 4)]).astype(float)
    got = decisions.extrapolate_in_size(x, vals[None], math.log2(64e6))[0]
    assert got == pytest.approx([25, 45 + 18, 7 - 1.5, 1.2])


def test_decision_accuracy_perfect_when_rankings_hold_and_low_when_they_flip():
    def steady(s, a, src, v):
        return float(_ladder(s, a)(v)) - (12.0 if src == "synthetic" else 0.0)

    m, _ = _measured(steady, items=600)
    out = decisions.decision_accuracy(m, PARAMS, seed=0)
    rows = _by_ability(out)
    assert rows["all"]["agree"] > 0.9 and rows["all"]["pairs"] == len(ABILITIES) * 3 * (5 + 2 * 10)
    assert rows["code"]["kinds"] == {"source": 15, "volume": 60}
    assert rows["all"]["by_kind"]["source"] == 1.0

    def flipped(s, a, src, v):  # synthetic wins at the small sizes, loses at the largest
        base = float(_ladder(s, a)(v))
        if src == "synthetic":
            return base + (12.0 if s != "64M" else -12.0)
        return base

    m2, _ = _measured(flipped, items=600)
    rows2 = _by_ability(decisions.decision_accuracy(m2, PARAMS, seed=0))
    # every source pair disagrees, volume pairs still agree as often as in the steady family
    assert rows2["all"]["by_kind"]["source"] == 0.0
    assert rows2["all"]["by_kind"]["volume"] == pytest.approx(rows["all"]["by_kind"]["volume"], abs=0.05)
    assert rows2["all"]["agree"] < rows["all"]["agree"] - 0.15 and rows2["all"]["hi"] < rows["all"]["lo"]
    assert rows2["all"]["lo"] <= rows2["all"]["agree"] <= rows2["all"]["hi"]


def test_setting_pairs_are_what_the_spec_compares():
    pairs = decisions.setting_pairs([("curated", 10, ""), ("synthetic", 10, ""), ("curated", 40, ""),
                                     ("mix", 320, "even-320"), ("mix", 320, "recommended-320")])
    kinds = sorted(k for k, _, _ in pairs)
    assert kinds == ["mix", "source", "volume"]
    src = next(p for p in pairs if p[0] == "source")
    assert src[1][0] == "curated" and src[2][0] == "synthetic"
    vol = next(p for p in pairs if p[0] == "volume")
    assert vol[1][1] == 40  # the larger volume first: a positive gap = more data helps


@pytest.mark.parametrize("seeds", [1, 2])
def test_paired_null_false_positive_rate_is_near_nominal(seeds):
    """Two equal settings (same item difficulties): p <= 0.05 about 5% of the time. One seed: 0/1
    verdicts, McNemar; two seeds: averaged verdicts (0, 0.5, 1), the sign-flip test."""
    rng = np.random.default_rng(1)
    n_sims, items, hits = 1000, 120, 0
    for _ in range(n_sims):
        p = rng.uniform(0.2, 0.8, items)
        a = np.mean([rng.random(items) < p for _ in range(seeds)], axis=0)
        b = np.mean([rng.random(items) < p for _ in range(seeds)], axis=0)
        r = decisions.paired_test([(a, b)], samples=20, rng=rng)
        assert r.test == ("mcnemar" if seeds == 1 else "sign-flip")
        hits += r.p <= 0.05
    assert 0.03 <= hits / n_sims <= 0.07


def test_mcnemar_exact_known_case():
    # 10 discordant items, 9 of them for a: two-sided p = 2 * P(X <= 1 | n=10) = 22 / 1024
    a = np.array([1] * 9 + [0] + [1] * 5 + [0] * 5, dtype=bool)
    b = np.array([0] * 9 + [1] + [1] * 5 + [0] * 5, dtype=bool)
    assert decisions.mcnemar_p(a, b) == pytest.approx(22 / 1024)
    assert decisions.mcnemar_p(a, a) == 1.0


def test_paired_detects_a_real_gap_and_its_interval_covers_it():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.2, 0.7, 2000)
    a, b = rng.random(2000) < p + 0.1, rng.random(2000) < p
    r = decisions.paired_test([(a, b)], samples=500, rng=rng)
    assert r.p < 0.001 and r.lo < 10.0 < r.hi and r.items == 2000


def test_benjamini_hochberg_known_case():
    # the textbook example: m = 5, p sorted 0.01, 0.02, 0.03, 0.04, 0.05 -> every q is 0.05
    assert decisions.benjamini_hochberg([0.03, 0.01, 0.05, 0.02, 0.04]) == pytest.approx([0.05] * 5)
    q = decisions.benjamini_hochberg([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    # Benjamini & Hochberg: q_(i) = min_{j >= i} p_(j) m / j
    assert q[:3] == pytest.approx([0.01, 0.04, 0.084])
    assert q[4] == pytest.approx(0.084) and q[-1] == pytest.approx(0.216)
    assert np.isnan(decisions.benjamini_hochberg([0.01, math.nan])[1])


def test_paired_rows_from_verdicts_with_costs_and_bh():
    def gap(s, a, src, v):
        return float(_ladder(s, a)(v)) - (15.0 if src == "synthetic" and a == "code" else 0.0)

    selected, verdicts = _study(gap, items=300, sizes={"1M": 1e6, "4M": 4e6})
    costs = decisions.setting_costs(selected, {c: {"gpu_hours": 0.5, "core_hours": 2.0, "basis": "measured"}
                                               for c in selected["cell_id"].unique().to_list()})
    out = decisions.paired(decisions.item_means(verdicts, selected), samples=200, costs=costs)
    rows = out["rows"]
    assert len(rows) == 2 * len(VOLUMES) * len(ABILITIES)
    code = [r for r in rows if r["ability"] == "code"]
    assert all(r["significant"] and r["gap"] > 5 for r in code if r["a"].endswith(("-640", "-2560")))
    assert all(r["cost"]["gpu_hours"] == pytest.approx(1.0) for r in rows)  # two cells of 0.5 GPU-h
    assert all(r["q"] >= r["p"] for r in rows)
    assert rows[0]["a"].startswith("1M/curated-") and rows[0]["b"].startswith("1M/synthetic-")


def test_costs_add_up_and_an_unknown_cell_makes_the_sum_unknown():
    measured = {"gpu_hours": 1.0, "core_hours": 4.0, "basis": "measured"}
    planned = {"gpu_hours": 2.0, "core_hours": None, "basis": "plan"}
    both = decisions.add_costs(measured, planned)
    assert both["gpu_hours"] == 3.0 and both["core_hours"] is None and both["basis"] == "measured+plan"
    again = decisions.add_costs(both, measured)
    assert again["gpu_hours"] == 4.0 and again["basis"] == "measured+plan" and again["cells"] == 3
    assert decisions.add_costs(measured, {"gpu_hours": None, "core_hours": None, "basis": "unknown"})["gpu_hours"] is None
    assert decisions.add_costs()["gpu_hours"] is None


def test_recommendation_check_is_paired_per_ability_and_on_the_mean():
    rng = np.random.default_rng(3)
    sel, ver = [], []
    lift = {"code": 0.25, "math": 0.25, "ethics": 0.0}  # the recommended mix helps two abilities of three
    for mix in ("even-320", "recommended-320"):
        for a in ABILITIES:
            p = 0.4 + (lift[a] if mix.startswith("recommended") else 0.0)
            correct = rng.random(200) < p
            sel.append({"cell_id": mix, "size": "1M", "source": "mix", "volume": 320, "mix": mix, "seed": 0,
                        "split": "test", "ability": a})
            ver += [{"cell_id": mix, "split": "test", "ability": a, "idx": str(i), "correct": bool(c)}
                    for i, c in enumerate(correct)]
    out = decisions.paired(decisions.item_means(pl.DataFrame(ver), pl.DataFrame(sel)), samples=300)
    rows = {r["ability"]: r for r in out["rows"]}
    assert set(rows) == {*ABILITIES, "mean"}
    assert all(r["kind"] == "recommendation" and r["a"] == "1M/mix:recommended-320" and r["b"] == "1M/mix:even-320"
               for r in rows.values())
    assert rows["code"]["significant"] and rows["math"]["significant"] and not rows["ethics"]["significant"]
    mean = rows["mean"]
    expected = np.mean([rows[a]["gap"] for a in ABILITIES])
    assert mean["gap"] == pytest.approx(expected) and mean["lo"] < expected < mean["hi"] and mean["significant"]
    assert mean["items"] == 3 * 200
