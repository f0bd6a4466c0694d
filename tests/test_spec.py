"""Spec validation: every error names the field; the CLI exits 2 and writes nothing."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from growthpace.platform.core.spec import SpecError
from growthpace.platform.data.specfile import load_spec

REPO = Path(__file__).resolve().parents[1]


def _base(tmp_path: Path) -> dict:
    return {
        "name": "t",
        "storage": str(tmp_path / "store"),
        "models": [{"name": "llama-nano", "size": "s"}],
        "data": {"root": str(tmp_path / "data"), "volumes": [10, 40]},
    }


def _write(tmp_path: Path, spec: dict | str) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return p


def test_local_spec_is_valid():
    spec = load_spec(REPO / "experiments" / "local.yaml")
    assert len(spec.models) >= 2 and len(spec.data.volumes) >= 4
    assert set(spec.data.sources) == {"curated", "synthetic"}


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda s: s.update(bogus=1), "bogus"),
        (lambda s: s["data"].update(volumes=[10, -4]), "data.volumes"),
        (lambda s: s["data"].update(volumes=[0]), "data.volumes"),
        (lambda s: s["data"].update(caps={"astrology": 3}), "data.caps"),
        (lambda s: s["data"].update(mixes=[{"name": "m", "fill": "even", "caps": {"ethic": 1}, "total": 5}]), "data.mixes[0].caps"),
        (lambda s: s["models"][0].update(size=[1, 2]), "models[0].size"),
        (lambda s: s.update(training={"lr": "fast"}), "training.lr"),
        (lambda s: s.update(training={"zero_stage": 4}), "training.zero_stage"),
        (lambda s: s.pop("models"), "models"),
        (lambda s: s.update(models=[]), "models"),
        (lambda s: s["data"].update(sources=["web"]), "data.sources[0]"),
        (lambda s: s.update(name="has space"), "name"),
        (lambda s: s.setdefault("evaluation", {}).update(resources={"by_size": {"99b": {"gpus": 2.0}}}),
         "evaluation.resources.by_size.99b"),
        (lambda s: s.setdefault("evaluation", {}).update(resources={"by_size": {"x": {"concurrency": 0}}}),
         "evaluation.resources.by_size.x.concurrency"),
        # issue 28: the scoring side's resources are as strict as training's; settings that cannot work together
        (lambda s: s.setdefault("evaluation", {}).update(resources={"custom": {"n": -1}}), "evaluation.resources.custom.n"),
        (lambda s: s.setdefault("evaluation", {}).update(resources={"by_size": {"s": {"custom": {"n": True}}}}),
         "evaluation.resources.by_size.s.custom.n"),
        (lambda s: s.setdefault("evaluation", {}).update(splits=["test"]), "evaluation.splits"),
        (lambda s: s["data"].update(synthetic_volumes=[40]), "data.synthetic_volumes"),
        (lambda s: s.update(tracking={"experiment": " "}), "tracking.experiment"),
        (lambda s: s.update(analysis={"seed": -2}), "analysis.seed"),
        (lambda s: s.update(storage="~growthpace-no-such-user/store"), "storage"),
        (lambda s: s["models"][0].update(name="~growthpace-no-such-user/llama"), "models[0].name"),
    ],
)
def test_bad_spec_names_field(tmp_path, mutate, field):
    spec = _base(tmp_path)
    mutate(spec)
    p = _write(tmp_path, yaml.safe_dump(spec))
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert f"field '{field}" in str(e.value), str(e.value)
    assert str(p) in str(e.value)


def test_yaml_syntax_error_names_line(tmp_path):
    p = _write(tmp_path, "name: t\nmodels: [\n  - oops: : :\n")
    with pytest.raises(SpecError, match=r"spec\.yaml:\d+: not valid YAML"):
        load_spec(p)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")


def test_cli_bad_spec_exit_2_and_nothing_written(tmp_path):
    spec = _base(tmp_path)
    spec["data"]["volumes"] = [-1]
    p = _write(tmp_path, yaml.safe_dump(spec))
    out = subprocess.run(
        [sys.executable, "-m", "growthpace.cli", "plan", str(p)], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 2, out.stderr
    assert "data.volumes" in out.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["spec.yaml"]


def test_epochs_by_volume_and_warmup(tmp_path):
    spec = _base(tmp_path)
    spec["training"] = {"epochs": 15, "epochs_by_volume": {10: 30}}
    s = load_spec(_write(tmp_path, yaml.safe_dump(spec)))
    assert s.training.epochs_for(10) == 30 and s.training.epochs_for(40) == 15
    assert s.evaluation.warmup_for(15) == 5  # the study: epochs after 5
    assert s.evaluation.warmup_for(6) == 2  # short local runs: a third
