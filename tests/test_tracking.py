from growthpace.platform.store.storage import Layout
from growthpace.platform.store.tracking import EXPERIMENT_KIND, MODEL_TRAINING, StudyTracker


def test_study_experiment_opens_as_model_training_and_keeps_artifacts_with_the_study(tmp_path, monkeypatch):
    storage = tmp_path / "study"
    storage.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # MLflow's default would put artifacts in ./mlruns here
    tracker = StudyTracker(f"sqlite:///{storage / 'mlflow.db'}", "kind", Layout(storage))
    parent = tracker.parent("kind", {"a": 1})
    report = tmp_path / "report"
    report.mkdir()
    (report / "index.html").write_text("<html></html>")
    tracker.log_artifacts(parent, report)

    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert exp.tags[EXPERIMENT_KIND] == MODEL_TRAINING
    assert list((storage / "mlartifacts").rglob("index.html"))
    assert not (elsewhere / "mlruns").exists()


def test_an_older_experiment_gains_the_model_training_kind(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = StudyTracker(uri, "old", Layout(tmp_path))
    tracker.client.create_experiment("old")
    tracker.parent("old", {})
    assert tracker.client.get_experiment_by_name("old").tags[EXPERIMENT_KIND] == MODEL_TRAINING
