"""`growthpace run` in a subprocess: a cell that fails shows its error on the console.

The console of a study that succeeds (the progress view and the closing summary, never Tune's trial
tables; what Ray and the other libraries print in <storage>/logs/ray.log) is checked on the submitted
job's console, tests/test_job_submit.py, which runs the same command.
"""

import os
import subprocess
import sys

import pytest

from tests.test_integration import _spec

pytestmark = pytest.mark.integration


def _run(spec_path, ray_cluster, cwd):
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    cmd = [sys.executable, "-m", "growthpace", "run", str(spec_path)]
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                          timeout=900)
    return done.returncode, done.stdout


def test_failed_cell_shows_its_error_on_the_console(ray_cluster, small_data, tmp_path):
    # A real failure inside the Ray Train worker: the worker reads its thread count from this variable.
    _spec(tmp_path, small_data, volumes=[10], tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
          ray={"env_vars": {"GROWTHPACE_TORCH_THREADS": "not-a-number"}}, training={"max_concurrent_trials": 1})
    rc, out = _run(tmp_path / "spec.yaml", ray_cluster, tmp_path)
    assert rc == 1, out[-3000:]
    assert "cell nano/curated-10/s0 failed" in out, out
    assert 'growthpace/platform/train/train.py", line' in out, out  # the worker's traceback, frame by frame
    assert "invalid literal for int() with base 10: 'not-a-number'" in out, out
    assert "logs/ray.log" in out
    assert "error: 1 cell(s) did not finish: nano/curated-10/s0. ValueError: invalid literal" in out, out
    assert len(out.splitlines()) < 60, out  # the cell's traceback, not the driver's as well
