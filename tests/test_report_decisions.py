"""A report in experiments/local.yaml's settings shows the size hold-out, decision accuracy and paired tests, with costs.

A study folder of local.yaml's former shape (3 sizes x 2 sources x 4 volumes, one seed) is filled with
synthetic scores, per-item predictions and the sweep's checkpoint lists, then `growthpace report` runs
on it as a user would.
"""

import html
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from growthpace.platform.analysis import growth
from growthpace.platform.core.abilities import ABILITIES, OOD_SUBJECTS
from growthpace.platform.store.storage import write_json

LOCAL = Path(__file__).resolve().parents[1] / "experiments" / "local.yaml"


def _truth(params: float, source: str, ability: str, volume: int) -> float:
    """Curated grows with data and size; synthetic stays near the random baseline; ethics is flat."""
    if source == "synthetic" or ability == "ethics":
        return 27.0
    d = math.log2(params / 2e5)
    return float(growth.GrowthCurve(25.0, 25.0, 70.0 + 4 * d, 6.0 - 0.3 * d, 1.5)(volume))


@pytest.fixture(scope="module")
def local_study(tmp_path_factory):
    return build_local_study(tmp_path_factory.mktemp("local"))


def build_local_study(root: Path) -> tuple[Path, Path]:
    """(spec path, storage) of a finished local.yaml-shaped study under root, before `growthpace report`."""
    raw = yaml.safe_load(LOCAL.read_text())
    # The shape these checks were written for (3 sizes, so the hold-out fits two; volumes 10-640),
    # declared here so a change of the embedded default's grid does not change what this test checks.
    template = raw["models"][0]
    raw["models"] = [{**template, "name": name, "size": size}
                     for name, size in (("llama-nano", "0.2M"), ("llama-micro", "0.6M"), ("llama-mini", "1.6M"))]
    raw["data"]["volumes"] = [10, 40, 160, 640]
    raw["data"]["generate"].update(valid_per_ability=20, test_per_ability=40, ood_per_subject=20)
    raw["training"].update(epochs=3, epochs_by_volume={10: 6, 40: 4})
    raw["storage"] = str(root / "store")
    raw["data"]["root"] = str(root / "no-data")  # the report never reads the dataset it cannot find
    spec_path = root / "local.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    store = root / "store"
    rng = np.random.default_rng(0)
    by_volume = raw["training"]["epochs_by_volume"]
    gen = raw["data"]["generate"]
    rows, base_rows = [], []
    for m in raw["models"]:
        size = m["size"]
        params = growth.params_from_label(size)
        for source in raw["data"]["sources"]:
            for volume in raw["data"]["volumes"]:
                cell = f"{size}-{source}-{volume}"
                epochs = by_volume.get(volume, raw["training"]["epochs"])
                preds = []
                for epoch in range(1, epochs + 1):
                    for split, n, names in (("valid", gen["valid_per_ability"], ABILITIES),
                                            ("test", gen["test_per_ability"], ABILITIES),
                                            ("ood", gen["ood_per_subject"], OOD_SUBJECTS)):
                        for a in names:
                            p = (_truth(params, source, a, volume) if split != "ood" else 25.0 + volume / 64) / 100
                            correct = rng.random(n) < min(p, 0.99)
                            preds.append(pl.DataFrame({"split": split, "ability": a, "idx": [str(i) for i in range(n)],
                                                       "correct": correct, "epoch": epoch}))
                            rows.append((cell, epoch, split, a, 100 * correct.mean(), 25.0, n, size, source, volume,
                                         "", m["name"], 0, epochs))
                frame = pl.concat(preds)
                for epoch, part in frame.group_by("epoch"):
                    path = store / "cells" / cell / "predictions" / f"epoch_{epoch[0]:03d}.parquet"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    part.drop("epoch").write_parquet(path)
                write_json(store / "cells" / cell / "checkpoints.json",
                           {"cell_id": cell, "checkpoints": [], "wall_s": 36.0 * params / 2e5, "gpus": 1, "cpus": 1.0})
        # The untuned base each size starts from (evaluators/results.py UntunedBase): volume 0, epoch 0,
        # at the random baseline on OOD and a little above it in domain.
        base = f"base-{size}"
        preds = []
        for split, n, names in (("valid", gen["valid_per_ability"], ABILITIES), ("test", gen["test_per_ability"], ABILITIES),
                                ("ood", gen["ood_per_subject"], OOD_SUBJECTS)):
            for a in names:
                correct = rng.random(n) < 0.25
                preds.append(pl.DataFrame({  # every column the result store writes (platform/store/tables.py)
                    "cell_id": base, "epoch": 0, "key": "", "backend": "transformers", "split": split, "ability": a,
                    "idx": [str(i) for i in range(n)], "kind": "choice", "prompt": "", "text": "",
                    "letter_logprobs": None, "candidate_nll": None, "parsed": None, "correct": correct,
                    "expected": 0.25}))
                base_rows.append((base, 0, split, a, 100 * correct.mean(), 25.0, n, size, "base", 0, "", m["name"], 0, 0))
        path = store / "cells" / base / "predictions" / "epoch_000.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pl.concat(preds).write_parquet(path)
    scores = pl.DataFrame(rows, orient="row", schema=["cell_id", "epoch", "split", "ability", "score", "expected", "items",
                                                      "size", "source", "volume", "mix", "model", "seed", "epochs"])
    scores.write_parquet(store / "scores.parquet")
    pl.DataFrame(base_rows, orient="row", schema=scores.columns).write_parquet(store / "base_scores.parquet")
    return spec_path, store


def test_local_report_shows_holdout_decisions_and_paired_tests(local_study):
    from typer.testing import CliRunner

    from growthpace.cli import app

    spec_path, store = local_study
    result = CliRunner().invoke(app, ["report", str(spec_path)])
    assert result.exit_code == 0, result.output
    s = json.loads((store / "report" / "summary.json").read_text())
    page = (store / "report" / "index.html").read_text()

    h = s["size_holdout"]
    assert h["target"] == "1.6M" and h["fitted_on"] == ["0.2M", "0.6M"]
    rows = {r["ability"]: r for r in h["rows"]}
    assert set(rows) == set(ABILITIES)
    for r in rows.values():
        assert {"ability", "mae", "lo", "hi", "baseline_mae"} <= set(r) and r["lo"] <= r["hi"]
        assert r["mae"] >= 0 and r["baseline_mae"] >= 0 and r["verdict"]
    # Cost of the cells behind it: 36 s x params / 2e5 on one GPU per cell, the 4 curated cells of a size.
    assert h["cost_target"]["gpu_hours"] == pytest.approx(4 * 36 * 8 / 3600, rel=1e-6)
    assert h["cost_target"]["basis"] == "measured"

    d = {r["ability"]: r for r in s["decision_accuracy"]["rows"]}
    assert set(d) == {*ABILITIES, "all"}
    # per ability: 4 source pairs + 2 x 6 volume pairs, each at 2 smaller sizes
    assert d["all"]["pairs"] <= len(ABILITIES) * 2 * (4 + 12) and d["code"]["kinds"] == {"source": 8, "volume": 24}
    # Curated beats synthetic on code at every size; a flat ability's rankings are coin tosses.
    assert d["code"]["by_kind"]["source"] >= 0.8 and d["all"]["agree"] > 0.6
    assert d["ethics"]["lo"] < 0.5 < d["ethics"]["hi"]
    assert all(r["lo"] <= r["agree"] <= r["hi"] for r in d.values())

    p = s["paired"]["rows"]
    assert {r["split"] for r in p} == {"test", "ood"}
    assert len([r for r in p if r["split"] == "test"]) == 3 * 4 * len(ABILITIES)
    assert all({"a", "b", "ability", "split", "gap", "lo", "hi", "p", "q"} <= set(r) for r in p)
    big = next(r for r in p if r["a"] == "1.6M/curated-640" and r["ability"] == "code" and r["split"] == "test")
    assert big["gap"] > 20 and big["significant"]
    assert not next(r for r in p if r["a"] == "1.6M/curated-640" and r["ability"] == "ethics")["significant"]
    gap = next(g for g in s["source_gap"] if g["ability"] == "code" and g["size"] == "1.6M" and g["volume"] == 640)
    assert gap["paired"]["significant"] and gap["cost"]["gpu_hours"] == pytest.approx(2 * 36 * 8 / 3600)

    rec = s["recommendation"]
    assert rec["gain_per_1000_items"]["value"] == pytest.approx(rec["gain_over_even"]["value"] * 1000 / rec["budget"])
    for heading in ("Do the smaller sizes predict the largest?", "Do small-scale rankings hold at the largest size?",
                    "Is a gap real? Paired tests on the same items"):
        assert heading in page
    assert "How to read it" in page and "GPU-h" in page and "points per 1,000 items" in page
    assert (store / "report" / "holdout.png").stat().st_size > 1000 and 'src="holdout.png"' in page


def _png_width(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # IHDR: width is the first field


def test_local_report_opens_with_its_findings_and_fits_the_page(local_study):
    import subprocess
    import sys

    from typer.testing import CliRunner

    from growthpace.cli import app

    spec_path, store = local_study
    result = CliRunner().invoke(app, ["report", str(spec_path)])
    assert result.exit_code == 0, result.output
    report = store / "report"
    s = json.loads((report / "summary.json").read_text())
    page = (report / "index.html").read_text()
    h = s["headline"]
    assert (h["size"], h["volume"]) == ("1.6M", 640)
    # _truth: every curated ability but ethics grows well past its baseline; ethics and synthetic stay at 27.
    assert h["above_baseline"]["of"] == len(ABILITIES) and h["above_baseline"]["count"] >= 7
    assert "ethics" in h["pace"]["flat"] and "ethics" not in h["pace"]["fastest"]
    assert h["pace"]["non_overlapping"] and h["pace"]["at_least_threshold"] >= 3
    assert h["sources"]["mean"]["side"] == "above" and h["sources"]["a_better"] >= 5
    # OOD is drawn at 25 + 640 / 64 = 35% on 20 items per subject: its side is whatever the interval says.
    t = h["transfer"]
    assert t["side"] == ("above" if t["ood"]["lo"] > t["baseline"] else None if t["ood"]["hi"] >= t["baseline"] else "below")
    assert len(h["sentences"]) == 6
    # The bases are no cells: 3 sizes x 2 sources x 4 volumes.
    assert s["cells"] == 24 and "base" not in {r["source"] for r in s["measured"]}
    oc = {r["size"]: r for r in s["ood_change"]["rows"]}
    assert set(oc) == {"0.2M", "0.6M", "1.6M"} and all(r["base"] is not None for r in oc.values())
    assert [v["volume"] for v in oc["1.6M"]["volumes"]] == [10, 40, 160, 640]
    big = oc["1.6M"]
    assert big["change"]["value"] == pytest.approx(big["volumes"][-1]["ood"]["value"] - big["volumes"][0]["ood"]["value"])
    assert big["over_base"]["value"] == pytest.approx(big["volumes"][-1]["ood"]["value"] - big["base"]["value"])
    assert h["ood_change"]["row"]["size"] == "1.6M"
    assert "largest - base" in page
    from growthpace.jobs.report import mlflow_series

    series = mlflow_series(s)  # the parent run's transfer/<size>/<subject>: step = volume, 0 = the untuned base
    assert series["transfer/1.6M/mean"] == pytest.approx({0: big["base"]["value"],
                                                          **{v["volume"]: v["ood"]["value"] for v in big["volumes"]}})
    subject = big["per_subject"][0]
    assert series[f"transfer/1.6M/{subject['subject']}"][0] == pytest.approx(subject["base"])
    assert series["transfer/1.6M/mean/change"] == {0: pytest.approx(big["change"]["value"])}
    first = page.index("<h2>Findings</h2>")
    assert first < page.index("<h2>Growth pace per ability</h2>")
    for sentence in h["sentences"]:
        assert sentence.replace("'", "&#x27;") in page
    # Figures are drawn about a laptop page wide and the page scales them down, never past its width.
    assert "img{max-width:100%;height:auto}" in page
    for png in report.glob("*.png"):
        assert 1000 <= _png_width(png) <= 1400, png

    bench = Path(__file__).resolve().parents[1] / "bench" / "findings.py"
    out = subprocess.run([sys.executable, str(bench), str(store)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["goal1", "goal2", "goal3", "goal4", "goal5"]
    assert lines[4].startswith("goal5 transfer at 1.6M: largest-smallest=")
    assert lines[4].endswith(f"met={h['ood_change']['shown']}")
    assert lines[0].startswith(f"goal1 above_baseline={h['above_baseline']['count']}/10 at 1.6M/640")
    assert lines[0].endswith("met=True") and lines[2].endswith("met=True")
    assert lines[3].endswith(f"met={t['side'] == 'above'}")
    bad = subprocess.run([sys.executable, str(bench), str(spec_path)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a report summary" in bad.stderr


def test_run_closes_with_the_report_its_findings_and_the_mlflow_command(local_study, capsys):
    from types import SimpleNamespace

    from growthpace.jobs.run import _closing_summary
    from growthpace.platform.data.specfile import load_spec
    from growthpace.platform.store.storage import Layout

    spec_path, store = local_study
    if not (store / "report" / "summary.json").exists():
        from typer.testing import CliRunner

        from growthpace.cli import app

        assert CliRunner().invoke(app, ["report", str(spec_path)]).exit_code == 0
    spec = load_spec(spec_path)
    index = str(store / "report" / "index.html")
    _closing_summary(spec, SimpleNamespace(layout=Layout(store)), index)
    out = capsys.readouterr().err.splitlines()
    summary = json.loads((store / "report" / "summary.json").read_text())
    assert out[0] == f"report: {index}"
    assert out[1].strip() == summary["formulation"]["sentence"]
    assert html.escape(summary["formulation"]["sentence"]) in Path(index).read_text(encoding="utf-8")
    assert [line.strip() for line in out[2:-1]] == summary["headline"]["sentences"]
    assert out[-1].startswith(f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri sqlite:///{store.resolve()}/mlflow.db")
