"""The stored tables and the result key, each defined once (platform/store/tables.py): the key's string
form round-trips, what the writers write is what the read-back check asks for, a table lacking a column
some reader uses is refused naming the file and the column, and a command reads the eval sets once."""

from __future__ import annotations

import polars as pl
import pytest
import yaml

from growthpace.evaluators.results import (collect_scores, flatten_sets, prediction_rows, result_key, stored_key,
                                           store)
from growthpace.evaluators.scoring import SCORER_VERSION, Prediction
from growthpace.platform.core.allocation import Allocation
from growthpace.platform.core.cells import Cell
from growthpace.platform.core.items import Record
from growthpace.platform.store.storage import Layout, StoredFileError, check_table, read_json, read_parquet, write_json
from growthpace.platform.store.tables import CELL_SCORES, PREDICTIONS, SCORES, ResultKey

ITEM = Record("biology", "4", (("user", "Which?\nA. heart\nB. water\nC. salt\nD. sugar"), ("assistant", "A")), 0)


def _cell(cell_id: str = "c0ffee0010") -> Cell:
    return Cell(cell_id=cell_id, study="t", model="llama-nano", size="s", source="curated", volume=10, mix=None,
                seed=0, allocation=Allocation({"biology": 10}), epochs=1, training={})


def test_result_key_round_trips_its_string_form_on_disk():
    key = ResultKey("0a1b2c", "d3e4f5", "3+math-verify-0.8.0+sympy")  # the scorer version may hold '-'
    assert str(key) == "0a1b2c-d3e4f5-3+math-verify-0.8.0+sympy"
    assert ResultKey.parse(str(key)) == key
    assert ResultKey.parse(str(key)).checkpoint == "0a1b2c"
    now = result_key("0a1b2c", "d3e4f5")
    assert now.scorer == SCORER_VERSION and ResultKey.parse(str(now)) == now
    for bad in ("k", "a-b", "-a-b", "a--b", ""):
        with pytest.raises(ValueError):
            ResultKey.parse(bad)
    with pytest.raises(ValueError):
        ResultKey("a-b", "c", "1")


def test_stored_key_file_holds_the_string_form_and_reads_back_as_the_key(tmp_path):
    layout = Layout(tmp_path / "store")
    cell = _cell()
    keys, flat = flatten_sets({("test", "biology"): [ITEM]})
    key = result_key("ckhash", "sets")
    rows = pl.DataFrame(prediction_rows(cell.cell_id, 1, key, "transformers", keys, flat, [Prediction(text="A")]))
    store(layout, cell.cell_id, 1, key, rows)
    assert read_json(layout.cell_result(cell.cell_id, 1)) == {"key": str(key), "backend": "transformers"}
    assert read_parquet(layout.cell_predictions(cell.cell_id, 1))["key"].to_list() == [str(key)]
    assert stored_key(layout, cell.cell_id, 1) == key
    # what the writers write is the declared table, column for column, and passes the check
    assert read_parquet(layout.cell_predictions(cell.cell_id, 1)).columns == PREDICTIONS.names
    assert read_parquet(layout.cell_scores(cell.cell_id, 1)).columns == CELL_SCORES.names
    assert collect_scores([cell], layout).columns == SCORES.names
    for f in (layout.cell_predictions(cell.cell_id, 1), layout.cell_scores(cell.cell_id, 1), layout.scores):
        check_table(f)
    # a key file whose key is not a result key is damaged, named with its rebuild hint
    write_json(layout.cell_result(cell.cell_id, 1), {"key": "k", "backend": "transformers"})
    with pytest.raises(StoredFileError, match=r"scores/epoch_001\.json: damaged \(wrong schema: key: expected "
                                              r"<checkpoint hash>-<eval set hash>-<scorer version>.*growthpace evaluate"):
        stored_key(layout, cell.cell_id, 1)


@pytest.mark.parametrize("column", ["volume", "mix", "expected", "items", "epochs", "seed"])
def test_scores_parquet_without_a_column_a_reader_uses_is_refused_naming_file_and_column(tmp_path, column):
    layout = Layout(tmp_path / "store")
    cell = _cell()
    keys, flat = flatten_sets({("test", "biology"): [ITEM]})
    store(layout, cell.cell_id, 1, result_key("ckhash", "sets"),
          pl.DataFrame(prediction_rows(cell.cell_id, 1, "k-s-1", "transformers", keys, flat, [Prediction(text="A")])))
    collect_scores([cell], layout).drop(column).write_parquet(layout.scores)
    for read in (read_parquet, check_table):
        with pytest.raises(StoredFileError, match=rf"scores\.parquet: damaged or not the table the study writes "
                                                  rf"\(column '{column}' is missing\)"):
            read(layout.scores)


@pytest.mark.parametrize("column", ["idx", "kind", "candidate_nll"])
def test_predictions_without_a_column_rescore_reads_are_refused(tmp_path, column):
    layout = Layout(tmp_path / "store")
    keys, flat = flatten_sets({("test", "biology"): [ITEM]})
    rows = pl.DataFrame(prediction_rows("c0ffee0010", 1, "k-s-1", "transformers", keys, flat, [Prediction(text="A")]))
    path = layout.cell_predictions("c0ffee0010", 1)
    path.parent.mkdir(parents=True)
    rows.drop(column).write_parquet(path)
    with pytest.raises(StoredFileError, match=rf"predictions/epoch_001\.parquet: .*column '{column}' is missing"):
        check_table(path)


def test_a_command_reads_the_eval_sets_once(tmp_path, small_data, monkeypatch):
    """prepare reads them (its pre-flight) and every scoring pass of the command (streaming beside the
    sweep, then the final one) uses that one read (rescore, too, scores what its prepare read)."""
    from growthpace.jobs import evaluate, study
    from growthpace.platform.data import dataset
    from growthpace.platform.data.specfile import load_spec

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({
        "name": "once", "storage": str(tmp_path / "store"), "models": [{"name": "llama-nano", "size": "s"}],
        "data": {"root": str(small_data), "train_split": "1000", "volumes": [10]},
        "evaluation": {"splits": ["valid"], "ood": False}}))
    spec = load_spec(tmp_path / "spec.yaml")
    reads = []
    real = dataset.load_eval_sets
    monkeypatch.setattr(dataset, "load_eval_sets", lambda s: reads.append(s) or real(s))
    monkeypatch.setattr(study, "tracker_for", lambda st: (None, None, {}))  # no MLflow here

    prepared = study.prepare(spec, write=True)
    assert len(reads) == 1 and prepared.eval_sets
    streaming, final = evaluate.Scoring(spec, prepared), evaluate.Scoring(spec, prepared)
    assert streaming.sets is prepared.eval_sets and final.sets is prepared.eval_sets
    assert len(reads) == 1

    reads.clear()  # rescore on a storage with no stored predictions refuses before reading or writing (issue 28)
    with pytest.raises(FileNotFoundError, match="no stored predictions to rescore"):
        evaluate.run_rescore(spec)
    assert reads == []
