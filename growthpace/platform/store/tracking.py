"""MLflow, touched here only: one parent run per study, one child run per cell.

Ray's MLflow integrations neither nest runs nor re-attach after a restore, so the study creates the
runs itself and keeps their ids on disk: a rerun or a resumed cell continues the same run.

MLflow is a mirror, never the record: scores and losses live in the study's storage. Logging is
best effort (a tracking outage warns once and the study goes on), and `sync` re-derives every metric
from storage and logs the points MLflow lacks, so it can run any number of times without duplicates.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from growthpace.platform.core.redaction import redact, redact_text
from growthpace.platform.store.storage import Layout, read_json, write_json

# An unreachable server must cost seconds, not MLflow's default minutes of retries per call.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


class TrackingError(ValueError):
    """The tracking URI cannot be used: names the setting."""


# MLflow 3's UI opens an experiment in its GenAI view unless this tag says it is for model training.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def artifact_location(uri: str) -> str | None:
    """Where a new experiment's artifacts go: beside a sqlite store (under the study's storage for the
    default store), else the tracking server's own artifact store. MLflow's default for a sqlite store
    is ./mlruns of whatever folder the command ran in, which scatters a study's report copies."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def preflight(uri: str) -> None:
    """Fail early and clearly when tracking.uri is wrong, before anything is trained."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        _client(uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - any failure means the same thing to the user
        reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise TrackingError(redact_text(f"field 'tracking.uri': cannot reach the MLflow server at {uri}: {reason}")) from None


class _BestEffort:
    """Turns tracking failures into one warning; the study's own files stay the record."""

    offline = False
    failures = 0  # across every tracker of this process: tells the study to sync at the end

    def _try(self, what: str, fn, *args, **kwargs):
        if self.offline:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            self.offline = True
            _BestEffort.failures += 1
            print(
                f"warning: MLflow unavailable ({what}: {redact_text(str(e).splitlines()[0][:200]) if str(e) else type(e).__name__}); "
                "results stay in storage, run `growthpace sync SPEC` when it is back",
                file=sys.stderr,
            )
            return None


def _new_points(client, run_id: str, series: dict[str, dict[int, float]]) -> list:
    """Metric points (key -> step -> value) the run lacks; a changed value counts as new."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    new = []
    for key, points in series.items():
        have = {(m.step, m.value) for m in client.get_metric_history(run_id, key)}
        new += [Metric(key, float(v), now, int(step)) for step, v in points.items() if (int(step), float(v)) not in have]
    return new


class CellRun(_BestEffort):
    """Logs into one existing run (from a training worker or the scoring job)."""

    def __init__(self, uri: str, run_id: str, client=None):
        self.client = client or _client(uri)
        self.run_id = run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        """A point already logged at this step (a resumed epoch) is not logged twice."""

        def send():
            new = _new_points(self.client, self.run_id, {k: {step: v} for k, v in metrics.items()})
            if new:
                self.client.log_batch(self.run_id, metrics=new)

        self._try("log metrics", send)


class StudyTracker(_BestEffort):
    def __init__(self, uri: str, experiment: str, layout: Layout):
        self.uri = uri
        self.client = _client(uri)
        self.layout = layout
        self.experiment = experiment
        self._experiment_id: str | None = None

    @property
    def experiment_id(self) -> str:
        """Looked up only when a run must be created, so a resumed study needs no server to start."""
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                self._experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=artifact_location(self.uri), tags={EXPERIMENT_KIND: MODEL_TRAINING}
                )
            else:
                self._experiment_id = exp.experiment_id
                if exp.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:  # made by an older version, or by hand
                    self.client.set_experiment_tag(self._experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        return self._experiment_id

    def parent(self, study: str, params: dict[str, Any]) -> str:
        path = self.layout.tracking
        if path.exists():
            return read_json(path)["parent_run_id"]
        run = self.client.create_run(self.experiment_id, run_name=study, tags={"growthpace.study": study})
        self._params(run.info.run_id, params)
        write_json(path, {"parent_run_id": run.info.run_id, "uri": redact_text(self.uri)})
        return run.info.run_id

    def child(self, parent_id: str, cell) -> str:
        """The cell's run, created once under the parent and remembered in the cell's folder."""
        path = self.layout.cell_run(cell.cell_id)
        if path.exists():
            return read_json(path)["run_id"]
        run = self.client.create_run(
            self.experiment_id,
            run_name=cell.label,
            tags={
                "mlflow.parentRunId": parent_id,
                "growthpace.study": cell.study,
                "growthpace.cell_id": cell.cell_id,
                "growthpace.size": cell.size,
            },
        )
        self._params(run.info.run_id, cell.params())
        write_json(path, {"run_id": run.info.run_id})
        return run.info.run_id

    def _params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in redact(dict(params)).items()]  # no secret reaches MLflow
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        if not self.offline:
            run = CellRun(self.uri, run_id, self.client)
            run.log(metrics, step)
            self.offline = run.offline

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self._try("finish run", self.client.set_terminated, run_id, status=status)

    def log_artifacts(self, run_id: str, folder: Path) -> None:
        self._try("log artifacts", self.client.log_artifacts, run_id, str(folder))

    def log_series(self, run_id: str, series: dict[str, dict[int, float]]) -> int:
        """Log metric points (key -> step -> value) the run does not have yet; returns how many.

        A re-made report would otherwise add a duplicate point per step to every curve in MLflow's
        charts; a changed value is logged (and becomes the latest).
        """

        def send() -> int:
            new = _new_points(self.client, run_id, series)
            for i in range(0, len(new), 1000):
                self.client.log_batch(run_id, metrics=new[i : i + 1000])
            return len(new)

        return self._try("log metrics", send) or 0
