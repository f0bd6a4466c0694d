"""Security: a local Ray cluster on loopback with token auth, no secret in MLflow or dumped specs, and no
path derived from a spec or a stored file that leaves the storage directory. None of these tests starts
Ray (docs/reliability.md records the one-off measurement of what a real local cluster binds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from growthpace.platform.store.storage import storage_root
from growthpace.platform.core.allocation import Allocation
from growthpace.platform.core.cells import Cell
from growthpace.platform.core.spec import Spec, SpecError
from growthpace.platform.data.specfile import load_spec
from growthpace.platform.store.storage import Layout, write_json
from growthpace.platform.core.paths import PathError, safe_name
from growthpace.platform.core.redaction import REDACTED, is_secret, redact, redact_text
from growthpace.platform.store.tracking import StudyTracker

REPO = Path(__file__).resolve().parents[1]
SECRETS = ["hunter2-hf", "hunter2-api", "hunter2-pw", "hunter2-aws", "hunter2-url", "hunter2-env"]


def _spec(tmp_path: Path, **extra) -> Spec:
    return Spec.model_validate({
        "name": "sec", "storage": str(tmp_path / "store"), "models": [{"name": "llama-nano", "size": "s"}],
        "data": {"root": str(tmp_path / "data")}, **extra,
    })


# ---------------------------------------------------------------- Ray: loopback and token auth


class _FakeRay(types.ModuleType):
    """Stands in for `ray` so connect() can be checked without starting a cluster."""

    def __init__(self):
        super().__init__("ray")
        self.calls: list[dict] = []
        self._private = types.ModuleType("ray._private")
        self._private.ray_constants = types.SimpleNamespace(ENABLE_RAY_CLUSTER=True)

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs) -> None:
        keys = ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
        self.calls.append({"kwargs": kwargs, "env": {k: os.environ.get(k) for k in keys}})


@pytest.fixture
def fake_ray(monkeypatch):
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setitem(sys.modules, "ray._private", fake._private)
    for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        monkeypatch.setenv(key, "")  # recorded, so what connect() sets is undone after the test
        monkeypatch.delenv(key)
    return fake


def test_local_cluster_is_loopback_and_leaves_auth_to_rays_token_default(fake_ray, tmp_path):
    from growthpace.jobs.cluster import connect

    connect(_spec(tmp_path))
    (call,) = fake_ray.calls
    # RAY_AUTH_MODE stays unset: ray.init then turns token auth on (checked against Ray's code below)
    assert call["env"] == {"RAY_AUTH_MODE": None, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    assert call["kwargs"]["_node_ip_address"] == "127.0.0.1" and call["kwargs"]["include_dashboard"] is False
    assert fake_ray._private.ray_constants.ENABLE_RAY_CLUSTER is False  # Ray may have been imported first


def test_local_cluster_settings_can_be_overridden(fake_ray, tmp_path, monkeypatch):
    from growthpace.jobs.cluster import connect

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    connect(_spec(tmp_path))
    assert fake_ray.calls[0]["env"] == {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    assert fake_ray._private.ray_constants.ENABLE_RAY_CLUSTER is True


def test_attaching_to_a_cluster_changes_nothing(fake_ray, tmp_path, monkeypatch):
    from growthpace.jobs.cluster import connect

    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    connect(_spec(tmp_path))
    call = fake_ray.calls[0]
    assert call["env"] == {"RAY_AUTH_MODE": None, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": None}
    assert "_node_ip_address" not in call["kwargs"]


def test_ray_itself_reads_those_settings_as_loopback_and_token():
    """Ray's own code (imported, no cluster started): with the variable connect() sets, the node address
    a local cluster binds is 127.0.0.1 (without it Ray 2.60 replaces 127.0.0.1 by a routable address),
    and what ray.init runs for a new local cluster with RAY_AUTH_MODE unset turns token auth on."""
    probe = (
        "import json, ray\n"
        "from ray._private import services\n"
        "from ray._private.authentication.authentication_token_setup import enable_token_auth_by_default\n"
        "from ray._raylet import AuthenticationMode, get_authentication_mode\n"
        "enable_token_auth_by_default()  # what ray.init() calls before it starts a new local cluster\n"
        "print(json.dumps({'ip': services.resolve_ip_for_localhost('127.0.0.1'),\n"
        "                  'token': get_authentication_mode() == AuthenticationMode.TOKEN}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}

    def run(extra: dict) -> dict:
        out = subprocess.run([sys.executable, "-c", probe], env={**env, **extra}, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    from growthpace.jobs.cluster import LOCAL_CLUSTER_ENV

    assert run(LOCAL_CLUSTER_ENV) == {"ip": "127.0.0.1", "token": True}
    assert run({"RAY_AUTH_MODE": "disabled"})["token"] is False


# ---------------------------------------------------------------- secrets


def test_secret_names():
    for name in ("HF_TOKEN", "api_key", "apiKey", "AWS_SECRET_ACCESS_KEY", "db_password", "PASSWD", "client-secret"):
        assert is_secret(name), name
    for name in ("max_new_tokens", "tokens_per_item", "throughput_tokens_per_gpu_s", "lr", "cell_id", "keyboard"):
        assert not is_secret(name), name


def test_redact_values_lists_urls_and_assignments():
    out = redact({
        "HF_TOKEN": "hunter2", "lr": 0.1, "env": {"WANDB_API_KEY": "hunter2", "PATH": "/bin"},
        "uri": "https://bob:hunter2@mlflow.example:5000/", "args": ["--x", "DB_PASSWORD=hunter2"], "token": None,
    })
    assert "hunter2" not in json.dumps(out)
    assert out["HF_TOKEN"] == REDACTED and out["env"] == {"WANDB_API_KEY": REDACTED, "PATH": "/bin"}
    assert out["uri"] == f"https://{REDACTED}@mlflow.example:5000/" and out["args"] == ["--x", f"DB_PASSWORD={REDACTED}"]
    assert out["lr"] == 0.1 and out["token"] is None
    assert redact_text("sqlite:////tmp/s/mlflow.db") == "sqlite:////tmp/s/mlflow.db"


def test_no_secret_reaches_mlflow(tmp_path):
    """A real sqlite MLflow store: the parent's and a cell's params are redacted, and no secret value is
    anywhere in the database file."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = StudyTracker(uri, "security", Layout(tmp_path / "store"))
    parent = tracker.parent("sec", {
        "study": "sec", "HF_TOKEN": SECRETS[0], "openai.api_key": SECRETS[1],
        "tracking_uri": f"http://alice:{SECRETS[4]}@mlflow:5000", "ray.env_vars": {"AWS_SECRET_ACCESS_KEY": SECRETS[3]},
        "env": [f"HF_TOKEN={SECRETS[5]}"], "volumes": "10,40",
    })
    cell = Cell(cell_id="c0ffee0001", study="sec", model="llama-nano", size="s", source="curated", volume=10,
                mix=None, seed=0, allocation=Allocation({"math": 10}), epochs=1,
                training={"lr": 0.001, "db_password": SECRETS[2], "max_length": 64})
    child = tracker.child(parent, cell)
    client = MlflowClient(tracking_uri=uri)
    p_params, c_params = client.get_run(parent).data.params, client.get_run(child).data.params
    assert p_params["HF_TOKEN"] == REDACTED and p_params["openai.api_key"] == REDACTED
    assert p_params["volumes"] == "10,40" and "alice" not in p_params["tracking_uri"]
    assert c_params["train.db_password"] == REDACTED and c_params["train.lr"] == "0.001"
    everything = json.dumps([p_params, c_params])
    assert not any(s in everything for s in SECRETS), everything
    db = (tmp_path / "mlflow.db").read_bytes()
    assert not any(s.encode() in db for s in SECRETS)
    assert not any(s in (tmp_path / "store" / "tracking.json").read_text() for s in SECRETS)


def test_study_json_is_redacted(tmp_path, monkeypatch):
    """The spec dumped to storage (study.json) loses secret-named fields, e.g. ray.env_vars.HF_TOKEN."""
    import growthpace.jobs.study as study

    spec = _spec(tmp_path, ray={"env_vars": {"HF_TOKEN": SECRETS[0], "NCCL_DEBUG": "WARN"}},
                 tracking={"uri": f"http://alice:{SECRETS[4]}@mlflow:5000"})
    monkeypatch.setattr(study, "ensure_base_model", lambda *a, **k: tmp_path / "base")
    study.materialise(study.Study(spec, Layout.for_spec(spec), None, [], None, None))
    text = (storage_root(spec.storage) / "study.json").read_text()
    assert not any(s in text for s in SECRETS), text
    dumped = json.loads(text)
    assert dumped["ray"]["env_vars"] == {"HF_TOKEN": REDACTED, "NCCL_DEBUG": "WARN"}


# ---------------------------------------------------------------- paths stay under storage


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x", "", "has space", "x\\y", "/abs", "é"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(PathError):
        safe_name(name, "thing")


def test_layout_refuses_ids_that_leave_storage(tmp_path):
    layout = Layout(tmp_path / "store")
    for make in (layout.cell, layout.cell_checkpoints, layout.base_model, layout.tokenizer):
        with pytest.raises(PathError):
            make("../../etc")
    with pytest.raises(PathError):
        layout.cell_scores("..", 1)
    assert layout.cell("0123abcd").parent == tmp_path / "store" / "cells"


def _raw(tmp_path: Path, **over) -> Path:
    raw = {"name": "t", "storage": "store", "models": [{"name": "llama-nano", "size": "s"}], "data": {"root": "data"}}
    raw.update(over)
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.mark.parametrize("mix", ["..", ".", "../../evil", "a/b", "x y"])
def test_spec_mix_names_must_be_safe(tmp_path, mix):
    with pytest.raises(SpecError, match=r"field 'data.mixes\[0\].name'"):
        load_spec(_raw(tmp_path, data={"root": "data", "mixes": [{"name": mix, "total": 10}]}))


@pytest.mark.parametrize("name", ["..", ".", "a/b"])
def test_spec_study_name_must_be_safe(tmp_path, name):
    with pytest.raises(SpecError, match=r"field 'name'"):
        load_spec(_raw(tmp_path, name=name))


def test_cell_ids_from_stored_scores_are_checked(tmp_path):
    """report.load_verdicts reads cells/<id>/predictions for ids found in scores.parquet."""
    import polars as pl

    from growthpace.jobs.report import load_verdicts

    selected = pl.DataFrame({"cell_id": ["../../outside"], "selected_epoch": [1], "split": ["test"], "ability": ["math"]})
    with pytest.raises(PathError):
        load_verdicts(tmp_path / "store", selected)


def test_retention_never_deletes_outside_storage(tmp_path):
    """A checkpoint list pointing outside storage (edited, copied) makes retention warn, not delete."""
    from growthpace.jobs.evaluate import apply_retention

    layout = Layout(tmp_path / "store")
    outside = tmp_path / "elsewhere" / "checkpoint_000000"
    (outside / "model").mkdir(parents=True)
    (outside / "model" / "model.safetensors").write_bytes(b"x")
    cell = Cell(cell_id="c0ffee0002", study="t", model="llama-nano", size="s", source="curated", volume=10, mix=None,
                seed=0, allocation=Allocation({"math": 10}), epochs=1, training={})
    write_json(layout.cell_checkpoints(cell.cell_id), {"cell_id": cell.cell_id, "checkpoints": [{"epoch": 1, "path": str(outside)}]})
    write_json(layout.cell_scores(cell.cell_id, 1).with_suffix(".json"), {"key": "ck-sets-1", "backend": "transformers"})
    assert apply_retention(cell, layout, "none", None) == []
    assert (outside / "model" / "model.safetensors").exists()


def test_recommend_name_cannot_leave_storage(tmp_path):
    """`growthpace recommend --name` names <storage>/recommendations/<name>.yaml: a path in it is refused."""
    spec = _raw(tmp_path)
    out = subprocess.run([sys.executable, "-m", "growthpace.cli", "recommend", str(spec), "--budget", "10",
                          "--name", "../../evil"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "--name" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "store").exists() and not list(tmp_path.rglob("evil*"))
