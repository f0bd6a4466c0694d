"""Attach to a Ray cluster: the one at RAY_ADDRESS (a submitted job), else a local one we start."""

from __future__ import annotations

import logging
import os

from growthpace.platform.core.spec import Spec

# Ray Train's controller polls workers this often; its default (2 s) dominates tiny local runs.
_WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


def worker_env(spec: Spec) -> dict[str, str]:
    env = dict(_WORKER_ENV)
    env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(spec.ray.health_check_interval_s)
    for key in ("TORCH_EXTENSIONS_DIR", "GROWTHPACE_TORCH_THREADS"):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(spec.ray.env_vars)
    return env


def _submitted_job_runtime_env() -> dict | None:
    """The job's own runtime_env when this driver runs under `ray job submit`, else None."""
    import json

    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        return dict(json.loads(raw).get("runtime_env") or {})
    except (ValueError, AttributeError):
        return {}


def runtime_env(spec: Spec) -> dict:
    """The driver's runtime_env: our worker env vars and the spec's pip packages.

    Under `ray job submit` Ray merges it with the job's runtime_env (--runtime-env / --working-dir) and
    refuses a key set in both, so the job's own env vars win and are left out here.
    """
    env = worker_env(spec)
    job = _submitted_job_runtime_env() or {}
    env = {k: v for k, v in env.items() if k not in (job.get("env_vars") or {})}
    out: dict = {"env_vars": env}
    if spec.ray.pip and "pip" not in job and "uv" not in job:
        out["pip"] = list(spec.ray.pip)
    return out


# A local cluster listens on loopback only. Ray 2.60 turns _node_ip_address="127.0.0.1" into the
# machine's routable address, and its servers then listen on every interface; with its "multi-node
# clusters" switch off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) the node address is 127.0.0.1 and the GCS,
# raylet, workers and agents all bind there. Token auth is Ray 2.60's own default for a new local
# cluster (ray.init sets RAY_AUTH_MODE=token when it is unset): setting the variable here, after Ray
# was imported, would leave this process's cached config behind the cluster's. Both can be overridden
# from the environment; docs/reliability.md has the measurement.
LOCAL_CLUSTER_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
_connected_here = False  # whether connect() called ray.init (a test's shared cluster is not ours to stop)


def loopback_only() -> dict:
    """Make the next ray.init start a local cluster bound to 127.0.0.1; returns the ray.init keywords
    that go with it. Also used by the test suite's shared cluster."""
    for key, value in LOCAL_CLUSTER_ENV.items():
        os.environ.setdefault(key, value)  # the cluster's processes inherit them
    from ray._private import ray_constants

    # Ray computed this constant from the variable when it was imported: set it for this process too.
    ray_constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"].lower() in ("1", "true")
    return {"_node_ip_address": "127.0.0.1"}


def connect(spec: Spec) -> None:
    """Idempotent: reuse an initialised Ray, else attach to RAY_ADDRESS, else start a local cluster."""
    import ray

    if ray.is_initialized():
        return
    local = {} if os.environ.get("RAY_ADDRESS") else loopback_only()
    env = worker_env(spec)
    # Ray Train's controller reads this in the driver's process tree too.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"])
    # Ray's INFO lines ("Started a local Ray instance", "Connected to Ray cluster") would reach the console
    # when the pre-flight connects, before the console view captures the libraries' output; warnings do.
    kwargs: dict = {"runtime_env": runtime_env(spec), "log_to_driver": False, "logging_level": logging.WARNING}
    if not os.environ.get("RAY_ADDRESS"):
        kwargs.update(local, num_cpus=spec.ray.num_cpus, include_dashboard=False)
    from growthpace.jobs.progress import held_output

    with held_output():  # Ray's start-up output (its token-auth notice) goes to the study's log
        ray.init(**kwargs)
    global _connected_here
    _connected_here = True


def disconnect() -> None:
    """End what connect() started: the local cluster it launched, or its attachment to RAY_ADDRESS.

    Called while the console view still sends the libraries' output to the log file: the raylet's
    warnings reach the driver late (one about worker start-up concurrency arrived after the closing
    summary), and ray.init's atexit shutdown would print them on the terminal."""
    global _connected_here
    if not _connected_here:
        return
    import ray

    _connected_here = False
    ray.shutdown()


# Where `ray up` leaves the cluster's config on the head node (the autoscaler reads it from there).
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"


def capacity(spec: Spec):
    """(the alive nodes' resources, the autoscaler's node types or None): what placement_problems compares.

    Ray has no call that lists the node types an autoscaler may add (the cluster config an autoscaler could
    report to the GCS is never written by open-source Ray 2.60), so they come from the cluster file:
    ray.cluster_file, else the copy `ray up` left on the head. None: no file, the cluster is what it is.
    """
    import ray

    present = [{k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n.get("Alive")]
    return present, autoscaler_node_types(spec)


def autoscaler_node_types(spec: Spec):
    """The node types of the cluster file (capacity above), or None when there is none."""
    import yaml

    from growthpace.platform.core.capacity import cluster_node_types
    from growthpace.platform.core.spec import SpecError

    path = os.path.expanduser(spec.ray.cluster_file or BOOTSTRAP_CONFIG)
    if spec.ray.cluster_file is None and not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
        if not isinstance(config, dict):
            raise ValueError("not a mapping of cluster settings")
        return cluster_node_types(config)
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as e:
        where = "field 'ray.cluster_file'" if spec.ray.cluster_file else "the cluster config"
        raise SpecError(f"{where}: {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
