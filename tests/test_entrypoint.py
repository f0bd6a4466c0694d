"""`python -m growthpace` is the one entrypoint; the job module paths submitted before it still run,
with the same exit code 2 and error line for bad input; no job module imports the CLI back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_python_m_growthpace_lists_the_commands(tmp_path):
    out = _run(["-m", "growthpace", "--help"], tmp_path)
    assert out.returncode == 0, out.stderr
    for command in ("run", "sweep", "evaluate", "rescore", "report", "benchmark"):
        assert command in out.stdout


@pytest.mark.parametrize("args", [["-m", "growthpace", "evaluate"], ["-m", "growthpace.jobs.evaluate"],
                                  ["-m", "growthpace.jobs.run"], ["-m", "growthpace.jobs.sweep"],
                                  ["-m", "growthpace.jobs.report"]])
def test_bad_spec_exits_2_naming_the_field_on_every_path(tmp_path, args):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\nstorage: store\nmodels: [{name: llama-nano, size: s}]\nbogus: 1\n")
    out = _run([*args, str(spec)], tmp_path)
    assert out.returncode == 2, out.stderr
    assert "bogus" in out.stderr and str(spec) in out.stderr.replace("\n", "") and "Traceback" not in out.stderr
    assert not (tmp_path / "store").exists()


def test_no_job_module_imports_the_cli():
    for f in sorted((REPO / "growthpace" / "jobs").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n in ("growthpace.cli", "growthpace.__main__") for n in names), f


def test_a_missing_file_the_os_names_no_path_for_keeps_its_traceback():
    """'[Errno 2] No such file or directory' alone (os.getcwd() in a deleted folder) names nothing a user
    could fix: it is raised with its traceback, while a missing file growthpace names is one line, exit 2."""
    import errno
    import os

    from growthpace.jobs.entry import guard

    def bare():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))

    with pytest.raises(FileNotFoundError):
        guard(bare)

    def named():
        raise FileNotFoundError("store/scores.parquet: no scores yet; run the study first")

    with pytest.raises(SystemExit) as stop:
        guard(named)
    assert stop.value.code == 2
