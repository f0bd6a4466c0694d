"""Cells from a spec (ids, mixes, errors) and the report's model selection."""

import polars as pl
import pytest
import yaml

from growthpace.platform.data.dataset import load_pool
from growthpace.platform.core.cells import expand
from growthpace.platform.core.spec import SpecError
from growthpace.platform.data.specfile import load_spec
from growthpace.jobs.report import select


def _spec(tmp_path, small_data, **data):
    raw = {
        "name": "t",
        "storage": str(tmp_path / "s"),
        "models": [{"name": "llama-nano", "size": "a"}, {"name": "llama-micro", "size": "b"}],
        "data": {"root": str(small_data), "train_split": "1000", "sources": ["curated", "synthetic"],
                 "volumes": [10, 40], **data},
        "training": {"epochs": 3, "epochs_by_volume": {10: 5}},
    }
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return load_spec(p)


def _pool(small_data):
    return load_pool(small_data, "1000", with_synthetic=True)


def test_full_factorial_with_mixes(tmp_path, small_data):
    mixes = [
        {"name": "reconstruct", "total": 100, "caps": {"ethics": 2, "role_play": 2, "creative_writing": 30}},
        {"name": "maximum", "fill": "max", "caps": {"ethics": 2}},
        {"name": "mix-50", "fill": "max", "caps": {"ethics": 2}, "synthetic": 50},
    ]
    spec = _spec(tmp_path, small_data, mixes=mixes, seeds=[0, 1])
    cells = expand(spec, _pool(small_data), "fp", {})
    assert len(cells) == 2 * 2 * (2 * 2 + 3)
    assert len({c.cell_id for c in cells}) == len(cells)
    rec = next(c for c in cells if c.mix == "reconstruct")
    assert rec.allocation.total == 100 and rec.allocation.curated["ethics"] == 2
    mx = next(c for c in cells if c.mix == "mix-50")
    assert mx.allocation.synthetic == 50 and mx.allocation.curated["math"] == 60
    assert {c.epochs for c in cells if c.volume == 10} == {5}


def test_cell_id_tracks_what_determines_the_result(tmp_path, small_data):
    pool = _pool(small_data)
    a = {c.label: c.cell_id for c in expand(_spec(tmp_path, small_data), pool, "fp", {})}
    assert a == {c.label: c.cell_id for c in expand(_spec(tmp_path, small_data), pool, "fp", {})}
    assert set(a.values()).isdisjoint(c.cell_id for c in expand(_spec(tmp_path, small_data), pool, "other-data", {}))
    b = {c.label: c.cell_id for c in expand(_spec(tmp_path, small_data, volumes=[10, 20]), pool, "fp", {})}
    assert a["a/curated-10/s0"] == b["a/curated-10/s0"] and "a/curated-20/s0" in b


def test_impossible_volume_names_the_field(tmp_path, small_data):
    with pytest.raises(SpecError, match=r"field 'data.volumes': volume 100000"):
        expand(_spec(tmp_path, small_data, volumes=[10, 100000]), _pool(small_data), "fp", {})
    with pytest.raises(SpecError, match=r"field 'data.mixes\[0\]'"):
        expand(_spec(tmp_path, small_data, mixes=[{"name": "m", "total": 20, "caps": {"ethics": 30, "math": 30}}]),
               _pool(small_data), "fp", {})


def test_select_best_valid_epoch_after_warmup_reports_test():
    rows = []
    # valid peaks at epoch 1 (inside warm-up, ignored) and epoch 3 (selected); test differs per epoch
    for epoch, v, t in [(1, 90.0, 10.0), (2, 20.0, 20.0), (3, 50.0, 30.0), (4, 40.0, 40.0)]:
        rows += [
            {"cell_id": "c", "epoch": epoch, "split": "valid", "ability": "code", "score": v, "expected": 33.3,
             "items": 3, "epochs": 4, "size": "a", "source": "curated", "volume": 10, "mix": "", "seed": 0},
            {"cell_id": "c", "epoch": epoch, "split": "test", "ability": "code", "score": t, "expected": 33.3,
             "items": 3, "epochs": 4, "size": "a", "source": "curated", "volume": 10, "mix": "", "seed": 0},
            {"cell_id": "c", "epoch": epoch, "split": "ood", "ability": "physician", "score": t + 1, "expected": 25.0,
             "items": 3, "epochs": 4, "size": "a", "source": "curated", "volume": 10, "mix": "", "seed": 0},
        ]
    out = select(pl.DataFrame(rows), lambda epochs: 1)
    code = out.filter(pl.col("ability") == "code").row(0, named=True)
    assert code["selected_epoch"] == 3 and code["score"] == 30.0
    ood = out.filter(pl.col("ability") == "physician").row(0, named=True)
    assert ood["selected_epoch"] == 3 and ood["score"] == 31.0
