"""Checkpoint scoring through `ray.data.llm`'s vLLM engine processor: the GPU-cluster path.

The one module that touches ``ray.data.llm``. It gives exactly what ``checkpoint.predict`` gives with
an in-process backend (one ``Prediction`` per record), but the engine is a Ray Data stage: rows are
requests, and one processor (one engine actor) is built per checkpoint and torn down before the next.

- a generation item is one row: its prompt (ChatEncoder ids, truncated like the backends do), greedy
  sampling stopped at <eot>; for choice items ``logprob_token_ids`` = the option letters' first tokens,
  so the reply and the letter log-probs at the FIRST answer position come from one request;
- a perplexity candidate is one row: prompt + ``enc.continuation(cand)``, ``max_tokens=1`` and
  ``prompt_logprobs=0``; the mean NLL of the continuation tokens is taken from the prompt log-probs.

A postprocess step reduces every engine output to (generated tokens, letter log-probs, NLL) on the
workers, so only a few numbers per row come back to the driver, which matches them to records by the
``row`` column. Text is decoded on the driver with the same ChatEncoder as the in-process backends.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from growthpace.evaluators.checkpoint import LETTERS
from growthpace.evaluators.scoring import Prediction, max_new_tokens, needs, question_kind
from growthpace.platform.chat import ChatEncoder
from growthpace.platform.records import Record

# The engine actor's environment (the processor's runtime_env): as vllm_backend._ENV, except that the
# async engine of ray.data.llm always runs its core in a subprocess, so the multiprocessing switch is moot.
ENGINE_ENV = {
    "TORCHDYNAMO_DISABLE": "1",
    "VLLM_CONFIGURE_LOGGING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "OMP_NUM_THREADS": "1",
}
CPU_KV_CACHE_BYTES = 256 * 2**20
# Ray Data's name for the engine stage's actors (MapWorker(MapBatches(vLLMEngineStageUDF))).
ENGINE_ACTOR_MARK = "vLLMEngineStageUDF"


def build_requests(
    enc: ChatEncoder, records: list[Record], limits: dict[str, int] | None = None, max_length: int = 1024
) -> tuple[list[dict], list[tuple[str, int]]]:
    """(request rows, what each row is for): ('gen', record index) or ('cand', record index).

    The same grouping and truncation as ``checkpoint.predict`` with VLLMBackend / TransformersBackend.
    Every row's sampling_params has the same keys and no null int (see below), so the column has one schema.
    """
    limits = limits or {}
    letter_ids = [enc.text(ch)[0] for ch in LETTERS]
    rows: list[dict] = []
    owner: list[tuple[str, int]] = []

    def add(ids: list[int], *, max_tokens: int, watch: list[int] | None, start: int) -> None:
        rows.append({
            "row": len(rows),
            "tokenized_prompt": ids,
            "sampling_params": {
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "stop_token_ids": [enc.eot],
                "skip_special_tokens": False,
                "detokenize": False,  # text is decoded on the driver, as the backends do
                "logprob_token_ids": watch,
                # Every row asks for prompt log-probs: Ray Data hands a batch's struct column to the stage
                # through numpy, where an int field with nulls turns float (0 -> 0.0) and vLLM's request
                # decoder rejects it. Generation rows keep reading the prefix cache (their prompt
                # log-probs are partial then, and dropped); candidate rows read none, so theirs are whole.
                "prompt_logprobs": 0,
                "skip_reading_prefix_cache": start >= 0,
            },
            "watch": watch or [],
            "start": start,
        })

    for i, r in enumerate(records):
        if needs(r) == "rank":
            p = enc.prompt(r.prompt)
            for cand in r.choices:
                c = enc.continuation(cand)
                q = p[-max(1, max_length - len(c)) :]
                add(q + c, max_tokens=1, watch=None, start=len(q))
                owner.append(("cand", i))
        else:
            kind = question_kind(r)
            limit = min(max_new_tokens(r), limits.get(kind, 10**9))
            p = enc.prompt(r.prompt)[-(max_length - limit) :]
            add(p, max_tokens=limit, watch=letter_ids if kind == "choice" else None, start=-1)
            owner.append(("gen", i))
    return rows, owner


def _lookup(d, token: int) -> float:
    """A token's log-prob from one position's {token id: {logprob, rank, decoded_token}}; keys may
    come back as str after the block format round trip."""
    if hasattr(d, "items"):
        entry = d.get(token, d.get(str(token)))
    else:  # a list of (key, value) pairs (an Arrow map)
        entry = dict(d).get(token)
    return float(entry["logprob"] if hasattr(entry, "__getitem__") and not isinstance(entry, float) else entry)


def reduce_output(row: dict) -> dict:
    """Postprocess (runs on the workers): an engine output row -> row id, tokens, letters, NLL."""
    out = {"row": int(row["row"]), "tokens": [int(t) for t in row["generated_tokens"]], "letters": None, "nll": None}
    watch = [int(t) for t in (row.get("watch") if row.get("watch") is not None else [])]
    if watch:
        step0 = row["logprobs"][0] if row.get("logprobs") is not None and len(row["logprobs"]) else {}
        out["letters"] = [_lookup(step0, t) for t in watch]
    start = int(row["start"])
    if start >= 0:
        seq = [int(t) for t in row["prompt_token_ids"]]
        lps = row["prompt_logprobs"]
        vals = [_lookup(lps[i], seq[i]) for i in range(start, len(seq))]
        out["nll"] = -sum(vals) / len(vals)
    return out


def processor_config(model_dir: str | Path, *, batch_size: int, gpus: float, max_length: int,
                     remote_args: dict | None = None):
    """The vLLMEngineProcessorConfig for one checkpoint: CPU (tests, laptops) or GPU (the cluster).
    ``remote_args`` (jobs/placement.py scoring_remote_args) puts the engine on the scoring node group."""
    from ray.data.llm import vLLMEngineProcessorConfig

    on_gpu = gpus > 0
    engine = dict(
        dtype="bfloat16" if on_gpu else "float32",
        enforce_eager=not on_gpu,
        max_model_len=max_length,
        max_logprobs=len(LETTERS),
        seed=0,
        enable_prefix_caching=True,
    )
    if on_gpu:
        tp = int(gpus) if gpus >= 1 else 1
        if tp > 1:
            # one actor holding all its GPUs, vLLM's own workers inside it: the "ray" executor would
            # create a placement group per engine that ray.data.llm never removes
            engine.update(tensor_parallel_size=tp, distributed_executor_backend="mp")
        bundles = [{"CPU": 1, "GPU": float(gpus)}]
    else:
        engine["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        bundles = [{"CPU": 1}]  # without it the stage asks for a GPU and waits forever on CPU nodes
    remote_args = remote_args or {}
    bundles[0].update(remote_args.get("resources", {}))
    placement = {"accelerator_type": remote_args["accelerator_type"]} if remote_args.get("accelerator_type") else {}
    return vLLMEngineProcessorConfig(
        model_source=str(model_dir),
        engine_kwargs=engine,
        batch_size=batch_size,
        concurrency=1,  # one engine per checkpoint
        placement_group_config={"bundles": bundles},
        runtime_env={"env_vars": dict(ENGINE_ENV)},
        chat_template_stage=False,  # rows carry ChatEncoder token ids: no template,
        tokenize_stage=False,  # no tokenizer stage,
        detokenize_stage=False,  # and the driver decodes
        log_engine_metrics=False,
        **placement,
    )


def engine_actors() -> dict[str, str]:
    """Alive engine-stage actors of this cluster (the processors' vLLM engines): actor id -> name.

    Read from the GCS actor table, so it works without the dashboard (ray.util.state needs it); an
    actor pool worker still in __init__ (engine starting) has no repr yet and is counted too."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    accessor = state._connect_and_get_accessor()
    found = {}
    for raw in accessor.get_actor_table(None, "ALIVE"):
        a = gcs_pb2.ActorTableData.FromString(raw)
        name = a.repr_name or a.class_name
        starting = a.class_name.endswith("_MapWorker") and a.repr_name in ("", "MapWorker(<initializing>)")
        if ENGINE_ACTOR_MARK in name or starting:
            found[a.actor_id.hex()] = name
    return found


def _wait_engine_gone(before: dict[str, str], timeout: float = 60.0) -> None:
    """Block until the engine actors this call started are dead: Ray Data ends its actor pool once the
    dataset is consumed, and the engine's bundle (CPU/GPU) must be free before the next checkpoint."""
    deadline = time.time() + timeout
    while True:
        mine = [a for a in engine_actors() if a not in before]
        if not mine:
            return
        if time.time() > deadline:
            raise RuntimeError(f"vLLM engine actor(s) {mine} still alive {timeout:.0f}s after the processor finished")
        time.sleep(0.5)


def predict_with_processor(
    model_dir: str | Path,
    records: list[Record],
    limits: dict[str, int] | None = None,
    *,
    batch_size: int = 64,
    gpus: float = 0.0,
    max_length: int = 1024,
    timings: dict | None = None,
    remote_args: dict | None = None,
) -> list[Prediction]:
    """One Prediction per record, as ``checkpoint.predict(load('vllm', model_dir), records, limits)``.

    Builds one processor (one vLLM engine actor) for this checkpoint, runs every request through it,
    and returns once the engine actor is gone. ``timings`` (optional) receives wall seconds:
    ``total`` and ``first_row`` (engine start + first batch, from the run's start).
    """
    import ray.data
    from ray.data.llm import build_processor
    from transformers import AutoTokenizer

    t0 = time.time()
    enc = ChatEncoder(AutoTokenizer.from_pretrained(str(model_dir)))
    rows, owner = build_requests(enc, records, limits, max_length)
    preds: list[Prediction | None] = [None] * len(records)
    if not rows:
        return preds  # type: ignore[return-value]

    before = engine_actors()
    ray.data.DataContext.get_current().enable_progress_bars = False
    processor = build_processor(
        processor_config(model_dir, batch_size=batch_size, gpus=gpus, max_length=max_length, remote_args=remote_args),
        postprocess=reduce_output,
        preprocess_map_kwargs={"num_cpus": 0.1},
        postprocess_map_kwargs={"num_cpus": 0.1},
    )
    ds = processor(ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // batch_size)))
    results: dict[int, dict] = {}
    first = None
    try:
        for out in ds.iter_rows():
            if first is None:
                first = time.time() - t0
            results[int(out["row"])] = out
    finally:
        del ds, processor
        _wait_engine_gone(before)
    if len(results) != len(rows):
        raise RuntimeError(f"{model_dir}: the vLLM processor returned {len(results)} of {len(rows)} requests")

    letters = list(LETTERS)
    per_item: dict[int, list[float]] = defaultdict(list)
    for n, (what, i) in enumerate(owner):
        out = results[n]
        if what == "cand":
            per_item[i].append(float(out["nll"]))
        else:
            lp = out["letters"]
            preds[i] = Prediction(
                text=enc.decode(list(out["tokens"])),
                letter_logprobs=dict(zip(letters, map(float, lp))) if lp is not None else None,
            )
    for i, nll in per_item.items():
        preds[i] = Prediction(candidate_nll=tuple(nll))
    if timings is not None:
        timings.update(total=time.time() - t0, first_row=first)
    return preds  # type: ignore[return-value]
