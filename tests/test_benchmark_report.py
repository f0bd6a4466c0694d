"""The report's benchmark section (platform/analysis/benchmarks.py): lm-eval metrics against volume,
with intervals from lm-eval's standard errors and the pace class of an in-domain ability."""

from growthpace.platform.analysis.benchmarks import benchmark_summary
from growthpace.platform.core.spec import AnalysisSpec
from growthpace.platform.report.page import _benchmarks


def rows(metric, size, score_at, stderr=0.03, seeds=(0, 1)):
    return [{"metric": metric, "size": size, "source": "curated", "volume": v, "seed": s, "value": score_at(v),
             "stderr": stderr} for v in (10, 20, 40, 80, 160) for s in seeds]


def by_size(entry):
    return {g["size"]: g for g in entry["groups"]}


def test_a_rising_benchmark_responds_to_volume_and_a_flat_one_does_not():
    rising = rows("facts/acc", "nano", lambda v: 0.25 + 0.08 * (v.bit_length() - 4))
    flat = rows("sums/exact_match", "nano", lambda v: 0.30)
    out = {e["metric"]: e for e in benchmark_summary(rising + flat, AnalysisSpec())}
    up, level = by_size(out["facts/acc"])["nano"], by_size(out["sums/exact_match"])["nano"]
    assert up["class"] == "volume only" and up["range_gain_per_doubling"]["lo"] > 1
    assert level["class"] == "flat" and level["range_gain_per_doubling"]["lo"] < 1
    point = up["points"][0]  # two seeds' stderr of 3 points combine to 3 / sqrt(2)
    assert point["seeds"] == 2 and abs(point["se"] - 3 / 2**0.5) < 1e-9
    assert point["score"]["lo"] < point["score"]["value"] < point["score"]["hi"]


def test_two_sizes_give_a_gain_per_doubling_of_params_and_a_table_row_each():
    data = rows("facts/acc", "nano", lambda v: 0.30) + rows("facts/acc", "micro", lambda v: 0.40)
    (entry,) = benchmark_summary(data, AnalysisSpec(), {"nano": 1e6, "micro": 4e6})
    assert abs(entry["size_gain_per_doubling"]["curated"] - 5.0) < 1e-6  # 10 points over 2 doublings
    html = _benchmarks({"benchmarks": [entry]})
    assert html.count("<tr>") == 3 and "facts/acc" in html


def test_fewer_than_three_volumes_have_points_but_no_curve():
    data = [r for r in rows("facts/acc", "nano", lambda v: 0.5) if r["volume"] <= 20]
    (entry,) = benchmark_summary(data, AnalysisSpec())
    g = by_size(entry)["nano"]
    assert len(g["points"]) == 2 and g["class"] is None


def test_mlflow_names_of_lm_eval_metrics():
    from growthpace.evaluators.benchmark_results import metric_name, stderr, tracked_metrics

    stored = {"task": "gsm8k", "metrics": {"exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.1,
                                           "acc,none": 0.5, "acc_stderr,none": None}}
    assert metric_name("gsm8k", "acc,none") == "bench/gsm8k/acc"
    assert metric_name("gsm8k", "acc_stderr,none") is None
    assert tracked_metrics(stored) == {"bench/gsm8k/exact_match_strict-match": 0.25, "bench/gsm8k/acc": 0.5}
    assert stderr(stored, "exact_match,strict-match") == 0.1 and stderr(stored, "acc,none") is None


def test_ray_rows_say_what_each_checkpoint_owes():
    """A checkpoint with a current result for its eval items is sent for its benchmarks alone."""
    import json

    from growthpace.evaluators.benchmark_results import BenchTodo
    from growthpace.evaluators.results import ToScore
    from growthpace.jobs.evaluate import bench_rows
    from growthpace.platform.store.tables import ResultKey

    key = ResultKey("abc", "def", "1")
    todo = [ToScore("c1", 1, "/p/1", key), ToScore("c1", 2, "/p/2", key), ToScore("c2", 1, "/q/1", key)]
    bench = {("c1", 2): BenchTodo("c1", 2, "/p/2", {"t1": "k1", "t2": "k2"}, ["t2"], scored=True),
             ("c2", 1): BenchTodo("c2", 1, "/q/1", {"t1": "k3"}, ["t1"])}
    rows = bench_rows([t.row() for t in todo], todo, bench)
    assert [r["predict"] for r in rows] == [True, False, True]
    assert [json.loads(r["bench"]) if r["bench"] else {} for r in rows] == [{}, {"t2": "k2"}, {"t1": "k3"}]
    assert bench_rows([t.row() for t in todo], todo, None) == [t.row() for t in todo]  # no benchmarks: rows as they were


def test_the_report_reads_each_cells_selected_epoch(tmp_path):
    import polars as pl

    from growthpace.evaluators.benchmark_results import write_result
    from growthpace.jobs.report import benchmark_rows
    from growthpace.platform.store.storage import Layout

    layout = Layout(tmp_path)
    for epoch, acc in ((1, 0.25), (2, 0.75)):
        result = type("R", (), {"task": "facts", "metrics": {"acc,none": acc, "acc_stderr,none": 0.1},
                                "higher_is_better": {"acc": True}, "n_shot": 2, "samples": []})
        write_result(layout, "c1", epoch, "k", result)
    selected = pl.DataFrame({"cell_id": ["c1", "c1"], "ability": ["a", "b"], "selected_epoch": [2, 2], "size": ["s"] * 2,
                             "source": ["curated"] * 2, "volume": [40, 40], "seed": [0, 0]})
    (row,) = benchmark_rows(tmp_path, selected)
    assert (row["metric"], row["value"], row["stderr"], row["higher_is_better"]) == ("facts/acc", 0.75, 0.1, True)
