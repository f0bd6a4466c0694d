"""Scoring throughput: the project's batched scoring against the study's original one-at-a-time method.

A benchmark script, not a test. Two modes:

    # 1) project (batched predict + score, transformers or vLLM) vs the study's original method
    #    (per item: greedy model.generate at batch size 1 with the same max_new_tokens per kind, then
    #    one forward pass per candidate for perplexity ranking); same checkpoint, same items
    .venv/bin/python bench/eval_throughput.py [--model DIR] [--items 200] [--batch-size 64] \
        [--backend transformers|vllm]

    # 2) vLLM vs transformers, both batched through the project's predict, on a >= 20M-param model
    #    (preset llama-20m built from config with the project tokenizer; random weights)
    .venv/bin/python bench/eval_throughput.py --backends [--preset llama-20m] [--items 200]

--model (or --preset P: preset P built with random weights) defaults to the last checkpoint of the
most-trained cell of the largest preset in runs/local (when that study exists), else a base model
built on the fly (llama-mini, random weights). Items come from the local study's data
(runs/data/doit-procedural: test split and OOD), else from a small dataset generated on the fly;
they are taken round-robin over the sets so every question kind is in the mix. Generation caps follow the local study (math 40 tokens; --math-tokens).

Both sides read the choice letters' log-probs at the FIRST answer position (the study's code read
the last generated step; the project documents the first as the intended one), so verdicts can be
compared item by item. Timings exclude model loading (reported separately); the machine is shared,
so figures are noisy: run more than once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from growthpace.evaluators.scoring import Prediction, max_new_tokens, needs, score
from growthpace.platform.core.items import question_kind  # noqa: E402
from growthpace.platform.store.checkpoints import model_dir as checkpoint_model, read_checkpoints  # noqa: E402
from growthpace.platform.store.storage import Layout  # noqa: E402
from growthpace.platform.core.items import Record  # noqa: E402

LOCAL = ROOT / "runs" / "local"
LOCAL_DATA = ROOT / "runs" / "data" / "doit-procedural"
LETTERS = "ABCD"
_TEMP_DIRS: list[Path] = []  # made by this run; removed at exit


def _temp_dir(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=prefix))
    _TEMP_DIRS.append(d)
    return d


# --- what to score -------------------------------------------------------------------------------


def pick_checkpoint() -> Path | None:
    """The last checkpoint of the most-trained cell among those of the largest model in runs/local."""
    best, best_key = None, None
    layout = Layout(LOCAL)
    for marker in sorted((LOCAL / "cells").glob(f"*/{Layout.CELL_CHECKPOINTS}")) if LOCAL.is_dir() else []:
        cks = read_checkpoints(layout, marker.parent.name).checkpoints
        if not cks:
            continue
        last = max(cks, key=lambda c: c.epoch)
        model = Path(checkpoint_model(last.path))
        if not (model / "config.json").is_file():
            continue
        cfg = json.loads((model / "config.json").read_text())
        card = marker.parent / "card.json"
        items = json.loads(card.read_text()).get("total", 0) if card.is_file() else 0
        key = (cfg["hidden_size"] * cfg["num_hidden_layers"], items, last.epoch)
        if best_key is None or key > best_key:
            best, best_key = model, key
    return best


def eval_records(n: int) -> list[Record]:
    """n items, round-robin over (split, ability) sets so every kind is represented."""
    from growthpace.platform.core.abilities import OOD_SUBJECTS
    from growthpace.platform.data.records import read_ood, read_split

    root = LOCAL_DATA
    if not (root / "curated" / "test").is_dir():
        from growthpace.platform.data.generate import generate_dataset

        root = _temp_dir("gp_bench_data_")
        generate_dataset(root, seed=0, train_per_ability=20, valid_per_ability=4, test_per_ability=40,
                         ood_per_subject=20, synthetic=20)
    sets = list(read_split(root, "test").values()) + list(read_ood(root, OOD_SUBJECTS).values())
    out, i = [], 0
    while len(out) < n and any(i < len(s) for s in sets):
        out += [s[i] for s in sets if i < len(s)]
        i += 1
    return out[:n]


def build_model(preset: str, records: list[Record]) -> Path:
    """A random-weight model of a preset with the project tokenizer (runs/local's, else trained here)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from growthpace.platform.core.presets import PRESETS
    from growthpace.platform.train.models import count_params, llama_config, train_tokenizer

    toks = sorted((LOCAL / "tokenizer").glob("*/tokenizer.json")) if LOCAL.is_dir() else []
    tok = AutoTokenizer.from_pretrained(toks[0].parent) if toks else train_tokenizer(records)
    cfg = llama_config(PRESETS[preset], len(tok))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    d = _temp_dir(f"gp_bench_{preset}_")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    print(f"built {preset}: {count_params(cfg) / 1e6:.1f}M params, random weights -> {d}")
    return d


# --- the two methods -------------------------------------------------------------------------------


def limit_of(r: Record, limits: dict[str, int]) -> int:
    return min(max_new_tokens(r), limits.get(question_kind(r), 10**9))


@torch.inference_mode()
def original_predict(model_dir: Path, records: list[Record], limits: dict[str, int], max_length: int = 1024,
                     warmup: int = 0):
    """The study's method: one item at a time, generate at batch size 1, one forward per candidate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from growthpace.platform.data.chat import ChatEncoder

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    enc = ChatEncoder(tok)
    letter_ids = {ch: enc.text(ch)[0] for ch in LETTERS}
    load_s = time.perf_counter() - t0
    preds: list[Prediction] = []
    per_kind: dict[str, float] = {}
    for i, r in enumerate(records[:warmup] + records):
        if i == warmup:
            t0, preds, per_kind = time.perf_counter(), [], {}
        t_item = time.perf_counter()
        if needs(r) == "rank":
            nll = []
            for cand in r.choices:
                c = enc.continuation(cand)
                p = enc.prompt(r.prompt)[-max(1, max_length - len(c)):]
                logp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].float(), -1)
                nll.append(-sum(logp[len(p) - 1 + j, t].item() for j, t in enumerate(c)) / len(c))
            preds.append(Prediction(candidate_nll=tuple(nll)))
            per_kind["perplexity"] = per_kind.get("perplexity", 0.0) + time.perf_counter() - t_item
            continue
        limit = limit_of(r, limits)
        p = enc.prompt(r.prompt)[-(max_length - limit):]
        ids = torch.tensor([p])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=limit,
                             do_sample=False, eos_token_id=enc.eot, pad_token_id=enc.pad,
                             output_scores=True, return_dict_in_generate=True)
        text = enc.decode(out.sequences[0, len(p):].tolist())
        letters = None
        if question_kind(r) == "choice":
            step0 = torch.log_softmax(out.scores[0][0].float(), -1)
            letters = {ch: step0[t].item() for ch, t in letter_ids.items()}
        preds.append(Prediction(text=text, letter_logprobs=letters))
        kind = question_kind(r)
        per_kind[kind] = per_kind.get(kind, 0.0) + time.perf_counter() - t_item
    return preds, load_s, time.perf_counter() - t0, per_kind


def project_predict(backend_name: str, model_dir: Path, records: list[Record], limits: dict[str, int],
                    batch_size: int, warmup: int = 0, by_kind: bool = False):
    from growthpace.evaluators.engines import load
    from growthpace.evaluators.backends import predict

    t0 = time.perf_counter()
    backend = load(backend_name, model_dir, batch_size)
    load_s = time.perf_counter() - t0
    if warmup:
        predict(backend, records[:warmup], limits)
    per_kind: dict[str, float] = {}
    if by_kind:  # one predict call per question kind, timed apart
        preds: list = [None] * len(records)
        for kind in sorted({question_kind(r) for r in records}):
            idx = [i for i, r in enumerate(records) if question_kind(r) == kind]
            t0 = time.perf_counter()
            for i, pr in zip(idx, predict(backend, [records[i] for i in idx], limits)):
                preds[i] = pr
            per_kind[kind] = time.perf_counter() - t0
        run_s = sum(per_kind.values())
    else:
        t0 = time.perf_counter()
        preds = predict(backend, records, limits)
        run_s = time.perf_counter() - t0
    getattr(backend, "close", lambda: None)()
    return preds, load_s, run_s, per_kind


def compare(records, a, b) -> tuple[int, int, list[str]]:
    """(same verdict, same parsed answer, keys that differ)."""
    va = [score(r, p) for r, p in zip(records, a)]
    vb = [score(r, p) for r, p in zip(records, b)]
    same_v = sum(x.correct == y.correct for x, y in zip(va, vb))
    same_p = sum(x.parsed == y.parsed for x, y in zip(va, vb))
    diff = [f"{r.key} ({question_kind(r)}): {x.parsed!r}/{x.correct} vs {y.parsed!r}/{y.correct}"
            for r, x, y in zip(records, va, vb) if (x.correct, x.parsed) != (y.correct, y.parsed)]
    return same_v, same_p, diff


def kinds(records: list[Record]) -> str:
    from collections import Counter

    return ", ".join(f"{k} {n}" for k, n in sorted(Counter(question_kind(r) for r in records).items()))


def prompt_tokens(model_dir: Path, records: list[Record]) -> str:
    from transformers import AutoTokenizer

    from growthpace.platform.data.chat import framing_for

    enc = framing_for(AutoTokenizer.from_pretrained(model_dir))
    lengths = sorted(len(enc.prompt(r.prompt)) for r in records)
    return f"prompt tokens: mean {sum(lengths) / len(lengths):.0f}, median {lengths[len(lengths) // 2]}, max {lengths[-1]}"


def report(label_a, a, label_b, b, records, n):
    (pa, la, ta, ka), (pb, lb, tb, kb) = a, b
    same_v, same_p, diff = compare(records, pa, pb)
    print(f"{label_a:<34} load {la:6.1f} s   score {ta:7.2f} s   {n / ta:8.1f} items/s")
    print(f"{label_b:<34} load {lb:6.1f} s   score {tb:7.2f} s   {n / tb:8.1f} items/s")
    print(f"ratio ({label_a} / {label_b} items/s): {tb / ta:.1f}x")
    by_kind = {}
    if ka and kb:
        count = {k: sum(question_kind(r) == k for r in records) for k in ka}
        for k in sorted(ka):
            by_kind[k] = {"items": count[k], "a_s": ka[k], "b_s": kb.get(k, float("nan"))}
            print(f"  {k:<13} {count[k]:4d} items: {ka[k]:7.2f} s vs {kb.get(k, float('nan')):7.2f} s "
                  f"(ratio {kb.get(k, float('nan')) / ka[k]:.1f}x)")
    print(f"agreement: same verdict on {same_v}/{n} items, same parsed answer on {same_p}/{n}")
    for d in diff[:10]:
        print("  differs:", d)
    return {"a": label_a, "b": label_b, "items": n, "a_items_s": n / ta, "b_items_s": n / tb,
            "ratio": tb / ta, "same_verdict": same_v, "same_parsed": same_p, "a_load_s": la, "b_load_s": lb,
            "by_kind": by_kind}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="HF model folder (default: see above)")
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backend", choices=["transformers", "vllm"], default="transformers", help="the project's side")
    ap.add_argument("--math-tokens", type=int, default=40, help="generation cap for math (the local study's)")
    ap.add_argument("--backends", action="store_true", help="mode 2: vLLM vs transformers on --preset")
    ap.add_argument("--preset", help="build this preset (random weights) instead of --model; mode 2's default: llama-20m")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--warmup", type=int, default=8, help="items run once, untimed, before each side")
    ap.add_argument("--by-kind", action="store_true", help="time the project's side per question kind")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    limits = {"math": args.math_tokens}
    records = eval_records(args.items)
    n = len(records)
    print(f"{n} items: {kinds(records)}; torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")

    if args.backends:
        from growthpace.evaluators.vllm_backend import available

        problem = available()
        if problem:
            sys.exit(f"--backends needs vLLM: {problem}")
        model_dir = args.model or build_model(args.preset or "llama-20m", records)
        print(prompt_tokens(model_dir, records))
        hf = project_predict("transformers", model_dir, records, limits, args.batch_size, args.warmup, args.by_kind)
        vl = project_predict("vllm", model_dir, records, limits, args.batch_size, args.warmup, args.by_kind)
        out = report(f"vllm (batch {args.batch_size})", vl, f"transformers (batch {args.batch_size})", hf, records, n)
    else:
        if args.backend == "vllm":
            from growthpace.evaluators.vllm_backend import available

            problem = available()
            if problem:
                sys.exit(f"--backend vllm: {problem}")
        model_dir = args.model or (build_model(args.preset, records) if args.preset else None)
        model_dir = model_dir or pick_checkpoint() or build_model("llama-mini", records)
        print(f"model: {model_dir}")
        print(prompt_tokens(model_dir, records))
        # the original first: vLLM pins torch's threads once loaded, which would skew what runs after it
        orig = original_predict(model_dir, records, limits, warmup=args.warmup)
        proj = project_predict(args.backend, model_dir, records, limits, args.batch_size, args.warmup, args.by_kind)
        out = report(f"project {args.backend} (batch {args.batch_size})", proj, "original (batch 1, per item)", orig, records, n)
    out.update(model=str(model_dir), kinds=kinds(records), threads=torch.get_num_threads())
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    import shutil

    try:
        main()
    finally:
        for d in _TEMP_DIRS:
            shutil.rmtree(d, ignore_errors=True)
