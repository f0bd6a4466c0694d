"""The world corpus (world/world.txt): its size, and what writing it costs the generator.

    PYTHONPATH=$PWD python bench/world_corpus.py [--before REV] [--repeat 3] [--test-per-ability 100]

Settings: experiments/local.yaml's `data.generate`, with --test-per-ability overriding its test count.
Side by side in one run: generation wall time of the generator at REV (default c50f2a7, the last one
without the corpus, read with `git show`) and of this tree's, best of --repeat each, alternating. Then
the corpus this tree wrote: documents, characters and tokens per family, tokens counted with
`models.train_bpe` trained on the records the local study trains on (its train split and, as its
sources include it, the synthetic pool), the tokenizer the study's base models get.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from growthpace.platform.data import generate as current  # noqa: E402
from growthpace.platform.core.abilities import ABILITIES, OOD_SUBJECTS  # noqa: E402
from growthpace.platform.train.models import train_bpe  # noqa: E402
from growthpace.platform.data.records import iter_synthetic, read_split, read_world  # noqa: E402


def generator_at(rev: str, folder: Path):
    """The generate module as it was at `rev`, imported from a file under `folder`."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:growthpace/platform/data/generate.py"],
                         capture_output=True, text=True, check=True).stdout
    path = folder / f"generate_{rev}.py"
    path.write_text(src, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="c50f2a7")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--test-per-ability", type=int, default=100)
    args = ap.parse_args()
    local = yaml.safe_load((ROOT / "experiments/local.yaml").read_text())
    settings = {**local["data"]["generate"], "test_per_ability": args.test_per_ability}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before = generator_at(args.before, tmp)
        best = {"before": float("inf"), "after": float("inf")}
        for i in range(args.repeat):
            for name, module in (("before", before), ("after", current)):
                start = time.perf_counter()
                module.generate_dataset(tmp / f"{name}-{i}", **settings)
                best[name] = min(best[name], time.perf_counter() - start)
        print(f"settings {settings}")
        print(f"generate_s  before ({args.before}) {best['before']:.3f}  after (this tree) {best['after']:.3f}  "
              f"ratio {best['after'] / best['before']:.2f}  (best of {args.repeat})")
        root = tmp / "after-0"
        docs = read_world(root)
        train = [r for recs in read_split(root, local["data"]["train_split"]).values() for r in recs]
        if "synthetic" in local["data"]["sources"]:
            train += list(iter_synthetic(root))
        tok = train_bpe(train)
        n = len(docs) // len((*ABILITIES, *OOD_SUBJECTS))
        total_tokens = 0
        print(f"{'family':<22} {'docs':>5} {'chars':>7} {'tokens':>7} {'distinct':>8}")
        for i, family in enumerate((*ABILITIES, *OOD_SUBJECTS)):
            part = docs[i * n:(i + 1) * n]
            tokens = sum(len(e.ids) for e in tok.encode_batch(part))
            total_tokens += tokens
            print(f"{family:<22} {len(part):>5} {sum(map(len, part)):>7} {tokens:>7} {len(set(part)):>8}")
        print(f"{'total':<22} {len(docs):>5} {sum(map(len, docs)):>7} {total_tokens:>7} {len(set(docs)):>8}")
        print(f"file bytes {(root / 'world/world.txt').stat().st_size}; BPE trained on {len(train)} train records")


if __name__ == "__main__":
    main()
