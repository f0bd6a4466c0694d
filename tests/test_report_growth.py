"""The growth-pace report end to end on a synthetic study in storage: files, numbers, MLflow, CLI."""

import json
import math

import numpy as np
import polars as pl
import pytest
import yaml

from growthpace.jobs import report
from growthpace.platform.analysis import growth
from growthpace.platform.report import page as html_page
from growthpace.platform.core.abilities import ABILITIES, OOD_SUBJECTS
from growthpace.platform.core.spec import Mix
from growthpace.platform.data.specfile import load_spec
from growthpace.platform.store.storage import write_json

SIZES = {"0.2M": 0.0, "1.6M": 10.0}  # the larger model's ceiling is 10 points higher
VOLUMES = [10, 40, 160, 640]
ITEMS = 40


def _curve(ability: str, size: str, source: str) -> growth.GrowthCurve:
    i = ABILITIES.index(ability)
    base = 25.0
    if source == "synthetic" or ability in ("ethics", "role_play"):
        return growth.GrowthCurve(base, base, base + 1, 8, 1)  # flat
    return growth.GrowthCurve(base, base, 55 + SIZES[size] + i, math.log2(80 + 20 * i), 1.5)


def _scores(rng, mixes: dict[str, dict[str, int]]) -> pl.DataFrame:
    rows = []

    def cell(cell_id, size, source, volume, mix, score_of):
        for epoch in (1, 2, 3):
            for split in ("valid", "test"):
                for a in ABILITIES:
                    p = score_of(a) * (0.6 if epoch == 1 else 1.0)
                    s = 100 * rng.binomial(ITEMS, min(p, 100) / 100) / ITEMS
                    rows.append((cell_id, epoch, split, a, s, 25.0, ITEMS, size, source, volume, mix))
            for subj in OOD_SUBJECTS:
                rows.append((cell_id, epoch, "ood", subj, 20.0 + volume / 64, 25.0, 20, size, source, volume, mix))

    for size in SIZES:
        for source in ("curated", "synthetic"):
            for v in VOLUMES:
                cell(f"{size}-{source}-{v}", size, source, v, "", lambda a: float(_curve(a, size, source)(v)))
        for mix, counts in mixes.items():
            cell(f"{size}-{mix}", size, "mix", sum(counts.values()), mix,
                 lambda a: float(_curve(a, size, "curated")(counts[a] * 10)))
    frame = pl.DataFrame(rows, orient="row", schema=["cell_id", "epoch", "split", "ability", "score", "expected", "items",
                                                     "size", "source", "volume", "mix"])
    return frame.with_columns(model=pl.lit("m"), seed=pl.lit(0), epochs=pl.lit(3))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Storage with scores.parquet, cards for the mix cells, and per-item predictions for some cells."""
    root = tmp_path_factory.mktemp("store")
    rng = np.random.default_rng(0)
    even = {a: 32 for a in ABILITIES}
    skewed = {**{a: 20 for a in ABILITIES}, "code": 60, "math": 60, "ethics": 20}
    skewed["biology"] += 320 - sum(skewed.values())
    mixes = {"even-320": even, "recommended-320": skewed}
    scores = _scores(rng, mixes)
    scores.write_parquet(root / "scores.parquet")
    for cell_id, mix in scores.filter(pl.col("mix") != "").select("cell_id", "mix").unique().iter_rows():
        write_json(root / "cells" / cell_id / "card.json", {"counts": mixes[mix], "total": 320})
    # Per-item verdicts for the 1.6M curated cells (every epoch), consistent with their test scores.
    for cell_id in [f"1.6M-curated-{v}" for v in VOLUMES]:
        part = scores.filter(pl.col("cell_id") == cell_id)
        frames = {}
        for epoch, split, ability, score, items in part.select("epoch", "split", "ability", "score", "items").iter_rows():
            k = round(score / 100 * items)
            frames.setdefault(epoch, []).append(pl.DataFrame({
                "split": split, "ability": ability, "idx": [str(i) for i in range(items)],
                "correct": [i < k for i in range(items)], "expected": 0.25}))
        for epoch, fs in frames.items():
            path = root / "cells" / cell_id / "predictions" / f"epoch_{epoch:03d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pl.concat(fs).write_parquet(path)
    spec = {
        "name": "synthetic-study", "storage": str(root),
        "models": [{"name": "llama-nano", "size": "0.2M"}, {"name": "llama-mini", "size": "1.6M"}],
        "data": {"root": str(root / "no-data"), "sources": ["curated", "synthetic"], "volumes": VOLUMES},
        "training": {"epochs": 3},
        "analysis": {"bootstrap_samples": 60},
    }
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    return root, scores, load_spec(root / "spec.yaml")


def test_report_writes_every_section_and_its_numbers(study):
    root, scores, spec = study
    index = report.write_report(scores, root / "report", spec.name, spec.evaluation.warmup_for, spec=spec)
    folder = index.parent
    for name in ("index.html", "summary.json", "selected.csv", "abilities.png", "sources.png", "ood.png",
                 "recommendation.png", "recommended-320.yaml"):
        assert (folder / name).stat().st_size > 100, name
    s = json.loads((folder / "summary.json").read_text())
    page = (folder / "index.html").read_text()

    # Both bootstrap paths ran: stored verdicts for the 1.6M curated cells, binomial for the rest.
    assert set(s["bootstrap"]["rows_by_method"]) == {"items", "binomial"}
    assert s["params"] == {"0.2M": 2e5, "1.6M": 1.6e6}
    classes = {a["ability"]: a["class"] for a in s["abilities"]}
    assert classes["ethics"] == classes["role_play"] == "flat"
    assert all(classes[a] != "flat" for a in ABILITIES if a not in ("ethics", "role_play"))
    # Every number on the page comes from summary.json (spot checks of each section).
    for a in s["abilities"]:
        assert html_page.pm(a["range_gain_per_doubling"]) in page and a["class"] in page
    gap = next(g for g in s["source_gap"] if g["ability"] == "mean" and g["volume"] == 640 and g["size"] == "1.6M")
    assert gap["gap"]["lo"] > 10 and html_page.pm(gap["gap"]) in page  # curated far above flat synthetic
    assert s["transfer"]["r"]["value"] > 0.5 and html_page.pm(s["transfer"]["r"], 2) in page
    assert len(s["extrapolation"]["rows"]) == 20 and html_page.f(s["extrapolation"]["mean_abs_error"]) in page
    rec = s["recommendation"]
    assert rec["budget"] == 320 and rec["size"] == "1.6M"  # default: half the largest volume, largest size
    Mix.model_validate(rec["mix"])
    assert rec["allocations"]["recommended"]["ethics"] < rec["allocations"]["even"]["ethics"]
    assert html_page.pm(rec["gain_over_even"]) in page
    # The named-mix cells: measured against predicted, and the gain over the even split.
    assert {m["mix"] for m in s["mix_check"]["mixes"]} == {"even-320", "recommended-320"}
    (g,) = [g for g in s["mix_check"]["gains"] if g["size"] == "1.6M"]
    assert g["mix"] == "recommended-320" and g["reference"] == "even-320"
    assert html_page.pm(g["measured"]) in page and html_page.pm(g["predicted"]) in page


def test_report_without_stored_predictions_uses_the_binomial_fallback(study, tmp_path):
    _, scores, spec = study
    index = report.write_report(scores, tmp_path / "report", spec.name, spec.evaluation.warmup_for)
    s = json.loads((index.parent / "summary.json").read_text())
    assert set(s["bootstrap"]["rows_by_method"]) == {"binomial"}
    assert all(r["lo"] is not None and r["lo"] <= r["score"] <= r["hi"] for r in s["measured"])


def test_mlflow_series_and_tracking(study, tmp_path):
    root, scores, spec = study
    report.write_report(scores, tmp_path / "report", spec.name, spec.evaluation.warmup_for, spec=spec)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    series = report.mlflow_series(summary)
    assert set(series["curve/1.6M/code"]) == set(VOLUMES)
    assert series["curve/1.6M/code"][640] == pytest.approx(
        next(r["score"] for r in summary["measured"] if r["size"] == "1.6M" and r["ability"] == "code"
             and r["source"] == "curated" and r["volume"] == 640))
    assert "pace/code/range_gain_per_doubling" in series and "pace/1.6M/code/ceiling" in series

    from growthpace.platform.store.storage import Layout
    from growthpace.platform.store.tracking import StudyTracker

    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "t", Layout(tmp_path))
    run = tracker.parent("t", {})
    n = report.log_analysis(tracker, run, tmp_path / "report")
    assert n == sum(len(p) for p in series.values())
    assert report.log_analysis(tracker, run, tmp_path / "report") == 0  # a re-made report adds no duplicates
    hist = tracker.client.get_metric_history(run, "curve/1.6M/code")
    assert sorted(m.step for m in hist) == VOLUMES


def test_recommend_command(study, tmp_path):
    from typer.testing import CliRunner

    from growthpace.cli import app

    root, _, _ = study
    out = tmp_path / "mix.yaml"
    result = CliRunner().invoke(app, ["recommend", str(root / "spec.yaml"), "--budget", "200", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "predicted gain over the even split" in result.output
    (mix,) = yaml.safe_load(out.read_text())
    assert Mix.model_validate(mix).total == 200 and mix["name"] == "recommended-200"
    bad = CliRunner().invoke(app, ["recommend", str(root / "spec.yaml"), "--budget", "200", "--size", "9B"])
    assert bad.exit_code == 2 and "option '--size'" in bad.output and "recommend_size" not in bad.output  # issue 28


def test_a_study_too_small_for_curves_still_gets_its_report(study, tmp_path):
    _, scores, _ = study
    small = scores.filter((pl.col("size") == "1.6M") & (pl.col("source") == "curated") & pl.col("volume").is_in([10, 40]))
    index = report.write_report(small, tmp_path / "report", "small", lambda epochs: 0)
    s = json.loads((index.parent / "summary.json").read_text())
    assert s["curves"] == [] and s["recommendation"] is None and s["transfer"]["r"] is None
    assert len(s["measured"]) == 2 * (len(ABILITIES) + len(OOD_SUBJECTS))
    assert "a curve needs 3 or more curated volumes" in index.read_text()
    assert (index.parent / "abilities.png").stat().st_size > 1000
