"""GPU smoke check: the project's training, rank-0 save, reload and scoring at 7b and 33b width, on ONE GPU.

    bench/gpu_wheels.sh .whl 3.12                      # once, here: the wheels the GPU image lacks (~5 MB)
    # on the GPU machine (carry .whl), about 8 minutes:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
      PYTHONPATH=/tmp/site python3 bench/gpu_smoke.py
    bench/gpu_smoke_cpu.sh                              # the same path on CPU, tiny, with what the GPU machine lacks hidden

Per width (``--sizes``, default 7b and 33b; ``--cpu``: one tiny width) a LLaMA-shaped slice of
``--layers`` layers at that width (hidden, heads, MLP of LLaMA-7b / -33b) is built from config with the
project's own BPE tokenizer (platform/train/models.py train_tokenizer on the embedded procedural dataset),
so nothing is downloaded. Then, through the project's own code:

- training: ``CellTraining`` (platform/train/train.py) with DeepSpeed ZeRO-3 bf16 and packing, ``--epochs``
  epochs of ``--steps`` optimizer steps in a one-rank process group (nccl on GPU, gloo on CPU);
- the rank-0 save of each epoch (``CellTraining.save``: weights gathered tensor by tensor to rank 0,
  HF folder + tokenizer, digests, epoch.json), timed, and the DeepSpeed resume state, timed apart;
- the reload of the last checkpoint with transformers, its logits on a fixed packed row against the
  trained engine's (the save and reload lose nothing but bf16 rounding);
- scoring of that checkpoint with the project's transformers backend on the GPU (predict + score), and
  with vLLM where it is importable (``vllm=absent`` where not).

Prints, per width: MFU (6 x params x real tokens/s of the last epoch over the GPU's dense bf16 peak; n/a
on CPU), peak GPU memory of training (peak RSS on CPU), save seconds per GB (weights; resume state),
and scoring items/s. A benchmark, not a test: the figures are what this run measured.
"""

from __future__ import annotations

import argparse
import gc
import json
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
# LLaMA widths (hidden, heads, MLP): the study's 7b and 33b; "tiny" is the CPU smoke's.
WIDTHS = {"7b": (4096, 32, 11008), "13b": (5120, 40, 13824), "33b": (6656, 52, 17920), "tiny": (128, 4, 344)}


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="tiny run on CPU (a smoke check that the path works)")
    p.add_argument("--sizes", help="widths to run, comma-separated (default 7b,33b; tiny with --cpu)")
    p.add_argument("--layers", type=int, default=2, help="decoder layers of each slice (default 2)")
    p.add_argument("--steps", type=int, help="optimizer steps per epoch (default 12 on GPU, 2 on CPU)")
    p.add_argument("--epochs", type=int, default=2, help="epochs, each saved (default 2: the last is timed)")
    p.add_argument("--micro", type=int, help="items per micro-batch, packed into one row (default 16 / 4)")
    p.add_argument("--max-length", type=int, help="tokens per item at most (default 1024 / 128)")
    p.add_argument("--eval-items", type=int, help="scored items (default 200 / 20)")
    p.add_argument("--work", type=Path, help="folder for data, models and checkpoints (default: a temp dir)")
    a = p.parse_args()
    a.sizes = (a.sizes or ("tiny" if a.cpu else "7b,33b")).split(",")
    unknown = [s for s in a.sizes if s not in WIDTHS]
    if unknown:
        p.error(f"--sizes: unknown width(s) {unknown}; one of {', '.join(WIDTHS)}")
    a.steps = a.steps or (2 if a.cpu else 12)
    a.micro = a.micro or (4 if a.cpu else 16)
    a.max_length = a.max_length or (128 if a.cpu else 1024)
    a.eval_items = a.eval_items or (20 if a.cpu else 200)
    return a


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data(work: Path, a):
    """(the project's tokenizer trained on the training split, training records, eval records)."""
    from growthpace.platform.core.abilities import ABILITIES
    from growthpace.platform.data.generate import generate_dataset
    from growthpace.platform.data.records import read_split
    from growthpace.platform.train.models import train_tokenizer

    items = a.steps * a.micro
    data = work / "data"
    if not data.exists():
        generate_dataset(data, seed=0, train_per_ability=-(-items // len(ABILITIES)),
                         valid_per_ability=-(-a.eval_items // len(ABILITIES)), test_per_ability=1,
                         ood_per_subject=1, synthetic=1, world_per_family=20)
    train = [r for recs in read_split(data, "1000").values() for r in recs]
    valid = [r for recs in read_split(data, "valid").values() for r in recs][: a.eval_items]
    return train_tokenizer(train), train[:items], valid


def _base(work: Path, width: str, layers: int, tokenizer) -> Path:
    """A LLaMA slice at ``width`` built from config (random weights, bf16, untied head as LLaMA has)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from growthpace.platform.core.presets import Preset
    from growthpace.platform.train.models import preset_config, vocab_size

    hidden, heads, mlp = WIDTHS[width]
    fields = preset_config(Preset(hidden=hidden, layers=layers, heads=heads, intermediate=mlp), vocab_size(tokenizer))
    out = work / f"base-{width}-{layers}l"
    if not (out / "config.json").exists():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(LlamaConfig(**{**fields, "tie_word_embeddings": False}),
                                                 dtype=torch.bfloat16)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        del model
    return out


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _train_save_reload(base: Path, train, a, out: Path, device) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from growthpace.platform.data.chat import framing_for
    from growthpace.platform.train.packing import collate
    from growthpace.platform.train.train import RESUME_STATE, CellTraining

    examples = framing_for(AutoTokenizer.from_pretrained(base)).examples([r.messages for r in train], a.max_length)
    config = {"base_model": str(base), "epochs": a.epochs, "seed": 0, "lr": 1e-5, "end_lr": 1e-6,
              "betas": [0.9, 0.95], "weight_decay": 0.1, "per_device_batch": a.micro, "grad_accum": 1,
              "precision": "bf16", "zero_stage": 3, "packing": True}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    training = CellTraining(config, examples, 0, 1, device)
    fig = {"setup_s": time.perf_counter() - t0, "params": training.params,
           "attention": training.engine.module.config._attn_implementation, "epochs": []}
    real_tokens = sum(len(x) for x, _ in examples)  # packed: the model computes exactly these
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        loss = training.train_epoch(epoch)
        _sync(device)
        train_s = time.perf_counter() - t0
        ck = out / f"checkpoint_{epoch + 1:03d}"
        ck.mkdir(parents=True)
        t0 = time.perf_counter()
        training.save(ck, epoch + 1, loss, resume_state=False)  # the rank-0 save of the HF weights
        save_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        training.engine.save_checkpoint(str(ck / RESUME_STATE), tag="state")  # what resuming would need
        _sync(device)
        state_s = time.perf_counter() - t0
        fig["epochs"].append({"epoch": epoch + 1, "loss": loss, "train_s": train_s, "tokens_per_s": real_tokens / train_s,
                              "skipped_steps": training.skipped_steps, "save_s": save_s,
                              "save_gb": _bytes(ck / "model") / 1e9, "state_s": state_s,
                              "state_gb": _bytes(ck / RESUME_STATE) / 1e9})
        print(f"  epoch {epoch + 1}: loss {loss:.4f}, {train_s:.1f} s, saved weights in {save_s:.1f} s, "
              f"resume state in {state_s:.1f} s", flush=True)
    fig["checkpoint"] = ck / "model"
    fig["peak_bytes"] = (torch.cuda.max_memory_allocated() if device.type == "cuda"
                         else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    # the reload: the saved folder's logits on one packed row against the engine that wrote it
    row = collate(examples[: a.micro], training.pad, True, device)
    row = {k: v for k, v in row.items() if k != "labels"}
    training.engine.eval()
    with torch.no_grad():
        trained = training.engine(**row, use_cache=False).logits.float().cpu()
    del training
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    model = AutoModelForCausalLM.from_pretrained(fig["checkpoint"], dtype=torch.bfloat16,
                                                 attn_implementation=fig["attention"]).to(device).eval()
    with torch.no_grad():
        reloaded = model(**row, use_cache=False).logits.float().cpu()
    fig["reload_max_logit_diff"] = (reloaded - trained).abs().max().item()
    fig["reload_logit_scale"] = trained.abs().max().item()
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return fig


def _score(checkpoint: Path, valid, cpu: bool) -> list[dict]:
    """Items/s of the project's scoring of one checkpoint: transformers, then vLLM where importable."""
    from growthpace.evaluators.backends import predict
    from growthpace.evaluators.engines import load
    from growthpace.evaluators.scoring import score
    from growthpace.evaluators.vllm_backend import available

    limits = {k: 8 for k in ("choice", "true_false", "cloze", "math", "multi_select")} if cpu else {"math": 32}
    rows = []
    for name in ("transformers", "vllm"):
        if name == "vllm" and available():
            rows.append({"backend": "vllm", "absent": available()})
            continue
        t0 = time.perf_counter()
        backend = load(name, checkpoint, batch_size=64, max_length=512 if cpu else 2048)
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        preds = predict(backend, valid, limits)
        elapsed = time.perf_counter() - t0
        correct = sum(bool(score(r, p).correct) for r, p in zip(valid, preds))
        getattr(backend, "close", lambda: None)()
        del backend
        gc.collect()
        rows.append({"backend": name, "engine_start_s": start, "items_per_s": len(valid) / elapsed,
                     "correct": correct, "items": len(valid)})
    return rows


def _process_group(device) -> None:
    import torch.distributed as dist

    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(_free_port()))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)


def main() -> None:
    a = _args()
    import torch
    import transformers

    if not a.cpu and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run with --cpu for the tiny CPU smoke check")
    device = torch.device("cpu") if a.cpu else torch.device("cuda", 0)
    if a.cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = PEAK_BF16.get(next((k for k in PEAK_BF16 if k in gpu), ""), None)
    print(f"device={gpu} torch={torch.__version__} transformers={transformers.__version__} "
          f"python={sys.version.split()[0]}", flush=True)
    _process_group(device)
    t_all = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
        work = a.work or Path(tmp)
        tokenizer, train, valid = _data(work, a)
        for width in a.sizes:
            print(f"{width} width, {a.layers} layer(s): {len(train)} items x {a.epochs} epochs, "
                  f"{a.micro} packed per micro-batch, ZeRO-3 bf16", flush=True)
            base = _base(work, width, a.layers, tokenizer)
            fig = _train_save_reload(base, train, a, work / f"train-{width}", device)
            fig["scoring"] = _score(fig["checkpoint"], valid, a.cpu)
            results[width] = fig
    print(f"--- figures (device {gpu})")
    for width, fig in results.items():
        last = fig["epochs"][-1]
        mfu = 6 * fig["params"] * last["tokens_per_s"] / peak if peak else None
        memory = "peak_gpu_memory_gib" if device.type == "cuda" else "peak_rss_gib"
        print(f"{width}: params={fig['params'] / 1e6:.1f}M attention={fig['attention']} setup_s={fig['setup_s']:.1f} "
              f"train_tokens_per_s={last['tokens_per_s']:.0f} mfu={'n/a' if mfu is None else f'{mfu:.3f}'} "
              f"{memory}={fig['peak_bytes'] / 2**30:.2f} skipped_steps={last['skipped_steps']}")
        print(f"{width}: save_weights_s_per_gb={last['save_s'] / last['save_gb']:.2f} ({last['save_gb']:.2f} GB) "
              f"save_resume_state_s_per_gb={last['state_s'] / last['state_gb']:.2f} ({last['state_gb']:.2f} GB) "
              f"reload_max_logit_diff={fig['reload_max_logit_diff']:.3g} (logits up to {fig['reload_logit_scale']:.3g})")
        for r in fig["scoring"]:
            if "absent" in r:
                print(f"{width}: vllm=absent ({r['absent']})")
            else:
                print(f"{width}: score backend={r['backend']} engine_start_s={r['engine_start_s']:.1f} "
                      f"items_per_s={r['items_per_s']:.1f} correct={r['correct']}/{r['items']}")
    print(f"total_s={time.perf_counter() - t_all:.0f}")
    out = os.environ.get("OUT")
    if out:  # the device machine returns what is written under $OUT
        Path(out, "gpu_smoke.json").write_text(json.dumps(
            {w: {k: v for k, v in f.items() if k != "checkpoint"} for w, f in results.items()}, indent=1, default=str))


if __name__ == "__main__":  # vLLM may spawn processes: the guard keeps them from re-running this
    main()
