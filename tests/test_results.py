"""The result store: stored predictions re-scored without a model, and what changed counted per kind."""

from __future__ import annotations

import polars as pl

from growthpace.evaluators.results import (
    eval_set_hash, flatten_sets, prediction_rows, rescore, result_key, store, stored_key,
)
from growthpace.evaluators.scoring import Prediction
from growthpace.platform.core.allocation import Allocation
from growthpace.platform.core.cells import Cell
from growthpace.platform.core.items import Record
from growthpace.platform.store.storage import Layout, read_json
from growthpace.platform.store.tables import ResultKey

FOUR = Record("biology", "4", (("user", "哪个是器官？\nA. 心脏\nB. 水\nC. 盐\nD. 糖"), ("assistant", "A")), 0)
RANK = Record("code", "r", (("user", "写一个函数"), ("assistant", "def f(): pass")), 1, ("def f(): pass", "no", "maybe"))


def test_rescore_rewrites_verdicts_and_counts_the_changed_ones(tmp_path):
    layout = Layout(tmp_path / "store")
    cell = Cell(cell_id="c0ffee0003", study="t", model="llama-nano", size="s", source="curated", volume=10, mix=None,
                seed=0, allocation=Allocation({"biology": 10}), epochs=1, training={})
    sets = {("test", "biology"): [FOUR], ("test", "code"): [RANK]}
    keys, flat = flatten_sets(sets)
    preds = [Prediction(text="A", letter_logprobs={"A": -0.1, "B": -2.0, "C": -3.0, "D": -4.0}),
             Prediction(candidate_nll=(0.5, 1.0, 2.0))]
    key = result_key("ckhash", eval_set_hash(sets, {}))
    rows = pl.DataFrame(prediction_rows(cell.cell_id, 1, key, "transformers", keys, flat, preds))
    assert rows["correct"].to_list() == [True, True]
    # a stored verdict an older scorer got wrong: only that one changes
    store(layout, cell.cell_id, 1, ResultKey("ckhash", "old", "0"), rows.with_columns(correct=pl.Series([False, True])))
    done = rescore([cell], layout, sets, {})
    assert (done.files, done.verdicts, dict(done.changed)) == (1, 2, {"choice": 1})
    assert pl.read_parquet(layout.cell_predictions(cell.cell_id, 1))["correct"].to_list() == [True, True]
    assert stored_key(layout, cell.cell_id, 1) == key  # re-keyed under the current eval sets and scorer
    assert pl.read_parquet(layout.cell_scores(cell.cell_id, 1))["score"].to_list() == [100.0, 100.0]
    assert read_json(layout.cell_result(cell.cell_id, 1))["backend"] == "transformers"
    again = rescore([cell], layout, sets, {})
    assert (again.files, sum(again.changed.values())) == (1, 0)


def test_rescore_refuses_an_item_put_another_way_since_it_was_predicted_and_rewrites_nothing(tmp_path):
    from dataclasses import replace

    import pytest

    from growthpace.platform.core.formulation import formulate
    from growthpace.platform.store.storage import StoredFileError

    layout = Layout(tmp_path / "store")
    cell = Cell(cell_id="c0ffee0004", study="t", model="llama-nano", size="s", source="curated", volume=10, mix=None,
                seed=0, allocation=Allocation({"ethics": 10}), epochs=1, training={})
    ethics = Record("ethics", "e", (("user", "Which are wrong?\nA. lie\nB. help\nC. cheat\nD. thank"),
                                    ("assistant", "AC")), 0)
    as_letters = {("test", "ethics"): [ethics], ("test", "code"): [RANK]}
    keys, flat = flatten_sets(as_letters)
    rows = pl.DataFrame(prediction_rows(cell.cell_id, 1, ResultKey("ckhash", "a", "0"), "transformers", keys, flat,
                                        [Prediction(text="AC"), Prediction(candidate_nll=(0.5, 1.0, 2.0))]))
    store(layout, cell.cell_id, 1, ResultKey("ckhash", "a", "0"), rows)
    before = layout.cell_predictions(cell.cell_id, 1).read_bytes()
    # the same item ranked as sets now (15 candidates), or a ranked item with a fourth candidate
    as_sets = {("test", "ethics"): [formulate(ethics, "cloze")], ("test", "code"): [RANK]}
    four = {("test", "ethics"): [ethics], ("test", "code"): [replace(RANK, choices=(*RANK.choices, "x"))]}
    for sets, why in ((as_sets, "multi_select, but the eval sets now make it perplexity over 15 candidates"),
                      (four, "perplexity over 3 candidates, but the eval sets now make it perplexity over 4 candidates")):
        with pytest.raises(StoredFileError,
                           match=rf"epoch_001.parquet: item test/\w+/\w was predicted as {why}: it changed since"):
            rescore([cell], layout, sets, {})
        assert layout.cell_predictions(cell.cell_id, 1).read_bytes() == before
    assert rescore([cell], layout, as_letters, {}).verdicts == 2  # the form it was predicted in still rescored
