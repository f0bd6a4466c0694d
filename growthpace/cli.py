"""The `growthpace` command (`python -m growthpace`). Bad input: one error naming file:line or field, exit code 2."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import typer

from growthpace.platform.core.spec import BACKENDS

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Instruction-tuning scaling studies.")


@cache
def _console():
    """The output console, made on first use: `plan --json` prints without rich (issue 13: `plan` is instant)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


def _guard(fn):
    from growthpace.jobs.entry import guard

    return guard(fn)


def _spec(path: Path):
    from growthpace.jobs.entry import load_spec

    return load_spec(path)


def _bytes(n: float) -> str:
    """Decimal units, as disks and volumes are sold (20 TB = 20e12 bytes)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


@app.command()
def plan(
    spec: Path = typer.Argument(..., help="study spec (YAML)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document: cells and totals"),
) -> None:
    """Print every cell with its items, optimizer steps, tokens, FLOPs, resources, GPU-hours and storage."""
    from growthpace.platform.data.records import no_cycle_collection

    with no_cycle_collection():  # a study's 10^5 records: a quarter of a DoIT-scale plan was the collector's
        _plan(spec, as_json)


def _plan(spec: Path, as_json: bool) -> None:
    from growthpace.jobs.pretrain import plan_rows as pretrain_rows
    from growthpace.jobs.study import plan_rows, plan_totals, prepare, size_checks

    s = _spec(spec)
    study = _guard(lambda: prepare(s, write=False))
    rows = _guard(lambda: plan_rows(study))
    pretraining = _guard(lambda: pretrain_rows(study))
    totals = plan_totals(rows)
    sizes = _guard(lambda: size_checks(study))
    declared = bool(rows and rows[0].get("declared"))
    if as_json:
        import json

        doc = {"study": s.name, "declared": declared, "retention": s.evaluation.retention, "cells": rows, "totals": totals,
               "pretrain": pretraining, "sizes": sizes, "warnings": [w for z in sizes for w in z["warnings"]]}
        typer.echo(json.dumps(doc, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{s.name}: {len(rows)} cells")
    cols = ["cell_id", "model", "size", "source", "volume", "seed", "items", "tokens", "epochs", "global_batch",
            "optimizer_steps", "params", "flops", "cpus", "gpus"]
    with_gpu_h = totals["gpu_hours"] is not None
    cols += ["gpu_hours"] if with_gpu_h else []
    cols += ["peak_checkpoint_bytes", "retained_checkpoint_bytes"]
    heads = {"global_batch": "batch", "optimizer_steps": "steps", "peak_checkpoint_bytes": "ckpt peak",
             "retained_checkpoint_bytes": "ckpt kept"}
    fmt = {"flops": lambda v: f"{v:.2e}", "gpu_hours": lambda v: "-" if v is None else f"{v:.1f}",
           "peak_checkpoint_bytes": _bytes, "retained_checkpoint_bytes": _bytes}
    for c in cols:
        table.add_column(heads.get(c, c), justify="right" if c not in ("cell_id", "model", "size", "source") else "left")
    for r in rows:
        table.add_row(*[fmt.get(c, str)(r[c]) for c in cols])
    _console().print(table)
    if declared:
        _console().print(
            f"data: {s.data_root} is absent: item counts are DECLARED in the spec (data.declared: "
            f"{s.data.declared.source}), not read; tokens = items x declared tokens per item; cell ids are "
            "provisional (they change once the real files are hashed)"
        )
    for p in pretraining:
        corpus = "" if p["corpus_tokens"] is None else f", corpus {p['corpus_tokens']} tokens ({p['tokens'] / p['corpus_tokens']:.1f} passes)"
        _console().print(f"pretrain {p['size']} ({p['model']}): {p['steps']} optimizer steps x {p['batch']} sequences x "
                         f"{p['block']} tokens = {p['tokens']} tokens seen ({p['flops']:.2e} FLOPs){corpus}; from {p['corpus']}")
    _console().print(
        f"total: {len(rows)} cells, {totals['items']} items, {totals['optimizer_steps']} optimizer steps, "
        f"{totals['train_tokens']} training tokens, {totals['flops']:.3e} FLOPs, {totals['epochs']} checkpoints"
    )
    if with_gpu_h:
        by_size: dict[str, float] = {}
        for r in rows:
            by_size[r["size"]] = by_size.get(r["size"], 0.0) + (r["gpu_hours"] or 0.0)
        missing = sum(1 for r in rows if r["gpu_hours"] is None)
        _console().print(
            f"gpu-hours (training; packed training tokens / resources.throughput_tokens_per_gpu_s): "
            f"{sum(by_size.values()):,.0f} total = "
            + ", ".join(f"{k} {v:,.0f}" for k, v in by_size.items())
            + (f"; {missing} cell(s) without a throughput figure not counted" if missing else "")
        )
    from growthpace.platform.core.items import describe_capped

    capped = describe_capped(s.evaluation.max_new_tokens, s.training.max_length)
    if capped:
        _console().print(capped, highlight=False, markup=False)
    largest = max(rows, key=lambda r: r["peak_checkpoint_bytes"] - r["retained_checkpoint_bytes"], default=None)
    _console().print(
        f"checkpoint storage: {_bytes(totals['retained_checkpoint_bytes'])} kept after scoring "
        f"(evaluation.retention: {s.evaluation.retention}); a cell holds up to its peak while it trains "
        f"(every epoch's weights until scored + up to two resume states), sum of peaks {_bytes(totals['peak_checkpoint_bytes'])}"
        + (f", largest extra {_bytes(largest['peak_checkpoint_bytes'] - largest['retained_checkpoint_bytes'])} "
           f"({largest['size']})" if largest else "")
    )
    if rows:
        t = s.training
        gpu_h, idle = totals["gpu_hours"], totals["checkpoint_write_gpu_hours"]
        share = f", {idle / gpu_h:.1%} of the training GPU-hours" if gpu_h and idle is not None else ""
        every = "Young's interval" if t.resume_every_s is None else f"{t.resume_every_s:g} s"
        _console().print(
            f"checkpoint writes: {_bytes(totals['checkpoint_write_bytes'])} (every epoch's weights + "
            f"{sum(len(r['resume_state_epochs']) for r in rows)} resume states, none after a last epoch; "
            f"training.resume_every_s: {every}), "
            f"{totals['checkpoint_write_s'] / 3600:,.1f} h of I/O at training.storage_write_gib_s {t.storage_write_gib_s:g}"
            + (f": {idle:,.1f} GPU-hours idle{share}" if idle is not None else "")
        )
    for z in sizes:
        if "train_peak_gib" in z:
            card = f" of {z['train_card']}'s {z['train_card_gib']} GiB" if z.get("train_card_gib") else ""
            kv = (f"; scoring on {z['scoring_gpus']:g} x {z['scoring_card']}: {z['scoring_kv_cache_gib']:.1f} GiB KV cache per GPU"
                  if "scoring_kv_cache_gib" in z else "")
            _console().print(f"memory {z['size']}: training peak about {z['train_peak_gib']:.1f} GiB per GPU{card} (estimate){kv}")
        for w in z["warnings"]:
            _console().print(f"WARNING {w}")


@app.command()
def check(spec: Path = typer.Argument(..., help="study spec (YAML)")) -> None:
    """Validate the spec, its data and its declarations without training or writing, and print what each
    ability will be scored with."""
    from growthpace.jobs.check import ability_rows
    from growthpace.jobs.study import prepare
    from growthpace.platform.data.records import no_cycle_collection

    s = _spec(spec)
    with no_cycle_collection():
        study = _guard(lambda: prepare(s, write=False))
    rows = ability_rows(study)
    from rich.table import Table

    ood = len(rows) - len(s.ability_names)
    table = Table(title=f"{s.name}: {len(s.ability_names)} abilities{f', {ood} OOD set' + 's' * (ood > 1) if ood else ''}, "
                        f"{len(study.cells)} cells "
                        f"({'declared' if s.declared else 'the DoIT preset'})")
    for c in ("ability", "declared kind", "items scored as", "output", "baseline", "formulation", "train items",
              "eval items"):
        table.add_column(c)
    for r in rows:
        table.add_row(r["ability"], r["declared_kind"], ", ".join(f"{k} {n}" for k, n in r["kinds"].items()),
                      r["output"], f"{100 * r['baseline']:.1f}%", r["formulation"],
                      ", ".join(f"{k} {n}" for k, n in r["train"].items()),
                      ", ".join(f"{k} {n}" for k, n in r["eval"].items()))
    _console().print(table)
    _console().print(f"ok: {spec} (sources {', '.join(s.data.source_names)}; compared: "
                     f"{', '.join(f'{a} vs {b}' for a, b in s.source_pairs) or 'none'}); nothing was written")


@app.command("fetch-data")
def fetch_data(spec: Path = typer.Argument(..., help="study spec (YAML) with data.hub")) -> None:
    """Download the public dataset (data.hub: repo and pinned revision) to data.root and check its layout."""
    from growthpace.platform.data.hub import fetch

    s = _spec(spec)
    root = _guard(lambda: fetch(s))
    _console().print(f"{s.data.hub.repo_id}@{s.data.hub.revision} at {root}")


@app.command("generate-data")
def generate_data(
    root: Path = typer.Argument(..., help="folder to write the dataset into"),
    seed: int = 0,
    train_per_ability: int = 1000,
    synthetic: int = 4000,
    world_per_family: int = 400,
) -> None:
    """Write the embedded procedural dataset in the study's layout."""
    from growthpace.platform.data.generate import generate_dataset

    summary = _guard(lambda: generate_dataset(root, seed=seed, train_per_ability=train_per_ability, synthetic=synthetic,
                                              world_per_family=world_per_family))
    _console().print(f"wrote {root}: {summary}")


@app.command()
def simulate(
    spec: Path = typer.Argument(..., help="study spec (YAML)"),
    cluster: Path = typer.Option(Path("cluster.yaml"), "--cluster", help="Ray cluster-launcher file: its node types"),
    seconds_per_hour: float = typer.Option(10.0, "--seconds-per-hour", min=0.01,
                                           help="how many seconds here stand for one hour of a trial"),
) -> None:
    """Run the spec's trials through Ray Tune on local stand-ins of the cluster's nodes: predicted makespan,
    GPU-hours billed vs used, and the order the cells ran in (nothing is trained or written)."""
    from growthpace.jobs.simulate import lines, read_cluster_file, simulate as run_simulation

    s = _spec(spec)
    config = _guard(lambda: read_cluster_file(str(cluster)))
    sim = _guard(lambda: run_simulation(s, config, seconds_per_hour))
    for line in lines(s, sim, config, seconds_per_hour):
        typer.echo(line)


@app.command()
def run(spec: Path) -> None:
    """The whole study: train every cell, score every checkpoint, write the report."""
    from growthpace.jobs.run import run_study

    s = _spec(spec)
    _guard(lambda: run_study(s))


@app.command()
def sweep(spec: Path) -> None:
    """Train every unfinished cell (Ray Tune over Ray Train + DeepSpeed)."""
    from growthpace.jobs.run import run_sweep

    s = _spec(spec)
    _guard(lambda: run_sweep(s))


@app.command()
def evaluate(spec: Path) -> None:
    """Score every checkpoint not scored yet; write scores.parquet."""
    from growthpace.jobs.evaluate import run_evaluate

    s = _spec(spec)
    _guard(lambda: run_evaluate(s))


@app.command()
def sync(spec: Path) -> None:
    """Upload to MLflow whatever the study's storage holds and MLflow lacks (after an outage)."""
    from growthpace.jobs.run import run_sync

    s = _spec(spec)
    _guard(lambda: run_sync(s))


@app.command()
def rescore(spec: Path) -> None:
    """Re-apply the scorers to stored predictions, without running any model; print the verdicts that changed."""
    from growthpace.jobs.evaluate import run_rescore

    s = _spec(spec)
    _guard(lambda: run_rescore(s))


@app.command()
def report(spec: Path) -> None:
    """Write report/index.html from scores.parquet."""
    from growthpace.jobs.run import run_report

    s = _spec(spec)
    _guard(lambda: run_report(s))


@app.command()
def recommend(
    spec: Path = typer.Argument(..., help="spec of a study with scores"),
    budget: int = typer.Option(..., "--budget", min=1, help="curated training items to allocate"),
    size: str = typer.Option(None, "--size", help="size label whose curves to use (default: the largest)"),
    name: str = typer.Option(None, "--name", help="mix name (default: recommended-<budget>)"),
    out: Path = typer.Option(None, "--out", help="YAML file (default: <storage>/recommendations/<name>.yaml)"),
) -> None:
    """Allocate a data budget over abilities from the fitted growth curves; write it as a data.mixes entry."""
    from growthpace.jobs.report import recommend_for_spec
    from growthpace.platform.store.storage import storage_root, write_bytes

    s = _spec(spec)
    rec, text = _guard(lambda: recommend_for_spec(s, budget, size, name))
    from rich.table import Table

    table = Table(title=f"{s.name}: {budget} items over abilities, curves of size {rec.size}")
    keys = ("even", "reconstruct", "recommended")
    for c in ("ability", *(f"{k} items" for k in keys), *(f"{k} predicted" for k in keys)):
        table.add_column(c, justify="left" if c == "ability" else "right")
    for a in rec.allocations["recommended"]:
        table.add_row(a, *(str(rec.allocations[k][a]) for k in keys), *(f"{rec.per_ability[k][a]:.1f}" for k in keys))

    def ci(d: dict) -> str:
        return f"{d['value']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]"

    table.add_row("mean", "", "", "", *(f"{rec.predicted[k]['value']:.2f}" for k in keys))
    _console().print(table)
    _console().print(f"predicted gain over the even split: {ci(rec.gain)} points (95% bootstrap); "
                     f"over the study's reconstruct mix: {ci(rec.gain_vs_reconstruct)}")
    if rec.beyond_data:
        _console().print(f"note: more items than the study measured for: {', '.join(rec.beyond_data)} "
                         "(curves held flat one doubling past the data)")
    path = out or storage_root(s.storage) / "recommendations" / f"{rec.name}.yaml"
    write_bytes(path, text.encode())
    _console().print(text, highlight=False, markup=False)
    _console().print(f"wrote {path}")


@app.command()
def benchmark(
    model_dir: Path = typer.Argument(..., help="a model folder (HF format with tokenizer), or a checkpoint holding model/"),
    cmmlu: Path = typer.Option(None, "--cmmlu", help="CMMLU root: dev/ and test/ with <subject>.csv"),
    agieval: Path = typer.Option(None, "--agieval", help="AGIEval root: test/<task>.jsonl (or <task>.jsonl) and dev/<task>.jsonl"),
    shots: list[int] = typer.Option([0, 5], "--shots", help="few-shot examples; repeat for several settings"),
    backend: str = typer.Option("transformers", "--backend", help=" | ".join(BACKENDS)),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    spec: Path = typer.Option(None, "--spec", help="study spec: log into a cell's MLflow run (with --cell)"),
    cell: str = typer.Option(None, "--cell", help="cell id whose child run gets bench/<name>/<shots>shot"),
    epoch: int = typer.Option(None, "--epoch", help="MLflow step (default: the checkpoint's epoch.json)"),
) -> None:
    """CMMLU / AGIEval multiple choice from local files: argmax of the letters' log-probs at the answer."""
    from growthpace.evaluators.benchmarks import metric_name
    from growthpace.jobs.benchmark import log_to_cell, run_benchmark
    from growthpace.platform.store.checkpoints import epoch_of, model_folder

    sources = {k: v for k, v in (("cmmlu", cmmlu), ("agieval", agieval)) if v is not None}
    if not sources:
        raise typer.BadParameter("give --cmmlu DIR and/or --agieval DIR")
    if (spec is None) != (cell is None):
        raise typer.BadParameter("--spec and --cell go together")
    if backend not in BACKENDS:
        raise typer.BadParameter(f"--backend: one of {', '.join(BACKENDS)}")
    model_dir = _guard(lambda: model_folder(model_dir))
    s = _spec(spec) if spec is not None else None
    step = epoch if epoch is not None else epoch_of(model_dir)
    if s is not None and step is None:
        raise typer.BadParameter("--epoch: needed to log (the model folder has no ../epoch.json)")
    name, rows = _guard(lambda: run_benchmark(model_dir, sources, shots, backend=backend, batch_size=batch_size))
    from rich.table import Table

    table = Table(title=f"{model_dir} ({name})")
    for c in ("benchmark", "shots", "accuracy", "items"):
        table.add_column(c, justify="left" if c == "benchmark" else "right")
    for r in rows:
        table.add_row(r["benchmark"], str(r["shots"]), f"{r['accuracy']:.2f}", str(r["items"]))
    _console().print(table)
    if s is not None:
        run_id, ok = _guard(lambda: log_to_cell(s, cell, step, rows))
        if not ok:
            raise typer.Exit(1)
        _console().print(f"logged {', '.join(metric_name(r['benchmark'], r['shots']) for r in rows)} "
                         f"to run {run_id} (cell {cell}) at step {step}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
