"""The one best-epoch rule: past the warm-up, best valid score, the earlier epoch on ties."""

import polars as pl

from growthpace.platform.core.selection import best_epoch_overall, best_epoch_per_ability, best_valid_epoch


def _scores(valid: dict[str, list[float]], epochs: int = 4, cell: str = "c") -> pl.DataFrame:
    return pl.DataFrame([
        {"cell_id": cell, "epoch": e + 1, "epochs": epochs, "split": "valid", "ability": a, "score": s}
        for a, series in valid.items() for e, s in enumerate(series)
    ])


def test_warmup_epochs_are_never_selected():
    s = _scores({"code": [99.0, 10.0, 30.0, 20.0]})
    assert best_valid_epoch(s, 0) == 1
    assert best_valid_epoch(s, 1) == 3
    assert best_valid_epoch(s, lambda epochs: epochs - 1) == 4  # callable warm-up reads the planned epochs
    assert best_valid_epoch(s, 4) is None


def test_ties_go_to_the_earlier_epoch():
    s = _scores({"code": [10.0, 50.0, 50.0, 50.0]})
    assert best_valid_epoch(s, 0) == 2
    assert best_epoch_per_ability(s, 0)["selected_epoch"].to_list() == [2]


def test_per_ability_and_overall_differ_where_abilities_disagree():
    s = _scores({"code": [10.0, 80.0, 20.0], "math": [60.0, 10.0, 70.0]}, epochs=3)
    per = dict(best_epoch_per_ability(s, 0).select("ability", "selected_epoch").iter_rows())
    assert per == {"code": 2, "math": 3}
    # means: 35, 45, 45 -> epoch 2 (tie to the earlier)
    assert best_epoch_overall(s, 0)["selected_epoch"].to_list() == [2]
    assert best_valid_epoch(s.filter(pl.col("split") == "test"), 0) is None
