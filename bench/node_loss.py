"""A node lost under a running study, timed (docs/cluster.md section 10): a local cluster of several raylets
(tests/cluster_nodes.py), a one-cell spec (tests/test_node_loss.py), the training node killed right after
epoch 1 is registered (`sweep`), then the scoring node killed while its actor holds it (`evaluate`). Prints
seconds from the loss to the command's end, its exit code and console, the epochs registered and resumed from.

    PYTHONPATH=. .venv/bin/python bench/node_loss.py DATA_ROOT WORKDIR training   (DATA_ROOT: `growthpace generate-data`)
    PYTHONPATH=. .venv/bin/python bench/node_loss.py DATA_ROOT WORKDIR scoring    (after `training`: scores its cell)

Each part in its own process: the local cluster's auth token is this process's.
"""
import sys
from pathlib import Path

DATA, WORK = Path(sys.argv[1]), Path(sys.argv[2])


def training_node_lost():
    import json, re, subprocess, time, threading
    from tests.cluster_nodes import LocalCluster
    from tests.test_node_loss import _spec_file, HEAD, TRAIN_NODE, REPO
    t0 = time.time()
    tmp = WORK; tmp.mkdir(exist_ok=True)
    import shutil; shutil.rmtree(tmp / "store", ignore_errors=True)
    c = LocalCluster(1, HEAD)
    try:
        node = c.add(1, TRAIN_NODE)
        storage = tmp / "store"
        spec = _spec_file(tmp, DATA, storage)
        p = subprocess.Popen([sys.executable, "-m", "growthpace", "sweep", str(spec)], cwd=REPO, env=c.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out = {}
        th = threading.Thread(target=lambda: out.update(zip(("o", "e"), p.communicate())), daemon=True); th.start()
        while not any("checkpoint_2" in f.read_text() for f in storage.glob("train/*/checkpoint_manager_snapshot.json")):
            if p.poll() is not None: break
            time.sleep(0.05)
        lost = time.time(); print("epoch 1 registered at", round(lost - t0, 1), flush=True)
        c.lose(node); c.add(1, TRAIN_NODE); print("replaced", round(time.time() - t0, 1), flush=True)
        th.join(240)
        print("exit", p.returncode, "after loss", round(time.time() - lost, 1))
        print(out.get("o", "")); print(out.get("e", "")[-2500:])
        (cell,) = [d.parent.name for d in storage.glob("cells/*/checkpoints.json")]
        print("reported", [json.loads((d / "epoch.json").read_text())["epoch"] for d in sorted((storage / "train" / cell).glob("checkpoint_2*"))])
        snap = (storage / "train" / cell / "checkpoint_manager_snapshot.json").read_text()
        print("resumed", re.findall(r'resumed_from_epoch\\?"?:\s*\d+', snap))
    finally:
        c.shutdown()
        print("total", round(time.time() - t0, 1))


def scoring_node_lost():
    import subprocess, time, threading
    from tests.cluster_nodes import LocalCluster
    from tests.test_node_loss import HEAD, TRAIN_NODE, SCORE_NODE, REPO, _metric_steps
    t0 = time.time()
    tmp = WORK; storage = tmp / "store"; spec = tmp / "spec.yaml"
    c = LocalCluster(1, HEAD)
    try:
        c.add(1, TRAIN_NODE); node = c.add(1, SCORE_NODE)
        import ray
        p = subprocess.Popen([sys.executable, "-m", "growthpace", "evaluate", str(spec)], cwd=REPO, env=c.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out = {}
        th = threading.Thread(target=lambda: out.update(zip(("o", "e"), p.communicate())), daemon=True); th.start()
        ray.init(address=c.address, log_to_driver=False, logging_level="ERROR")
        while ray.available_resources().get("score_node", 0.0) > 0.5:
            if p.poll() is not None: break
            time.sleep(0.05)
        lost = time.time(); print("scoring actor placed at", round(lost - t0, 1), "scores so far", list(storage.glob("cells/*/scores/*.json")), flush=True)
        c.lose(node); c.add(1, SCORE_NODE)
        ray.shutdown()
        th.join(150)
        print("exit", p.returncode, "after loss", round(time.time() - lost, 1))
        print(out.get("o", "")); print(out.get("e", "")[-1500:])
        (cell,) = [d.parent.name for d in storage.glob("cells/*/checkpoints.json")]
        print("score files", sorted(x.name for x in (storage / "cells" / cell / "scores").glob("*.json")))
        print("mlflow test/biology", _metric_steps(storage, "test/biology"))
    finally:
        c.shutdown()
        print("total", round(time.time() - t0, 1))


if __name__ == "__main__":
    WORK.mkdir(parents=True, exist_ok=True)
    {"training": training_node_lost, "scoring": scoring_node_lost}[sys.argv[3]]()
