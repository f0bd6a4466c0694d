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


def summary(cell, gains, gaps, mean_gap, ood, *, ood_baseline=25.0):
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
    return summary(cell, gains, gaps, ci(6.2, 3.1, 9.3), ci(34.0, 29.0, 39.0))


def failing():
    """Nothing shows: every score's interval reaches its baseline, no pace is told apart, synthetic is
    ahead, OOD is below its baseline."""
    cell = {a: ci(27.0, 14.0, 40.0) for a in ABILITIES}
    gains = {a: (ci(0.4 + 0.1 * i, -0.6, 1.4 + 0.1 * i), "flat") for i, a in enumerate(ABILITIES)}
    gaps = {a: ci(-8.0, -15.0, -1.0) if i < 2 else ci(-1.0, -8.0, 6.0) for i, a in enumerate(ABILITIES)}
    return summary(cell, gains, gaps, ci(-2.5, -4.0, -1.0), ci(18.0, 12.0, 23.0))


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
    assert (s["size"], s["volume"], s["curated_better"], s["synthetic_better"], s["of"]) == ("10M", 640, 6, 0, 10)
    assert s["mean"]["gap"]["value"] == 6.2 and s["mean"]["side"] == "above"
    t = h["transfer"]
    assert t["side"] == "above" and t["ood"]["value"] == 34.0 and t["baseline"] == 25.0

    text = headline_sentences(h)
    assert len(text) == 5
    assert "(10M at 640 curated items), 7 of 10 abilities score above their random baseline" in text[0]
    assert text[1].startswith("Fastest growing") and "math 5.0 [3.5, 6.5], code 4.0 [2.0, 6.0]" in text[1]
    assert "3 of 10 abilities clear it" in text[1]
    assert "Flat: " in text[2] and "ethics 0.1 [-0.8, 0.9]" in text[2] and "3 pace classes" in text[2]
    assert "do not overlap" in text[2]
    assert "6.2 [3.1, 9.3] points on average (curated beats synthetic); 6 of 10" in text[3]
    assert "34.0 [29.0, 39.0] against its random baseline 25.0: above it, the interval excluding it" in text[4]


def test_findings_do_not_hold_and_the_sentences_say_so():
    h = findings(failing())
    assert h["above_baseline"]["count"] == 0
    p = h["pace"]
    assert p["fastest"] == [] and p["at_least_threshold"] == 0 and p["class_count"] == 1
    assert not p["non_overlapping"] and not p["widest_pair"]["separated"]
    s = h["sources"]
    assert s["curated_better"] == 0 and s["synthetic_better"] == 2 and s["mean"]["side"] == "below"
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
