"""`growthpace simulate SPEC --cluster cluster.yaml`: how long the study's training takes on the cluster's
node types and what it bills, before any GPU is paid for.

Every node the cluster file allows (max_workers of each type) is started on this machine as a raylet of a
local Ray cluster (`ray.cluster_utils.Cluster`) with the type's resources: GPUs as logical counts (no
device), custom resources and `accelerator_type:` keys as declared. The head gets the head type's
resources. Then the study's own trial grid runs through the same Tune call as `growthpace sweep`
(jobs/sweep.py fit_grid: the same order, max_concurrent_trials and driver resources); each trial asks
Ray for its workers' placement group as Ray Train would (jobs/placement.py: strict_pack, pins), holds it
for plan's wall hours scaled to seconds, and gives it back. Nothing is trained and nothing is written to
the study's storage. The outcome is compared with the longest-first schedule and the lower bound of the
same nodes (platform/core/schedule.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from growthpace.platform.core.capacity import cluster_node_types, model_trial
from growthpace.platform.core.schedule import SimTrial, gpu_hours_billed, lpt_schedule, makespan_lower_bound
from growthpace.platform.core.spec import Spec, SpecError

DEFAULT_SECONDS_PER_HOUR = 10.0


def _sim_trial(param: dict[str, Any]) -> None:
    """One cell's trial: its workers' placement group, held for the cell's scaled wall time."""
    import ray
    from ray import tune
    from ray.util import placement_group, placement_group_table, remove_placement_group

    t = param["trial"]
    slot = time.time()  # Tune gave the trial its slot; the workers' placement group may still wait
    pg = placement_group([dict(t["worker"]) for _ in range(t["workers"])], strategy=t["placement"].upper())
    ray.get(pg.ready())
    start = time.time()
    time.sleep(t["seconds"])
    nodes = sorted(set(placement_group_table(pg)["bundles_to_node_id"].values()))
    end = time.time()
    remove_placement_group(pg)
    tune.report({"name": t["name"], "slot": slot, "start": start, "end": end, "nodes": ",".join(nodes)})


@dataclass(frozen=True)
class Simulation:
    makespan_h: float
    lpt_h: float
    lower_bound_h: float
    gpu_hours_used: float
    gpu_hours_billed: float
    order: list[str]  # cell labels in the order their trials got their workers
    node_types: dict[str, str]  # cell label -> the node type(s) its workers ran on
    waited_h: float  # mean hours a trial held one of Tune's slots before its workers were placed


def sim_trials(study, rows: list[dict]) -> list[SimTrial]:
    """The cells as trials: plan's wall hours and each worker's bundle as Ray Train asks for it."""
    models = {m.name: (i, m) for i, m in enumerate(study.spec.models)}
    out = []
    for cell, row in zip(study.cells, rows):
        i, m = models[cell.model]
        if row["hours"] is None:
            raise SpecError(f"field 'models[{i}].resources.throughput_tokens_per_gpu_s': simulate needs each "
                            f"size's throughput to know how long its trials take ({m.size} has none)")
        bundles = model_trial(m.resources)
        out.append(SimTrial(cell.label, float(row["hours"]), bundles.workers, bundles.placed_worker, bundles.placement))
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _head(config: dict) -> dict[str, float]:
    head = config.get("head_node_type")
    return {k: float(v) for k, v in ((config.get("available_node_types") or {}).get(head, {}).get("resources") or {}).items()}


def simulate(spec: Spec, config: dict, seconds_per_hour: float = DEFAULT_SECONDS_PER_HOUR) -> Simulation:
    from growthpace.jobs.placement import longest_first
    from growthpace.jobs.study import model_params, plan_rows, prepare
    from growthpace.jobs.sweep import driver_bundle

    study = prepare(spec, write=False)
    rows = plan_rows(study)
    by_label = dict(zip((c.label for c in study.cells), sim_trials(study, rows)))
    order = longest_first(study.cells, model_params(study))
    types = cluster_node_types(config)
    idle_h = float(config.get("idle_timeout_minutes", 5)) / 60
    trials = [by_label[c.label] for c in order]
    try:
        lpt = lpt_schedule(trials, types, spec.training.max_concurrent_trials)  # also: each trial fits some node
    except ValueError as e:
        raise SpecError(f"the cluster file: {e}") from None
    bound = makespan_lower_bound(trials, types)
    params = [{"worker": t.worker, "workers": t.workers, "placement": t.placement, "name": t.name,
               "seconds": t.hours * seconds_per_hour,
               "driver": driver_bundle(c.driver_cpus, spec.ray.driver_resources)} for t, c in zip(trials, order)]
    results, node_type = _run_on_local_nodes(config, types, params, spec.training.max_concurrent_trials,
                                             len(trials))
    t0 = min(r["start"] for r in results.values())
    busy: dict[str, list[tuple[float, float]]] = {}
    used = 0.0
    for t in trials:
        r = results[t.name]
        start, end = (r["start"] - t0) / seconds_per_hour, (r["end"] - t0) / seconds_per_hour
        used += t.gpus * t.hours
        for n in r["nodes"].split(","):
            busy.setdefault(n, []).append((start, end))
    gpus = {n: next(x.resources.get("GPU", 0.0) for x in types if x.name == node_type[n]) for n in busy}
    billed = sum(gpu_hours_billed(spans, gpus[n], idle_h) for n, spans in busy.items())
    makespan = max((r["end"] - t0) for r in results.values()) / seconds_per_hour
    ran = sorted(results, key=lambda name: results[name]["start"])
    waited = [(r["start"] - r["slot"]) / seconds_per_hour for r in results.values()]
    return Simulation(
        makespan_h=makespan, lpt_h=lpt.makespan_h, lower_bound_h=bound, gpu_hours_used=used, gpu_hours_billed=billed,
        order=ran, node_types={name: "+".join(sorted({node_type[n] for n in r["nodes"].split(",")}))
                               for name, r in results.items()},
        waited_h=sum(waited) / len(waited))


def _run_on_local_nodes(config: dict, types, params: list[dict], max_concurrent: int, n_trials: int):
    """Start the nodes, run the grid through fit_grid, stop the nodes: {trial name: its report}, {node id: type}."""
    temp = tempfile.mkdtemp(prefix="gps-", dir="/tmp")  # short: Ray's socket paths live in it
    os.makedirs(os.path.join(temp, "ray"))
    # Before Ray is imported here: Cluster writes its address file under RAY_TMPDIR (not the shared
    # /tmp/ray), and a loopback-only cluster keeps every node on 127.0.0.1.
    os.environ["RAY_TMPDIR"] = temp
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray import tune
    from ray.cluster_utils import Cluster

    from growthpace.jobs.sweep import fit_grid
    from growthpace.platform.store.storage import Layout

    head = _head(config)
    cluster = Cluster(initialize_head=True, connect=False, head_node_args=dict(
        num_cpus=int(head.pop("CPU", 0)), num_gpus=int(head.pop("GPU", 0)), resources=head, temp_dir=temp,
        gcs_server_port=_free_port(), include_dashboard=False))
    node_type: dict[str, str] = {}
    try:
        for t in types:
            count = t.max_count if t.max_count >= 0 else n_trials  # unlimited: one per trial is enough
            res = dict(t.resources)
            for _ in range(count):
                node = cluster.add_node(num_cpus=int(res.get("CPU", 0)), num_gpus=int(res.get("GPU", 0)),
                                        resources={k: v for k, v in res.items() if k not in ("CPU", "GPU")})
                node_type[node.node_id] = t.name
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        trainable = tune.with_resources(_sim_trial, lambda p: p["trial"]["driver"])
        with contextlib.redirect_stdout(io.StringIO()):  # Tune's experiment table: not this command's output
            got = fit_grid(trainable, params, "simulate", Layout(os.path.join(temp, "store")), max_concurrent,
                           tune.Callback())
        results = {r.metrics["name"]: r.metrics for r in got if r.error is None}
        failed = [str(r.error) for r in got if r.error is not None]
        if failed:
            raise RuntimeError(f"{len(failed)} simulated trial(s) failed: {failed[0][:500]}")
        return results, node_type
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)



def read_cluster_file(path: str) -> dict:
    """cluster.yaml as a dict, or one error naming the file."""
    import yaml

    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise SpecError(f"{path}: {str(e).splitlines()[0]}") from None
    if not isinstance(config, dict) or not cluster_node_types(config):
        raise SpecError(f"{path}: no worker node types under available_node_types (a Ray cluster-launcher file)")
    return config


def lines(spec: Spec, sim: Simulation, config: dict, seconds_per_hour: float) -> list[str]:
    """What `growthpace simulate` prints."""
    used = {}
    for t in sim.node_types.values():
        used[t] = used.get(t, 0) + 1
    gap = (sim.makespan_h / sim.lower_bound_h - 1) * 100 if sim.lower_bound_h else 0.0
    out = [
        f"simulate {spec.name}: {len(sim.order)} trials, at most {spec.training.max_concurrent_trials} at once, on "
        + ", ".join(f"{t.max_count} x {t.name}" for t in cluster_node_types(config))
        + f" (1 h = {seconds_per_hour:g} s here)",
        f"predicted makespan: {sim.makespan_h:.2f} h (longest-first schedule of the same nodes: {sim.lpt_h:.2f} h; "
        f"lower bound: {sim.lower_bound_h:.2f} h, {gap:+.0f}%)",
        f"GPU-hours: {sim.gpu_hours_used:.1f} used, {sim.gpu_hours_billed:.1f} billed (idle GPUs of launched nodes and "
        f"the {float(config.get('idle_timeout_minutes', 5)):g} min idle timeout included); a trial waited "
        f"{sim.waited_h:.2f} h for its workers on average",
        "order the cells ran in:",
    ]
    out += [f"  {i:>3}. {name} ({sim.node_types[name]})" for i, name in enumerate(sim.order, 1)]
    return out
