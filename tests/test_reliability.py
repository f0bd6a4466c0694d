"""Tracking outages: the study goes on without MLflow, and `sync` catches MLflow up, once."""

import threading
import time

import polars as pl
import pytest

from growthpace.platform.store.storage import Layout, read_json
from growthpace.platform.store.tracking import TrackingError, preflight
from tests.servers import MlflowServer, free_port
from tests.test_integration import _spec

pytestmark = pytest.mark.integration


def test_preflight_names_the_setting():
    with pytest.raises(TrackingError, match=r"field 'tracking.uri': cannot reach the MLflow server at http://127\.0\.0\.1:\d+"):
        preflight(f"http://127.0.0.1:{free_port()}")


def test_server_down_mid_study_then_sync(ray_cluster, small_data, tmp_path):
    from mlflow.tracking import MlflowClient

    from growthpace.jobs.run import run_study, run_sync

    server = MlflowServer(tmp_path / "mlflow").start()
    try:
        spec = _spec(tmp_path, small_data, volumes=[10, 30], concurrent=1, tracking_uri=server.uri)
        layout = Layout.for_spec(spec)

        def pull_the_plug():
            while not list(layout.root.glob("cells/*/checkpoints.json")):
                time.sleep(0.2)
            server.stop()

        killer = threading.Thread(target=pull_the_plug, daemon=True)
        killer.start()
        run_study(spec)  # completes although MLflow went away after the first cell
        killer.join(timeout=5)
        scores = pl.read_parquet(layout.scores)
        assert scores["cell_id"].n_unique() == 2

        server.start()
        added = run_sync(spec)
        assert added > 0
        assert run_sync(spec) == 0  # idempotent: nothing twice
        client = MlflowClient(server.uri)
        for f in layout.root.glob("cells/*/mlflow.json"):
            run_id = read_json(f)["run_id"]
            cell_id = f.parent.name
            hist = client.get_metric_history(run_id, "test/biology")
            assert sorted(m.step for m in hist) == [1, 2]
            want = scores.filter((pl.col("cell_id") == cell_id) & (pl.col("split") == "test")
                                 & (pl.col("ability") == "biology")).sort("epoch")["score"].to_list()
            assert [m.value for m in sorted(hist, key=lambda m: m.step)] == pytest.approx(want)
            assert sorted(m.step for m in client.get_metric_history(run_id, "train/loss")) == [1, 2]
    finally:
        server.stop()


@pytest.mark.parametrize("resume_every_s", [0, 10**9], ids=["state-every-epoch", "no-state-yet"])
def test_training_worker_killed_resumes_from_last_epoch(ray_cluster, small_data, tmp_path, resume_every_s):
    """SIGKILL the Ray Train worker mid-trial: the trial restarts (FailureConfig) from its newest resume state,
    losing at most the epoch in flight; with no state written yet (a short cell under the default interval)
    it restarts from scratch, and the epochs already committed are trained again but not written twice.
    MLflow keeps one run with one point per epoch."""
    import os
    import signal

    import psutil
    from mlflow.tracking import MlflowClient

    from growthpace.jobs.run import run_sweep

    # resume_every_s 0: a resume state after every epoch but the last; 10**9: none before the last epoch
    spec = _spec(tmp_path, small_data, volumes=[200], epochs=3, training={"resume_every_s": resume_every_s})
    layout = Layout.for_spec(spec)
    def train_workers():
        for p in psutil.process_iter():
            try:
                if "RayTrainWorker" in " ".join(p.cmdline() or []):
                    yield p
            except (psutil.NoSuchProcess, psutil.AccessDenied):  # gone, or a zombie of another test
                pass

    mine = {p.pid for p in train_workers()}
    killed = []

    def kill_worker_after_first_epoch():
        deadline = time.time() + 600
        # Wait until Ray Train has *registered* epoch 1 (its snapshot names a checkpoint), not merely
        # started uploading it: from then on a restart from scratch would be visible as epoch 1 twice.
        while time.time() < deadline and not any(
            "checkpoint_2" in f.read_text() for f in layout.train.glob("*/checkpoint_manager_snapshot.json")
        ):
            time.sleep(0.05)
        for p in train_workers():
            if p.pid not in mine:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                    killed.append(p.pid)
                except ProcessLookupError:
                    pass

    killer = threading.Thread(target=kill_worker_after_first_epoch, daemon=True)
    killer.start()
    study = run_sweep(spec)
    killer.join(timeout=5)
    assert killed, "the worker was not found to kill"
    (cell,) = study.cells
    cks = read_json(layout.cell_checkpoints(cell.cell_id))["checkpoints"]
    assert [c["epoch"] for c in cks] == [1, 2, 3]
    import json

    reported = [json.loads((d / "epoch.json").read_text())["epoch"]
                for d in sorted(layout.train.glob(f"{cell.cell_id}/checkpoint_2*"))]
    assert reported.count(1) == 1, f"a restart from scratch would report epoch 1 again: {reported}"
    assert sorted(set(reported)) == [1, 2, 3] and len(reported) <= 4, f"at most one epoch redone: {reported}"
    from growthpace.platform.train.train import RESUMED_FROM

    snapshot = json.loads((layout.train / cell.cell_id / "checkpoint_manager_snapshot.json").read_text())
    restarted = [r["metrics"][RESUMED_FROM] for r in snapshot["checkpoint_results"] if RESUMED_FROM in r["metrics"]]
    assert restarted, "no epoch was reported after the restart"
    if resume_every_s == 0:
        assert min(restarted) >= 1, f"resumed from a state, not from scratch: {restarted}"
    else:
        assert set(restarted) == {0}, f"no state was written before the kill: from scratch: {restarted}"
    client = MlflowClient(spec.tracking_uri)
    run_id = read_json(layout.cell_run(cell.cell_id))["run_id"]
    assert sorted(m.step for m in client.get_metric_history(run_id, "train/loss")) == [1, 2, 3]
