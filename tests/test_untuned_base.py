"""The untuned base as "volume 0" (issue 25): found by its content hash, scored once, stored like a
checkpoint, its rows in base_scores.parquet (source "base", volume 0), apart from the cells' scores.parquet."""

from __future__ import annotations

import os

import polars as pl

from growthpace.evaluators.results import (
    BASE_EPOCH, UntunedBase, collect_scores, eval_set_hash, flatten_sets, pending_bases, prediction_rows, store,
)
from growthpace.evaluators.scoring import Prediction
from growthpace.jobs.report import base_selected
from growthpace.platform.core.cells import BASE_SOURCE
from growthpace.platform.core.items import Record
from growthpace.platform.store.storage import Layout

OOD = Record("physician", "0", (("user", "Which vitamin?\nA. vitamin C\nB. vitamin D\nC. vitamin A\nD. vitamin K"),
                                ("assistant", "A")), 0)
TEST = Record("biology", "0", (("user", "Which organ?\nA. heart\nB. water\nC. salt\nD. sugar"), ("assistant", "A")), 0)


def base_folder(root, weights: bytes = b"weights-1"):
    folder = root / "base" / "llama-nano-1234-pt5678"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_a_base_is_scored_once_per_content_and_again_when_its_weights_change(tmp_path):
    layout = Layout(tmp_path / "store")
    base = UntunedBase("llama-nano", "0.2M", 0, str(base_folder(tmp_path / "store")))
    missing = UntunedBase("llama-micro", "0.6M", 0, str(tmp_path / "store" / "base" / "not-pretrained-yet"))
    sets = {("ood", "physician"): [OOD], ("test", "biology"): [TEST]}
    set_hash = eval_set_hash(sets, {})

    first = pending_bases([base, missing], layout, set_hash)
    assert [t.cell_id for t in first.todo] == ["base-llama-nano-1234-pt5678"]  # the folder not written yet: later
    todo = first.todo[0]
    assert todo.epoch == BASE_EPOCH and todo.model_path == base.path  # the HF folder itself, no model/ below it
    assert todo.row()["model"] == base.path

    keys, flat = flatten_sets(sets)
    preds = [Prediction(candidate_nll=(0.1, 1.0, 2.0, 3.0)), Prediction(candidate_nll=(2.0, 1.0, 3.0, 4.0))]
    rows = pl.DataFrame(prediction_rows(todo.cell_id, todo.epoch, todo.key, "transformers", keys, flat, preds))
    store(layout, todo.cell_id, todo.epoch, todo.key, rows)
    again = pending_bases([base], layout, set_hash)
    assert (again.todo, again.scored_before) == ([], 1)  # a rerun does not score it again

    weights = os.path.join(base.path, "model.safetensors")
    with open(weights, "wb") as f:
        f.write(b"weights-2")  # another content of the same size
    assert len(pending_bases([base], layout, set_hash).todo) == 1
    assert len(pending_bases([base], layout, eval_set_hash({("ood", "physician"): [OOD]}, {})).todo) == 1


def test_the_base_rows_go_to_their_own_table_as_volume_0(tmp_path):
    layout = Layout(tmp_path / "store")
    base = UntunedBase("llama-nano", "0.2M", 0, str(base_folder(tmp_path / "store")))
    todo = pending_bases([base], layout, "sets").todo[0]
    sets = {("valid", "biology"): [TEST], ("ood", "physician"): [OOD], ("test", "biology"): [TEST]}
    keys, flat = flatten_sets(sets)
    preds = [Prediction(candidate_nll=(0.1, 1.0, 2.0, 3.0))] * 3
    store(layout, todo.cell_id, todo.epoch, todo.key,
          pl.DataFrame(prediction_rows(todo.cell_id, todo.epoch, todo.key, "transformers", keys, flat, preds)))
    assert collect_scores([base], layout).is_empty() and not layout.scores.exists()  # no cell scored: none written
    rows = pl.read_parquet(layout.base_scores)
    assert set(rows["source"]) == {BASE_SOURCE} and set(rows["volume"]) == {0} and set(rows["size"]) == {"0.2M"}
    assert set(rows["cell_id"]) == {base.cell_id} and rows.height == 3
    selected = base_selected(rows)
    assert sorted(selected["split"]) == ["ood", "test"] and set(selected["selected_epoch"]) == {BASE_EPOCH}
    assert base_selected(None) is None


def test_a_damaged_base_table_is_refused_naming_it_and_the_command_that_rebuilds_it(tmp_path):
    import pytest

    from growthpace.platform.store.storage import StoredFileError, read_parquet

    layout = Layout(tmp_path / "store")
    base = UntunedBase("llama-nano", "0.2M", 0, str(base_folder(tmp_path / "store")))
    todo = pending_bases([base], layout, "sets").todo[0]
    keys, flat = flatten_sets({("ood", "physician"): [OOD]})
    store(layout, todo.cell_id, todo.epoch, todo.key, pl.DataFrame(prediction_rows(
        todo.cell_id, todo.epoch, todo.key, "transformers", keys, flat, [Prediction(candidate_nll=(0.1, 1.0, 2.0, 3.0))])))
    collect_scores([base], layout)
    pl.read_parquet(layout.base_scores).drop("size").write_parquet(layout.base_scores)
    with pytest.raises(StoredFileError, match=r"base_scores\.parquet: damaged or not the table the study writes "
                                              r"\(column 'size' is missing\); delete it and run `growthpace evaluate SPEC`"):
        read_parquet(layout.base_scores)


def test_a_torn_base_result_stops_a_command_before_its_first_write(tmp_path):
    import pytest

    from growthpace.jobs.study import check_stored
    from growthpace.platform.store.storage import StoredFileError

    layout = Layout(tmp_path / "store")
    torn = layout.cell_predictions("base-llama-nano-1234-pt5678", BASE_EPOCH)
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"PAR1 torn")
    with pytest.raises(StoredFileError, match=r"base-llama-nano-1234-pt5678/predictions/epoch_000\.parquet"):
        check_stored([], layout)
