"""checkpoints.json and epoch.json (platform/store/checkpoints.py, their one owner): the bytes a study
trained before wrote, read back as typed records, and a damaged field named with its file."""

from __future__ import annotations

import json

import pytest

from growthpace.platform.store.checkpoints import (CellCheckpoints, CheckpointRef, epoch_of, read_checkpoints, read_epoch,
                                                   write_checkpoints, write_epoch)
from growthpace.platform.store.storage import CheckpointError, Layout, StoredFileError, write_json


def _cell(layout: Layout) -> CellCheckpoints:
    refs = tuple(CheckpointRef("c1", e, str(layout.train / "c1" / f"checkpoint_{e - 1:06d}"), 2.5 / e) for e in (1, 2))
    return CellCheckpoints("c1", refs, wall_s=61.5, gpus=2.0, cpus=4.25,
                           timing={"compute_s": 50.0, "setup_s": 7.0, "imports_s": 2.0})


def test_checkpoint_list_keeps_the_bytes_the_sweep_wrote_and_reads_back_typed(tmp_path):
    layout = Layout(tmp_path)
    cell = _cell(layout)
    write_checkpoints(layout, cell)
    # What jobs/sweep.py wrote before the format had an owner: a rerun must find the same file.
    before = tmp_path / "before.json"
    write_json(before, {
        "cell_id": "c1", "wall_s": 61.5, "compute_s": 50.0, "setup_s": 7.0, "imports_s": 2.0, "gpus": 2.0, "cpus": 4.25,
        "checkpoints": [{"epoch": c.epoch, "train_loss": c.train_loss, "path": c.path} for c in cell.checkpoints],
    })
    assert layout.cell_checkpoints("c1").read_bytes() == before.read_bytes()
    assert read_checkpoints(layout, "c1") == cell


def test_an_older_list_without_costs_reads_with_none(tmp_path):
    layout = Layout(tmp_path)
    write_json(layout.cell_checkpoints("c1"), {"checkpoints": [{"epoch": 1, "path": "train/c1/checkpoint_000000"}]})
    done = read_checkpoints(layout, "c1")
    assert done.checkpoints == (CheckpointRef("c1", 1, "train/c1/checkpoint_000000"),)
    assert (done.wall_s, done.gpus, done.cpus, dict(done.timing)) == (None, None, None, {})


@pytest.mark.parametrize("damage, field", [
    (lambda d: d.update(wall_s="61s"), r"wall_s: expected a number, got '61s'"),
    (lambda d: d.update(gpus=True), r"gpus: expected a number, got True"),
    (lambda d: d["checkpoints"][1].update(path=""), r"checkpoints\[1\]\.path: expected a path"),
    (lambda d: d["checkpoints"][0].pop("epoch"), r"checkpoints\[0\]\.epoch: expected an integer, got None"),
    (lambda d: d["checkpoints"][1].update(train_loss="nan"), r"checkpoints\[1\]\.train_loss: expected a number"),
    (lambda d: d.update(cell_id=7), r"cell_id: expected a string"),
    (lambda d: d.update(checkpoints={"1": "x"}), r"expected \{checkpoints: \[\.\.\.\]\}"),
])
def test_a_damaged_field_is_named_with_the_file_and_the_command_that_rebuilds_it(tmp_path, damage, field):
    layout = Layout(tmp_path)
    write_checkpoints(layout, _cell(layout))
    marker = layout.cell_checkpoints("c1")
    obj = json.loads(marker.read_text())
    damage(obj)
    marker.write_text(json.dumps(obj))
    with pytest.raises(CheckpointError, match=rf"checkpoints\.json: corrupted checkpoint list .*{field}.*growthpace sweep"):
        read_checkpoints(layout, "c1")


def test_a_list_of_another_cell_is_not_written(tmp_path):
    layout = Layout(tmp_path)
    with pytest.raises(ValueError, match="of cell other"):
        write_checkpoints(layout, CellCheckpoints("c1", (CheckpointRef("other", 1, "p"),)))


def test_epoch_file_bytes_and_its_reader(tmp_path):
    write_epoch(tmp_path, 3, 0.75)
    assert (tmp_path / "epoch.json").read_bytes() == json.dumps({"epoch": 3, "train_loss": 0.75}).encode()
    assert read_epoch(tmp_path) == 3
    (tmp_path / "model").mkdir()
    assert epoch_of(tmp_path / "model") == 3
    (tmp_path / "epoch.json").write_text('{"epoch": "3"}')
    with pytest.raises(StoredFileError, match=r"epoch\.json: damaged \(wrong schema: epoch: expected an integer, got '3'\)"):
        read_epoch(tmp_path)
    assert epoch_of(tmp_path / "model") is None  # not a checkpoint it can tell: --epoch is asked for instead
    (tmp_path / "epoch.json").unlink()
    with pytest.raises(FileNotFoundError):
        read_epoch(tmp_path)
