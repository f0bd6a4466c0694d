"""The report's headline findings (analysis.findings, page.headline_sentences, page.console_lines) on
hand-made summaries where each finding is known to hold, or known not to."""

import pytest

from growthpace.platform.core.abilities import ABILITIES
from growthpace.platform.analysis.summary import findings
from growthpace.platform.report.page import console_lines, headline_sentences

# Labels that sort the wrong way as text: the largest size is "10M" by its parameter count.
PARAMS = {"9M": 9e6, "10M": 1e7}


def ci(value, lo, hi):
    return {"value": value, "lo": lo, "hi": hi}


def ood_change(change, over_base, r, *, means=(40.0, 45.0, 50.0), base=36.0):
    """transfer.ood_change's shape: 10M (the size findings read) with the given differences, and a 9M
    decoy that says the opposite."""
    def row(size, change, over_base, sign):
        return {"size": size, "smallest": 40, "largest": 640, "subjects": ["a", "b"], "baseline": 25.0,
                "volumes": [{"volume": v, "ood": ci(m, m - 5, m + 5)} for v, m in zip((40, 160, 640), means[::sign])],
                "base": ci(base, base - 5, base + 5), "change": change, "over_base": over_base, "per_subject": []}
    flip = lambda c: ci(-c["value"], -c["hi"], -c["lo"])  # noqa: E731
    return {"r": r, "rows": [row("9M", flip(change), flip(over_base), -1), row("10M", change, over_base, 1)]}


def summary(cell, gains, gaps, mean_gap, ood, *, ood_baseline=25.0, change=None):
    """cell: ability -> score ci at 10M / 640 (the cell findings must read); gains: ability -> (ci, class);
    gaps: ability -> gap ci at 10M / 640. Decoys at a smaller volume and the smaller size say the opposite."""
    measured = []
    for a in ABILITIES:
        measured.append({"size": "10M", "source": "curated", "volume": 640, "mix": "", "split": "test", "ability": a,
                         "score": cell[a]["value"], "lo": cell[a]["lo"], "hi": cell[a]["hi"], "baseline": 25.0})
        decoy = {"score": 90.0, "lo": 80.0, "hi": 99.0} if cell[a]["lo"] is None or cell[a]["lo"] <= 25 else \
            {"score": 25.0, "lo": 10.0, "hi": 40.0}
        for size, volume in (("10M", 160), ("9M", 640), ("9M", 2560)):
            measured.append({"size": size, "source": "curated", "volume": volume, "mix": "", "split": "test",
                             "ability": a, **decoy, "baseline": 25.0})
        measured.append({"size": "10M", "source": "synthetic", "volume": 2560, "mix": "", "split": "test",
                         "ability": a, **decoy, "baseline": 25.0})
    source_gap = []
    for a in ABILITIES:
        flipped = ci(-gaps[a]["value"], -(gaps[a]["hi"] or 0), -(gaps[a]["lo"] or 0))
        source_gap += [{"size": "10M", "volume": 640, "ability": a, "gap": gaps[a]},
                       {"size": "10M", "volume": 160, "ability": a, "gap": flipped},
                       {"size": "9M", "volume": 2560, "ability": a, "gap": flipped}]
    source_gap += [{"size": "10M", "volume": 640, "ability": "mean", "gap": mean_gap},
                   {"size": "10M", "volume": 160, "ability": "mean", "gap": ci(-mean_gap["value"], -50, 50)}]
    other = ci(ood_baseline - 20, ood_baseline - 30, ood_baseline - 10) if ood["lo"] > ood_baseline else \
        ci(ood_baseline + 20, ood_baseline + 10, ood_baseline + 30)
    transfer = {"r": ci(0.8, 0.5, 0.9), "rows": [
        {"size": "10M", "source": "curated", "volume": 640, "mix": "", "ood": ood, "ood_baseline": ood_baseline,
         "in_domain": ci(60, 55, 65)},
        {"size": "10M", "source": "synthetic", "volume": 640, "mix": "", "ood": other, "ood_baseline": ood_baseline,
         "in_domain": ci(30, 25, 35)},
        {"size": "9M", "source": "curated", "volume": 640, "mix": "", "ood": other, "ood_baseline": ood_baseline,
         "in_domain": ci(50, 45, 55)}]}
    return {
        "settings": {"volume_gain": 1.0}, "bootstrap": {"confidence": 0.95}, "params": PARAMS,
        "measured": measured,
        "abilities": [{"ability": a, "class": c, "range_gain_per_doubling": g} for a, (g, c) in gains.items()],
        "source_gap": source_gap, "transfer": transfer,
        "ood_change": change if change is not None else {"rows": [], "r": None},
    }


def holding():
    """7 of 10 above baseline; 3 fast abilities, 3 classes, math and ethics told apart; curated ahead on 6;
    OOD above its baseline."""
    cell = {a: ci(60.0, 45.0, 75.0) if i < 7 else ci(28.0, 15.0, 41.0) for i, a in enumerate(ABILITIES)}
    gains = {a: (ci(1.5, 0.2, 2.8), "volume only") for a in ABILITIES}
    gains |= {"math": (ci(5.0, 3.5, 6.5), "volume and size"), "code": (ci(4.0, 2.0, 6.0), "volume and size"),
              "biology": (ci(3.0, 1.0, 5.0), "volume only"), "ethics": (ci(0.1, -0.8, 0.9), "flat"),
              "chinese": (ci(0.3, -1.0, 1.6), "flat")}
    gaps = {a: ci(9.0, 2.0, 16.0) if i < 6 else ci(2.0, -5.0, 9.0) for i, a in enumerate(ABILITIES)}
    return summary(cell, gains, gaps, ci(6.2, 3.1, 9.3), ci(34.0, 29.0, 39.0),
                   change=ood_change(ci(10.0, 4.0, 16.0), ci(14.0, 8.0, 20.0), ci(0.6, 0.2, 0.85)))


def failing():
    """Nothing shows: every score's interval reaches its baseline, no pace is told apart, synthetic is
    ahead, OOD is below its baseline."""
    cell = {a: ci(27.0, 14.0, 40.0) for a in ABILITIES}
    gains = {a: (ci(0.4 + 0.1 * i, -0.6, 1.4 + 0.1 * i), "flat") for i, a in enumerate(ABILITIES)}
    gaps = {a: ci(-8.0, -15.0, -1.0) if i < 2 else ci(-1.0, -8.0, 6.0) for i, a in enumerate(ABILITIES)}
    return summary(cell, gains, gaps, ci(-2.5, -4.0, -1.0), ci(18.0, 12.0, 23.0),
                   change=ood_change(ci(-6.0, -9.0, -3.0), ci(-2.0, -7.0, 3.0), ci(-0.46, -0.63, -0.01),
                                     means=(49.2, 45.8, 39.2), base=41.0))


def test_findings_hold():
    h = findings(holding())
    assert (h["size"], h["volume"]) == ("10M", 640)
    assert h["above_baseline"]["count"] == 7 and h["above_baseline"]["of"] == 10
    assert [r["ability"] for r in h["above_baseline"]["rows"] if r["side"] == "above"] == list(ABILITIES[:7])
    p = h["pace"]
    assert p["fastest"] == ["math", "code", "biology"] and p["at_least_threshold"] == 3
    assert p["flat"] == ["chinese", "ethics"]  # fastest first
    assert p["class_count"] == 3 and p["classes"]["flat"] == 2
    assert p["non_overlapping"] and p["widest_pair"] == {"faster": "math", "slower": "ethics", "separated": True}
    s = h["sources"]
    assert (s["size"], s["volume"], s["a_better"], s["b_better"], s["of"]) == ("10M", 640, 6, 0, 10)
    assert s["mean"]["gap"]["value"] == 6.2 and s["mean"]["side"] == "above"
    t = h["transfer"]
    assert t["side"] == "above" and t["ood"]["value"] == 34.0 and t["baseline"] == 25.0

    oc = h["ood_change"]
    assert oc["row"]["size"] == "10M" and oc["shown"] and not oc["falls"]
    assert (oc["change_side"], oc["base_side"], oc["r_side"]) == ("above", "above", "above")

    text = headline_sentences(h)
    assert len(text) == 6
    assert "(10M at 640 curated items), 7 of 10 abilities score above their random baseline" in text[0]
    assert text[1].startswith("Fastest growing") and "math 5.0 [3.5, 6.5], code 4.0 [2.0, 6.0]" in text[1]
    assert "3 of 10 abilities clear it" in text[1]
    assert "Flat: " in text[2] and "ethics 0.1 [-0.8, 0.9]" in text[2] and "3 pace classes" in text[2]
    assert "do not overlap" in text[2]
    assert "6.2 [3.1, 9.3] points on average (curated beats synthetic); 6 of 10" in text[3]
    assert "34.0 [29.0, 39.0] against its random baseline 25.0: above it, the interval excluding it" in text[4]
    assert "Cross-ability transfer" not in text[4]  # a level above chance is no transfer finding
    assert text[5].startswith("Cross-ability transfer: OOD rises with instruction data (640 minus 40 items "
                              "10.0 [4.0, 16.0] points, minus the untuned base 14.0 [8.0, 20.0]")
    assert "OOD means on 10M: untuned base 36.0, 40 items 40.0, 160 items 45.0, 640 items 50.0." in text[5]


def test_findings_do_not_hold_and_the_sentences_say_so():
    h = findings(failing())
    assert h["above_baseline"]["count"] == 0
    p = h["pace"]
    assert p["fastest"] == [] and p["at_least_threshold"] == 0 and p["class_count"] == 1
    assert not p["non_overlapping"] and not p["widest_pair"]["separated"]
    s = h["sources"]
    assert s["a_better"] == 0 and s["b_better"] == 2 and s["mean"]["side"] == "below"
    assert h["transfer"]["side"] == "below"

    text = headline_sentences(h)
    assert "0 of 10 abilities score above" in text[0] and text[0].endswith("excluding it.")
    assert text[1].startswith("No ability's gain per doubling of data has its 95% interval at or above 1 point")
    assert "the fastest measured is ethics at 1.3 [-0.6, 2.3]" in text[1]
    assert text[2].startswith("All 10 abilities are flat, from biology 0.4 [-0.6, 1.4] to ethics 1.3 [-0.6, 2.3]. "
                              "1 pace class (flat 10); every two abilities' gain intervals overlap")
    assert "(synthetic beats curated); 0 of 10 abilities' gap intervals exclude 0 in curated's favour, 2 in synthetic's" \
        in text[3]
    assert "below it, the interval excluding it" in text[4]
    # OOD falls from the smallest volume (its interval below 0), not from the base (it reaches 0), and
    # follows in-domain the other way: forgetting, said with its numbers, never "transfer".
    oc = h["ood_change"]
    assert oc["falls"] and not oc["shown"] and (oc["change_side"], oc["base_side"], oc["r_side"]) == ("below", None, "below")
    assert oc["falls_excluding_0"] == 1
    assert text[5].startswith("No cross-ability transfer: OOD falls with tuning (forgetting): 640 minus 40 items "
                              "-6.0 [-9.0, -3.0] points, minus the untuned base -2.0 [-7.0, 3.0] (one interval below "
                              "0); across curated settings OOD and in-domain means correlate at r = -0.46 [-0.63, -0.01]")
    assert "40 items 49.2, 160 items 45.8, 640 items 39.2" in text[5]
    assert not any(t.startswith("Cross-ability transfer") for t in text)


def test_a_negative_change_is_said_as_forgetting_even_when_its_interval_reaches_0():
    s = holding()
    s["ood_change"] = ood_change(ci(-5.8, -13.4, 0.8), ci(-6.7, -15.0, 1.7), ci(-0.8, -0.91, -0.08))
    h = findings(s)
    assert h["ood_change"]["falls"] and h["ood_change"]["falls_excluding_0"] == 0 and not h["ood_change"]["shown"]
    assert headline_sentences(h)[5].startswith(
        "No cross-ability transfer: OOD falls with tuning (forgetting): 640 minus 40 items -5.8 [-13.4, 0.8] points, "
        "minus the untuned base -6.7 [-15.0, 1.7] (neither interval excludes 0)")


def test_transfer_not_shown_when_any_of_its_three_intervals_reaches_0():
    s = holding()
    s["ood_change"] = ood_change(ci(10.0, 4.0, 16.0), ci(14.0, 8.0, 20.0), ci(0.5, -0.1, 0.8))
    h = findings(s)
    assert not h["ood_change"]["shown"] and not h["ood_change"]["falls"]
    assert headline_sentences(h)[5].startswith("Cross-ability transfer not shown: 640 minus 40 items 10.0 [4.0, 16.0]")


def test_an_interval_that_reaches_the_level_excludes_nothing():
    s = holding()
    for r in s["measured"]:
        if r["size"] == "10M" and r["volume"] == 640 and r["ability"] == "biology":
            r["lo"] = None  # an open end: the bootstrap could not bound it
    s["transfer"]["rows"][0]["ood"] = ci(30.0, 25.0, 35.0)  # lower end exactly at the baseline
    s["source_gap"][-2]["gap"] = ci(3.0, 0.0, 6.0)
    h = findings(s)
    assert h["above_baseline"]["count"] == 6
    assert h["transfer"]["side"] is None and "not distinguishable from it" in headline_sentences(h)[4]
    assert h["sources"]["mean"]["side"] is None
    assert "curated and synthetic are not told apart" in headline_sentences(h)[3]


def test_missing_parts_are_said_not_invented():
    s = holding()
    s["abilities"], s["source_gap"], s["transfer"] = [], [], {"rows": [], "r": None}
    s["ood_change"] = {"rows": [], "r": None}
    h = findings(s)
    text = headline_sentences(h)
    assert h["pace"]["widest_pair"] is None and h["sources"]["mean"] is None and h["transfer"]["ood"] is None
    assert text[1].startswith("No growth curves were fitted")
    assert text[2].startswith("No curated/synthetic pair at the same volume at size 10M")
    assert text[3].startswith("No OOD scores at 10M at 640 curated items")
    s["measured"] = []
    assert headline_sentences(findings(s)) == ["No curated test scores in this study: no headline findings."]


@pytest.mark.parametrize("uri, expect", [
    ("sqlite:///runs/local/mlflow.db",
     "MLflow UI: .venv/bin/mlflow ui --backend-store-uri sqlite:///runs/local/mlflow.db --host 127.0.0.1"),
    ("http://mlflow.team:5000", "MLflow UI: http://mlflow.team:5000"),
])
def test_console_lines(uri, expect):
    s = holding()
    s["headline"] = findings(s)
    lines = console_lines(s, "runs/local/report/index.html", uri)
    assert lines[0] == "report: runs/local/report/index.html"
    assert lines[-1].startswith(expect)
    assert lines[1].startswith("  Scores use the letter formulation")  # no formulation in the summary: the study's
    assert lines[2:-1] == [f"  {x}" for x in headline_sentences(s["headline"])]
