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


def _run(tmp_path, abilities, sources):
    from growthpace.jobs.run import run_study

    spec = load_spec(write_study(tmp_path, abilities, per_source=4, test=2, sources=sources))
    index = run_study(spec)
    layout = Layout.for_spec(spec)
    return spec, layout, pl.read_parquet(layout.scores), json.loads((layout.report / "summary.json").read_text()), index


def test_one_ability_runs(ray_cluster, tmp_path):
    spec, layout, scores, summary, index = _run(tmp_path, [("only", "true_false")], ("human",))
    assert scores["ability"].unique().to_list() == ["only"] and set(scores["split"]) == {"valid", "test"}
    assert scores["source"].unique().to_list() == ["human"] and scores["cell_id"].n_unique() == 2
    assert scores["expected"].unique().to_list() == [50.0]  # the true/false kind's baseline
    assert summary["declaration"]["abilities"] == ["only"] and "only" in open(index).read()


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
