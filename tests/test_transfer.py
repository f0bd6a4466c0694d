"""Finding (iii) as the study measures it (platform/analysis/transfer.py): the OOD change with curated
volume and over the untuned base, on per-item verdicts made so that the truth is known."""

import numpy as np
import polars as pl
import pytest

from growthpace.platform.analysis import growth, transfer
from growthpace.platform.core.cells import BASE_SOURCE

SUBJECTS = ["physician", "teacher", "planner"]
ABILITIES = ["biology", "code"]
N = 40  # items per subject / ability


def study(ood: dict[str, dict[int, float]], test: dict[str, dict[int, float]]):
    """(selected, verdicts): per size, volume (0 = the untuned base) -> fraction correct; the first
    round(p * N) items of every subject / ability are the correct ones (nested: what a larger fraction
    gets right includes what a smaller one does)."""
    sel, ver = [], []
    for size in ood:
        for volume in ood[size]:
            source = BASE_SOURCE if volume == 0 else "curated"
            cell = f"{size}-{source}-{volume}"
            for split, names, p in (("ood", SUBJECTS, ood[size][volume]), ("test", ABILITIES, test[size][volume])):
                for name in names:
                    k = round(p * N)
                    sel.append({"cell_id": cell, "size": size, "source": source, "volume": volume, "mix": "",
                                "seed": 0, "split": split, "ability": name, "score": 100.0 * k / N,
                                "expected": 25.0, "items": N, "selected_epoch": 0})
                    ver += [{"cell_id": cell, "split": split, "ability": name, "idx": str(i), "correct": i < k}
                            for i in range(N)]
    return pl.DataFrame(sel), pl.DataFrame(ver)


def measured(selected, verdicts, samples=400):
    return growth.measure(selected, verdicts, samples=samples, seed=0, confidence=0.95)


RISES = {"0.6M": {0: 0.30, 40: 0.40, 160: 0.55, 640: 0.70}}
FALLS = {"0.2M": {0: 0.65, 40: 0.60, 160: 0.50, 640: 0.35}}


def test_ood_rising_with_volume_and_over_the_base_is_transfer():
    sel, ver = study({**RISES, **FALLS}, {"0.6M": {0: 0.2, 40: 0.3, 160: 0.5, 640: 0.7},
                                          "0.2M": {0: 0.2, 40: 0.25, 160: 0.4, 640: 0.5}})
    out = transfer.ood_change(measured(sel, ver))
    rows = {r["size"]: r for r in out["rows"]}
    up = rows["0.6M"]
    assert (up["smallest"], up["largest"], up["subjects"]) == (40, 640, sorted(SUBJECTS))
    assert [v["volume"] for v in up["volumes"]] == [40, 160, 640]
    assert [v["ood"]["value"] for v in up["volumes"]] == pytest.approx([40.0, 55.0, 70.0])
    assert up["base"]["value"] == pytest.approx(30.0)
    assert up["change"]["value"] == pytest.approx(30.0) and up["change"]["lo"] > 0
    assert up["over_base"]["value"] == pytest.approx(40.0) and up["over_base"]["lo"] > 0
    # Paired over the same items: the difference's interval is narrower than either mean's.
    width = lambda c: c["hi"] - c["lo"]  # noqa: E731
    assert width(up["change"]) < width(up["volumes"][-1]["ood"])
    down = rows["0.2M"]
    assert down["change"]["value"] == pytest.approx(-25.0) and down["change"]["hi"] < 0
    assert down["over_base"]["value"] == pytest.approx(-30.0) and down["over_base"]["hi"] < 0
    assert [s["subject"] for s in down["per_subject"]] == sorted(SUBJECTS)
    one = down["per_subject"][0]
    assert one["scores"] == {"40": 60.0, "160": 50.0, "640": 35.0} and one["base"] == pytest.approx(65.0)
    assert one["change"]["value"] == pytest.approx(-25.0)
    # r over the curated settings of both sizes: in-domain rises everywhere, OOD rises on one size only.
    assert out["r"] is not None and -1 <= out["r"]["value"] <= 1


def test_r_is_over_curated_settings_and_says_which_way_they_move():
    both_up = study(RISES, {"0.6M": {0: 0.2, 40: 0.3, 160: 0.5, 640: 0.7}})
    r = transfer.ood_change(measured(*both_up))["r"]
    assert r["value"] == pytest.approx(np.corrcoef([30, 50, 70], [40, 55, 70])[0, 1]) and r["value"] > 0.99
    opposite = study(FALLS, {"0.2M": {0: 0.2, 40: 0.3, 160: 0.5, 640: 0.7}})
    assert transfer.ood_change(measured(*opposite))["r"]["value"] < -0.95


def test_the_bases_rows_change_no_other_number():
    sel, ver = study({**RISES, **FALLS}, {"0.6M": {0: 0.2, 40: 0.3, 160: 0.5, 640: 0.7},
                                          "0.2M": {0: 0.2, 40: 0.25, 160: 0.4, 640: 0.5}})
    cells = sel.filter(pl.col("source") != BASE_SOURCE)
    alone = measured(cells, ver)
    beside = transfer.without_base(measured(sel, ver))
    assert beside.rows.drop("lo", "hi").equals(alone.rows.drop("lo", "hi"))
    assert np.array_equal(beside.boot, alone.boot, equal_nan=True)


def test_without_a_base_or_a_second_volume_the_difference_is_absent_not_zero():
    sel, ver = study({"0.6M": {40: 0.4}}, {"0.6M": {40: 0.3}})
    row = transfer.ood_change(measured(sel, ver))["rows"][0]
    assert row["base"] is None and row["over_base"] is None and row["change"] is None
    assert row["volumes"][0]["ood"]["value"] == pytest.approx(40.0)
    assert transfer.ood_change(measured(sel.filter(pl.col("split") == "test"), ver)) == {"rows": [], "r": None}
