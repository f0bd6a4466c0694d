"""The Ray Tune callback that feeds the study's progress view (jobs/progress.py).

It holds no state: Tune pickles its callbacks into the experiment and a restored sweep brings this one
back, so it finds the view of the process it runs in at call time.
"""

from __future__ import annotations

from pathlib import Path

from ray.tune import Callback

from growthpace.jobs.progress import active


def _cell(trial) -> str:
    cell_id = trial.config.get("trial", {}).get("cell", {}).get("cell_id", trial.trial_id)
    view = active()
    return view.labels.get(cell_id, cell_id) if view else cell_id


def error_text(trial) -> str:
    """The trial's error with its traceback, as Tune stored it."""
    path = trial.error_file
    if path and Path(path).exists():
        return Path(path).read_text(errors="replace")
    return str(trial.get_pickled_error() or "no error text was stored")


class CellProgress(Callback):
    what = "cell"

    def label(self, trial) -> str:
        return _cell(trial)

    def done(self, view, label: str) -> None:
        view.cell_trained(label)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if active() is not None:
            self.done(active(), self.label(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        if active() is not None:
            active().cell_failed(self.label(trial), error_text(trial), what=self.what)


class PretrainProgress(CellProgress):
    """The same for the pre-training trials (jobs/pretrain.py): one per base model, named by its size."""

    what = "pre-training of"

    def label(self, trial) -> str:
        return trial.config.get("trial", {}).get("job", {}).get("size", trial.trial_id)

    def done(self, view, label: str) -> None:
        view.base_pretrained(label)
