"""The real stack on a tiny study: Ray Tune + Ray Train + DeepSpeed, Ray Data scoring, MLflow (sqlite).

All tests share one local Ray cluster (the session fixture); each uses its own storage folder.
"""

import json
import os
from pathlib import Path

import polars as pl
import pytest
import yaml

from growthpace.platform.core.abilities import ABILITIES, OOD_SUBJECTS
from growthpace.platform.data.specfile import load_spec
from growthpace.platform.store.storage import Layout, read_json

pytestmark = pytest.mark.integration


def _spec(tmp_path: Path, small_data: Path, *, volumes, workers=1, epochs=2, concurrent=2, tracking_uri=None,
          storage=None, **extra):
    raw = {
        "name": "itest",
        "storage": storage or str(tmp_path / "store"),
        "models": [{"name": "llama-nano", "size": "nano",
                    "resources": {"workers": workers, "cpus_per_worker": 0.5, "driver_cpus": 0.25}}],
        "data": {"root": str(small_data), "train_split": "1000", "sources": ["curated"], "volumes": volumes},
        "training": {"epochs": epochs, "lr": 3e-3, "end_lr": 3e-4, "per_device_batch": 4, "max_length": 128,
                     "max_concurrent_trials": concurrent},
        "evaluation": {"concurrency": 2, "max_new_tokens": {"math": 16}, "warmup_epochs": 0},
    }
    if tracking_uri:
        raw["tracking"] = {"uri": tracking_uri, "experiment": "itest"}
    for section, values in extra.items():
        raw.setdefault(section, {}).update(values)
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return load_spec(p)


def _mlflow(spec):
    import mlflow

    mlflow.set_tracking_uri(spec.tracking_uri)
    return mlflow


def test_one_cell_two_workers_deepspeed(ray_cluster, small_data, tmp_path):
    """One cell, data-parallel over 2 Ray Train workers with DeepSpeed ZeRO-2 on gloo."""
    from growthpace.jobs.run import run_sweep
    from growthpace.platform.store.checkpoints import checkpoint_hash

    spec = _spec(tmp_path, small_data, volumes=[20], workers=2)
    study = run_sweep(spec)
    layout = Layout.for_spec(spec)
    (cell,) = study.cells
    cks = read_json(layout.cell_checkpoints(cell.cell_id))["checkpoints"]
    assert [c["epoch"] for c in cks] == [1, 2]
    for c in cks:
        d = Path(c["path"])
        assert (d / "model" / "config.json").exists() and (d / "model" / "tokenizer.json").exists()
        assert not (d / "deepspeed").exists(), "a finished cell keeps no resume state (training.keep_resume_state)"
        assert json.loads((d / "epoch.json").read_text())["epoch"] == c["epoch"]
        digests = read_json(d / "digests.json")  # rank 0 hashed the weights where it wrote them
        assert {"config.json", "model.safetensors"} <= set(digests["files"])
        (d / "digests.json").rename(d / "digests.moved")
        assert checkpoint_hash(d) == digests["hash"]  # what reading the files gives
        (d / "digests.moved").rename(d / "digests.json")
    import safetensors.torch as st

    base = next((layout.root / "base").iterdir())
    w0 = st.load_file(base / "model.safetensors")
    w2 = st.load_file(Path(cks[-1]["path"]) / "model" / "model.safetensors")
    assert any(not (w0[k] == w2[k]).all() for k in w0), "training changed the weights"
    card = read_json(layout.cell_card(cell.cell_id))
    assert card["total"] == 20 and sum(card["counts"].values()) == 20

    client = _mlflow(spec).tracking.MlflowClient()
    run_id = read_json(layout.cell_run(cell.cell_id))["run_id"]
    hist = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in hist) == [1, 2]
    assert client.get_run(run_id).data.params["workers"] == "2"


@pytest.fixture(scope="module")
def finished_study(ray_cluster, small_data, tmp_path_factory):
    """Two cells trained and scored end to end (streaming scoring beside the sweep)."""
    from growthpace.jobs.run import run_study

    spec = _spec(tmp_path_factory.mktemp("study"), small_data, volumes=[10, 30])
    index = run_study(spec)
    layout = Layout.for_spec(spec)
    # Later tests change this study's weights and re-score; comparisons use the scores as first made.
    (layout.root.parent / "scores-as-trained.parquet").write_bytes(layout.scores.read_bytes())
    return spec, layout, index


def _as_trained(finished_study) -> pl.DataFrame:
    return pl.read_parquet(finished_study[1].root.parent / "scores-as-trained.parquet")


def test_sweep_scores_tracking_report_and_rerun(finished_study):
    """Two cells end to end; MLflow nesting checked by querying MLflow; a rerun redoes nothing."""
    from growthpace.jobs.run import run_study

    spec, layout, index = finished_study
    assert Path(index).exists() and (layout.report / "abilities.png").stat().st_size > 1000

    scores = pl.read_parquet(layout.scores)
    n_sets = 2 * len(ABILITIES) + len(OOD_SUBJECTS)
    assert scores.height == 2 * 2 * n_sets  # cells x epochs x (valid+test per ability, OOD subjects)
    assert scores["cell_id"].n_unique() == 2 and set(scores["epoch"]) == {1, 2}
    assert scores.filter(pl.col("split") == "ood")["ability"].unique().sort().to_list() == sorted(OOD_SUBJECTS)
    assert ((scores["score"] >= 0) & (scores["score"] <= 100)).all()
    base = scores.filter((pl.col("split") == "test") & (pl.col("ability") == "biology"))["expected"]
    assert (base == 25.0).all()

    mlflow = _mlflow(spec)
    parent = read_json(layout.tracking)["parent_run_id"]
    children = mlflow.search_runs(
        experiment_names=[spec.tracking.experiment],
        filter_string=f"tags.mlflow.parentRunId = '{parent}'",
        output_format="list",
    )
    assert len(children) == 2
    client = mlflow.tracking.MlflowClient()
    for run in children:
        cell_id = run.data.tags["growthpace.cell_id"]
        hist = client.get_metric_history(run.info.run_id, "test/biology")
        assert sorted(m.step for m in hist) == [1, 2]
        want = scores.filter((pl.col("cell_id") == cell_id) & (pl.col("split") == "test")
                             & (pl.col("ability") == "biology")).sort("epoch")["score"].to_list()
        assert [m.value for m in sorted(hist, key=lambda m: m.step)] == pytest.approx(want)
        assert run.data.params["volume"] in ("10", "30")
    assert any(a.path == "index.html" for a in client.list_artifacts(parent))

    # Rerun: finished cells are skipped, scored checkpoints are not re-scored.
    before = {p: p.stat().st_mtime_ns for p in layout.root.glob("cells/*/checkpoints.json")}
    scored = {p: p.stat().st_mtime_ns for p in layout.root.glob("cells/*/scores/*.parquet")}
    train_dirs = sorted(layout.train.rglob("checkpoint_*"))
    run_study(spec)
    assert {p: p.stat().st_mtime_ns for p in layout.root.glob("cells/*/checkpoints.json")} == before
    assert {p: p.stat().st_mtime_ns for p in layout.root.glob("cells/*/scores/*.parquet")} == scored
    assert sorted(layout.train.rglob("checkpoint_*")) == train_dirs
    assert len(mlflow.search_runs(experiment_names=[spec.tracking.experiment], output_format="list")) == 3
    assert pl.read_parquet(layout.scores).equals(scores)


def test_predictions_kept_and_changed_weights_rescored(finished_study):
    from growthpace.jobs.run import run_evaluate

    spec, layout, _ = finished_study
    preds = pl.read_parquet(next(layout.root.glob("cells/*/predictions/epoch_001.parquet")))
    n_items = 2 * 4 * len(ABILITIES) + 3 * len(OOD_SUBJECTS)
    assert preds.height == n_items
    assert {"prompt", "text", "letter_logprobs", "candidate_nll", "parsed", "correct", "expected"} <= set(preds.columns)
    assert preds.filter(pl.col("kind") == "perplexity")["candidate_nll"].list.len().unique().to_list() == [3]

    # Same path, new weights: only that checkpoint gets a new key and is scored again.
    cell_dir = sorted(layout.root.glob("cells/*/checkpoints.json"))[0]
    ck = read_json(cell_dir)["checkpoints"][0]
    meta = layout.root / "cells" / cell_dir.parent.name / "scores" / "epoch_001.json"
    old_key = read_json(meta)["key"]
    others = {p: p.stat().st_mtime_ns for p in layout.root.glob("cells/*/scores/*.json") if p != meta}
    import safetensors.torch as st

    weights = Path(ck["path"]) / "model" / "model.safetensors"
    tensors = st.load_file(weights)
    first = next(iter(tensors))
    tensors[first] = tensors[first] * 0.5
    st.save_file(tensors, weights, metadata={"format": "pt"})
    run_evaluate(spec)
    assert read_json(meta)["key"] != old_key
    assert {p: p.stat().st_mtime_ns for p in others} == others


def test_rescore_from_stored_predictions_runs_no_model(finished_study):
    from growthpace.jobs.run import run_rescore

    spec, layout, _ = finished_study
    f = sorted(layout.root.glob("cells/*/predictions/epoch_002.parquet"))[0]
    truth = pl.read_parquet(f)
    # Corrupt the verdicts, and remove every weight file: rescoring must rebuild verdicts from text alone.
    pl.read_parquet(f).with_columns(correct=~pl.col("correct"), parsed=pl.lit("?")).write_parquet(f)
    hidden = []
    for w in layout.root.rglob("model.safetensors"):
        w.rename(w.with_suffix(".hidden"))
        hidden.append(w)
    try:
        assert run_rescore(spec) == 4 + 1  # 2 cells x 2 epochs, and the untuned base (volume 0 of the transfer)
    finally:
        for w in hidden:
            w.with_suffix(".hidden").rename(w)
    again = pl.read_parquet(f)
    assert again["correct"].to_list() == truth["correct"].to_list()
    assert again["parsed"].to_list() == truth["parsed"].to_list()


def test_lm_eval_tasks_scored_once_per_checkpoint_logged_and_rescored(finished_study):
    """evaluation.benchmarks added to a scored study: each checkpoint owes only its lm-eval tasks, which
    the scoring actors' warm engines answer; MLflow gets bench/<task>/<metric> per epoch; a rerun serves
    the stored results; another few-shot count scores again; rescore rebuilds the metrics with no model."""
    pytest.importorskip("lm_eval")
    from growthpace.jobs.run import run_evaluate, run_rescore
    from growthpace.platform.core.spec import Benchmarks

    spec, layout, _ = finished_study
    tasks = str(Path(__file__).resolve().parent.parent / "experiments" / "lm_eval_tasks")

    def with_bench(n):
        b = Benchmarks(tasks=["growthpace_facts", "growthpace_sums"], num_fewshot=n, limit=4, include_path=[tasks])
        return spec.model_copy(update={"evaluation": spec.evaluation.model_copy(update={"benchmarks": b})})

    scores = {p: p.stat().st_mtime_ns for p in layout.root.glob("cells/*/scores/*.json")}
    run_evaluate(with_bench(1))
    files = sorted(layout.root.glob("cells/*/benchmarks/epoch_*/*.json"))
    assert len(files) == 2 * 2 * 2  # cells x epochs x tasks
    assert {p: p.stat().st_mtime_ns for p in scores} == scores  # the eval items were not scored again
    stored = read_json(files[0])
    assert len({s["doc_id"] for s in stored["samples"]}) == 4 and stored["n_shot"] == 1
    mlflow = _mlflow(spec)
    client = mlflow.tracking.MlflowClient()
    run_id = read_json(layout.cell(files[0].parts[-4]) / "mlflow.json")["run_id"]
    hist = client.get_metric_history(run_id, "bench/growthpace_facts/acc")
    assert sorted(m.step for m in hist) == [1, 2]
    assert client.get_metric_history(run_id, "bench/growthpace_sums/exact_match_strict-match")

    mtimes = {p: p.stat().st_mtime_ns for p in files}
    run_evaluate(with_bench(1))  # nothing is due: every (checkpoint, task) result is served
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    run_evaluate(with_bench(2))  # another few-shot count: other prompts, scored again
    assert read_json(files[0])["n_shot"] == 2 and read_json(files[0])["key"] != stored["key"]

    # rescore: lm-eval's filters and metrics over the stored responses, the weights out of reach
    f = files[0]
    truth = read_json(f)
    damaged = dict(truth, metrics={k: -1.0 for k in truth["metrics"]})
    f.write_text(json.dumps(damaged))
    hidden = []
    for w in layout.root.rglob("model.safetensors"):
        w.rename(w.with_suffix(".hidden"))
        hidden.append(w)
    try:
        run_rescore(with_bench(2))
    finally:
        for w in hidden:
            w.with_suffix(".hidden").rename(w)
    assert read_json(f)["metrics"] == truth["metrics"]


def test_retention_keeps_best_or_nothing(finished_study):
    from growthpace.evaluators.results import cell_scores
    from growthpace.jobs.evaluate import apply_retention
    from growthpace.platform.core.selection import best_valid_epoch
    from growthpace.jobs.run import run_evaluate
    from growthpace.jobs.study import prepare

    spec, layout, _ = finished_study
    cells = prepare(spec, write=False).cells
    best = best_valid_epoch(cell_scores(layout, cells[0].cell_id), 0)
    assert best in (1, 2)
    apply_retention(cells[0], layout, "best", best)
    apply_retention(cells[1], layout, "none", None)
    for cell, keep in ((cells[0], {best}), (cells[1], set())):
        for ck in read_json(layout.cell_checkpoints(cell.cell_id))["checkpoints"]:
            assert (Path(ck["path"]) / "model").exists() == (ck["epoch"] in keep)
            assert layout.cell_predictions(cell.cell_id, ck["epoch"]).exists()
    before = pl.read_parquet(layout.scores)
    run_evaluate(spec)  # deleted weights: stored results are final, nothing re-scored
    assert pl.read_parquet(layout.scores).equals(before)


def test_study_in_an_object_store_survives_a_killed_driver_and_scores_like_local_storage(
        finished_study, ray_cluster, small_data, tmp_path, monkeypatch):
    """storage: s3://... against a real S3 API server on 127.0.0.1, the study run as a job on the shared
    cluster (the spec's ray.env_vars point every worker at the server). The driver is SIGKILLed once a
    cell has finished; the rerun redoes nothing finished, and the final scores equal the uninterrupted
    local-storage study's (training is seeded and deterministic on CPU). Nothing is written locally under
    the storage name, retention deletes in the store, MLflow holds one child run per cell with no
    duplicate points, and a third run redoes nothing."""
    import signal
    import subprocess
    import sys
    import time

    from growthpace.platform.store import storage

    from .servers import S3Server

    reference = _as_trained(finished_study)
    server = S3Server(tmp_path / "s3").start()
    try:
        spec = _spec(tmp_path, small_data, volumes=[10, 30], concurrent=1,  # one cell at a time: kill between
                     storage=f"s3://{server.bucket}/studies/itest", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                     ray={"env_vars": server.env}, evaluation={"retention": "best"})
        env = {**os.environ, **server.env, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address,
               "GROWTHPACE_CACHE": str(tmp_path / "cache")}
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        storage._filesystem.cache_clear()
        layout = Layout.for_spec(spec)
        cmd = [sys.executable, "-m", "growthpace.jobs.run", str(tmp_path / "spec.yaml")]

        def finished_cells():
            cells = layout.root / "cells"
            return [d for d in cells.iterdir() if (d / "checkpoints.json").exists()] if cells.exists() else []

        log = open(tmp_path / "driver.log", "wb")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        deadline = time.time() + 600
        while not finished_cells():
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.time() < deadline, "no cell finished in time"
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        (first,) = finished_cells()
        first_record = read_json(first / "checkpoints.json")

        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=900)
        assert rerun.returncode == 0, rerun.stderr[-4000:]
        assert "trained 1 cell(s), skipped 1 finished" in rerun.stderr
        assert read_json(first / "checkpoints.json") == first_record

        cols = ["cell_id", "epoch", "split", "ability", "score", "expected", "items"]
        scores = storage.read_parquet(layout.scores)
        diff = scores.select(cols).join(reference.select(cols), on=cols[:4], how="full", suffix="_local").filter(
            (pl.col("score") != pl.col("score_local")) | pl.col("score").is_null() | pl.col("score_local").is_null())
        assert diff.is_empty(), diff.to_dicts()[:10]
        assert (layout.report / "index.html").is_file() and (layout.report / "summary.json").is_file()
        kept = 0
        client = _mlflow(spec).tracking.MlflowClient()
        for cell_dir in (layout.root / "cells").iterdir():
            if not (cell_dir / "checkpoints.json").exists():
                continue  # the untuned base's results (transfer's volume 0): scored, never trained
            cks = read_json(cell_dir / "checkpoints.json")["checkpoints"]
            assert all(c["path"].startswith(f"s3://{server.bucket}/studies/itest/train/") for c in cks)
            models = [storage.as_location(c["path"]) / "model" / "config.json" for c in cks]
            kept += sum(m.exists() for m in models)
            assert (cell_dir / "predictions" / "epoch_001.parquet").is_file()
            steps = [m.step for m in client.get_metric_history(read_json(cell_dir / "mlflow.json")["run_id"],
                                                               "train/loss")]
            assert sorted(steps) == [1, 2]  # the killed driver's cell logged once, not again on the rerun
        assert kept == 2  # retention "best": one epoch's weights per cell stay in the store
        assert not (tmp_path / "s3:").exists() and not any(tmp_path.glob("**/studies"))

        again = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=900)
        assert again.returncode == 0, again.stderr[-4000:]
        assert "trained 0 cell(s), skipped 2 finished" in again.stderr
        assert "scored 0 checkpoint(s), skipped 4 already scored" in again.stderr
        assert storage.read_parquet(layout.scores).equals(scores)
    finally:
        server.stop()
        storage._filesystem.cache_clear()


def test_two_formulations_letter_text_training_scored_logged_reported_and_rescored(ray_cluster, small_data, tmp_path):
    """evaluation.formulation [option, letter] with training.choice_target letter_text, end to end: the
    cell trains on option lines, every eval item is scored in both formulations (option under the split
    names, letter under `test.letter` ...), MLflow holds both, the report names them, rescore keeps them."""
    from growthpace.jobs.run import run_rescore, run_study
    from growthpace.platform.data.records import read_records

    spec = _spec(tmp_path, small_data, volumes=[10], evaluation={"formulation": ["option", "letter"]},
                 training={"choice_target": "letter_text"})
    index = run_study(spec)
    layout = Layout.for_spec(spec)
    scores = pl.read_parquet(layout.scores)
    (cell_id,) = scores["cell_id"].unique().to_list()
    trained = read_records(layout.cell_data(cell_id), eval_split=False)
    assert [r.gold for r in trained if r.type == "biology"][0][1:3] == ". "  # `B. heart`, not `B`
    splits = set(scores["split"])
    assert splits == {"valid", "test", "ood", "valid.letter", "test.letter", "ood.letter"}
    n_sets = 2 * len(ABILITIES) + len(OOD_SUBJECTS)
    assert scores.height == 2 * 2 * n_sets  # epochs x formulations x sets

    def at(split, ability):
        return scores.filter((pl.col("split") == split) & (pl.col("ability") == ability) & (pl.col("epoch") == 2))

    assert at("test", "biology")["expected"].to_list() == [25.0] == at("test.letter", "biology")["expected"].to_list()
    assert at("test", "math")["score"].to_list() == at("test.letter", "math")["score"].to_list()  # math is math
    preds = pl.read_parquet(layout.cell_predictions(cell_id, 2))
    kinds = dict(preds.filter(pl.col("ability").is_in(["history", "biology"])).group_by("split")
                 .agg(pl.col("kind").unique().sort()).iter_rows())
    assert kinds["test"] == kinds["valid"] == ["perplexity"]
    assert "choice" in kinds["test.letter"] and set(kinds["test.letter"]) <= {"choice", "true_false"}

    client = _mlflow(spec).tracking.MlflowClient()
    run_id = read_json(layout.cell_run(cell_id))["run_id"]
    logged = client.get_metric_history(run_id, "test.letter/biology")
    assert [m.value for m in sorted(logged, key=lambda m: m.step)] == pytest.approx(
        scores.filter((pl.col("split") == "test.letter") & (pl.col("ability") == "biology")).sort("epoch")["score"].to_list())

    summary = read_json(layout.report / "summary.json")
    assert summary["formulation"]["primary"] == "option" and summary["formulation"]["secondary"] == ["letter"]
    assert {r["split"] for r in summary["formulation"]["rows"]} == {"test", "ood"}
    page = Path(index).read_text(encoding="utf-8")
    assert "Scores use the option formulation" in page and "Formulations side by side" in page

    assert run_rescore(spec) == 2 + 1  # the cell's two epochs and the untuned base
    assert pl.read_parquet(layout.scores).equals(scores)
