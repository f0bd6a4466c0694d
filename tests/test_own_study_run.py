"""Declared studies run end to end on the real stack (Ray Tune/Train + DeepSpeed, Ray Data scoring,
MLflow sqlite): one ability, and thirty abilities from two named sources. Tiny sizes; the shared
session Ray cluster (tests/conftest.py)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from growthpace.platform.data.specfile import load_spec
from growthpace.platform.store.storage import Layout
from tests.test_own_study import write_study

pytestmark = pytest.mark.integration


def _run(tmp_path, abilities, sources, ood=()):
    from growthpace.jobs.run import run_study

    spec = load_spec(write_study(tmp_path, abilities, per_source=4, test=2, sources=sources, ood=ood))
    index = run_study(spec)
    layout = Layout.for_spec(spec)
    return spec, layout, pl.read_parquet(layout.scores), json.loads((layout.report / "summary.json").read_text()), index


def test_one_ability_runs(ray_cluster, tmp_path):
    spec, layout, scores, summary, index = _run(tmp_path, [("only", "true_false")], ("human",),
                                                ood=[("elsewhere", "choice")])
    assert sorted(scores["ability"].unique().to_list()) == ["elsewhere", "only"]
    assert set(scores["split"]) == {"valid", "test", "ood"}
    assert scores.filter(pl.col("split") == "ood")["ability"].unique().to_list() == ["elsewhere"]
    assert scores["source"].unique().to_list() == ["human"] and scores["cell_id"].n_unique() == 2
    assert dict(scores.group_by("ability").agg(pl.col("expected").first()).iter_rows()) == {"only": 50.0, "elsewhere": 25.0}
    assert summary["declaration"]["abilities"] == ["only"] and "only" in open(index).read()
    # the declared OOD set is what transfer is measured on, against the untuned base (volume 0)
    assert summary["declaration"]["ood"] == ["elsewhere"] and (layout.report / "ood.png").is_file()
    rows = summary["ood_change"]["rows"]
    assert rows and all(r["subjects"] == ["elsewhere"] and r["base"] is not None for r in rows)


def test_thirty_abilities_and_two_sources_run_and_mlflow_names_them(ray_cluster, tmp_path):
    kinds = ["choice", "true_false", "math", "perplexity", "cloze"]
    names = [f"skill_{i:02d}" for i in range(30)]
    spec, layout, scores, summary, _ = _run(tmp_path, [(a, kinds[i % 5]) for i, a in enumerate(names)],
                                            ("human", "gpt4o"))
    assert sorted(scores["ability"].unique().to_list()) == names
    assert sorted(scores["source"].unique().to_list()) == ["gpt4o", "human"] and scores["cell_id"].n_unique() == 4
    assert {(g["a"], g["b"]) for g in summary["source_gap"]} == {("human", "gpt4o")}
    import mlflow

    mlflow.set_tracking_uri(spec.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[spec.tracking.experiment], output_format="list")
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert {r.data.params["source"] for r in children} == {"human", "gpt4o"}
    assert {f"test/{a}" for a in names} <= set(children[0].data.metrics)
