"""How fast `growthpace plan` is against the floor: reading and parsing every JSON line it reads, once.

    PYTHONPATH=$PWD python bench/plan_speed.py [--data DIR]

Two datasets, measured side by side in one run: experiments/local.yaml's (generated if absent), and a
DoIT-scale one (`growthpace generate-data --train-per-ability 4000 --synthetic 40960` into a temp dir,
or --data DIR if it already holds one) planned with the study's grid (curated 10..10000, synthetic
10..40960, the three local presets), once fresh (plan trains the BPE in memory) and once after a run
stored the tokenizer (`doit-scale-stored`: plan reads it instead). Each line: json_parse_s (plain Python: `json.loads` of every line
of every file plan reads: the train split, the synthetic pool, valid/test and OOD), plan_s (wall time
of `python -m growthpace plan SPEC --json` in a fresh process, the CLI's imports included: what a
person waits for) and their ratio; then the same in CPU seconds. Best of --repeat runs each, to damp a
shared machine's noise. TOKENIZERS_PARALLELISM is the caller's (unset: `tokenizers` uses every core).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from growthpace.platform.core.abilities import ABILITIES, OOD_SUBJECTS  # noqa: E402
from growthpace.platform.data.records import curated_path, ood_path, synthetic_path  # noqa: E402


def plan_files(root: Path, train_split: str, splits: list[str], ood: bool) -> list[Path]:
    files = [curated_path(root, s, a) for s in (train_split, *splits) for a in ABILITIES]
    files.append(synthetic_path(root))
    return files + ([ood_path(root, s) for s in OOD_SUBJECTS] if ood else [])


def json_parse_s(files: list[Path]) -> tuple[float, float]:
    """(wall, CPU) seconds to json.loads every line of ``files``."""
    start, cpu = time.perf_counter(), time.process_time()
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    json.loads(line)
    return time.perf_counter() - start, time.process_time() - cpu


def plan_s(spec: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one `plan --json` process; CPU (user + system) is what a loaded shared
    machine distorts least."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "false")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "growthpace", "plan", str(spec), "--json"], check=True, env=env,
                   stdout=subprocess.DEVNULL, cwd=ROOT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def doit_spec(local: dict, data: Path, tmp: Path) -> Path:
    spec = dict(local, name="plan-speed-doit", storage=str(tmp / "storage"))
    spec["data"] = dict(local["data"], root=str(data), train_split="full",
                        volumes=[10, 40, 160, 640, 2560, 10000],
                        synthetic_volumes=[10, 40, 160, 640, 2560, 10000, 40960])
    spec["data"].pop("generate", None)
    spec["training"] = dict(local["training"], epochs_by_volume={10: 25, 40: 20, 160: 18})
    path = tmp / "doit.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def store_tokenizer(spec: Path) -> None:
    """What the first `growthpace run` leaves under storage: the trained preset tokenizer."""
    from growthpace.platform.data.dataset import load_dataset
    from growthpace.platform.train.models import ensure_tokenizer
    from growthpace.platform.data.specfile import load_spec
    from growthpace.platform.store.storage import Layout

    s = load_spec(spec)
    dataset = load_dataset(s)
    ensure_tokenizer(Layout.for_spec(s), dataset.train_records(), dataset.fingerprint)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, help="a DoIT-scale generated dataset (else generated into a temp dir)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    local_path = ROOT / "experiments" / "local.yaml"
    local = yaml.safe_load(local_path.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = args.data
        if data is None:
            data = tmp / "doit-procedural"
            subprocess.run([sys.executable, "-m", "growthpace", "generate-data", str(data), "--train-per-ability", "4000",
                            "--synthetic", "40960"], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                           stdout=subprocess.DEVNULL, cwd=ROOT)
        local_root = ROOT / local["data"]["root"]
        if not (local_root / "curated").is_dir():
            plan_s(local_path)  # generates the embedded dataset (data.generate) once, outside the timing
        ev = local["evaluation"]
        doit = doit_spec(local, data, tmp)
        doit_files = plan_files(data, "full", ev["splits"], ev["ood"])
        cases = [("local", local_path, plan_files(local_root, local["data"]["train_split"], ev["splits"], ev["ood"])),
                 ("doit-scale", doit, doit_files), ("doit-scale-stored", doit, doit_files)]
        for name, spec, files in cases:
            if name == "doit-scale-stored":
                store_tokenizer(spec)
            parse = [json_parse_s(files) for _ in range(args.repeat)]
            planned = [plan_s(spec) for _ in range(args.repeat)]
            (pw, pc), (qw, qc) = (min(p[0] for p in parse), min(p[1] for p in parse)), (
                min(p[0] for p in planned), min(p[1] for p in planned))
            print(f"{name}: json_parse_s={pw:.3f} plan_s={qw:.3f} ratio={qw / pw:.1f} "
                  f"(CPU: json_parse_s={pc:.3f} plan_s={qc:.3f} ratio={qc / pc:.1f})", flush=True)


if __name__ == "__main__":
    main()
