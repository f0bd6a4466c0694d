"""Checkpoint scoring through `ray.data.llm`'s vLLM engine processor: the GPU-cluster path.

The one module that touches ``ray.data.llm``. ``ProcessorBackend`` is a Backend (evaluators/backends.py)
answering the requests of evaluators/requests.py, but its engine is a Ray Data stage: rows are
requests, and one processor (one engine actor) runs a whole plan, torn down before it returns.

- a ``Generation`` is one row: its prompt ids, greedy sampling stopped at <eot>, and for choice items
  ``logprob_token_ids`` = the item's option letters' first tokens, so the reply and the letter
  log-probs at the FIRST answer position come from one request;
- a ``Continuation`` is one row: prompt + continuation, ``max_tokens=1`` and ``prompt_logprobs=0``;
  the mean NLL of the continuation tokens is taken from the prompt log-probs.

A postprocess step reduces every engine output to (generated tokens, letter log-probs, NLL) on the
workers, so only a few numbers per row come back to the driver, which matches them to requests by the
``row`` column.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from growthpace.evaluators.backends import Backend
from growthpace.evaluators.requests import Continuation, Generation, Reply, RequestPlan
from growthpace.evaluators.scoring import Prediction
from growthpace.evaluators.vllm_backend import engine_args, engine_env, sampling
from growthpace.platform.core.capacity import ActorBundle
from growthpace.platform.data.chat import framing_for
from growthpace.platform.store.checkpoints import checkpoint_dtype

# Ray Data's name for the engine stage's actors (MapWorker(MapBatches(vLLMEngineStageUDF))).
ENGINE_ACTOR_MARK = "vLLMEngineStageUDF"


def request_rows(plan: RequestPlan) -> list[dict]:
    """One row per request, generations first, ``row`` = position. Every row's sampling_params has
    the same keys and no null int (see below), so the column has one schema."""
    rows: list[dict] = []

    def add(ids: list[int], params: dict, watch: Sequence[int], start: int) -> None:
        rows.append({
            "row": len(rows),
            "tokenized_prompt": ids,
            "sampling_params": {
                **params,
                "detokenize": False,  # text is decoded on the driver, as the backends do
                # Every row asks for prompt log-probs: Ray Data hands a batch's struct column to the stage
                # through numpy, where an int field with nulls turns float (0 -> 0.0) and vLLM's request
                # decoder rejects it. Generation rows keep reading the prefix cache (their prompt
                # log-probs are partial then, and dropped); candidate rows read none, so theirs are whole.
                "prompt_logprobs": 0,
                "skip_reading_prefix_cache": start >= 0,
            },
            "watch": list(watch),
            "start": start,
        })

    for g in plan.generations:
        add(g.prompt, sampling(g.max_tokens, plan.enc.eot, g.letter_ids), g.letter_ids, -1)
    for c in plan.continuations:
        add(c.sequence, sampling(1, plan.enc.eot), (), len(c.prompt))
    return rows


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

    engine = engine_args(max_length, gpus > 0, checkpoint_dtype(model_dir), gpus)
    remote_args = remote_args or {}
    # the scoring actor's bundle: no GPU entry on CPU (else the stage asks for a GPU and waits forever)
    actor = ActorBundle(gpus=float(gpus), custom=dict(remote_args.get("resources", {})),
                        accelerator_type=remote_args.get("accelerator_type"))
    bundles = [actor.resources]
    placement = {"accelerator_type": actor.accelerator_type} if actor.accelerator_type else {}
    return vLLMEngineProcessorConfig(
        model_source=str(model_dir),
        engine_kwargs=engine,
        batch_size=batch_size,
        concurrency=1,  # one engine per checkpoint
        placement_group_config={"bundles": bundles},
        # ray.data.llm's async engine always runs its core in a subprocess: no in-process switch here
        runtime_env={"env_vars": {**engine_env(gpus > 0), "OMP_NUM_THREADS": "1"}},
        chat_template_stage=False,  # rows carry the framing's token ids: no template,
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


class ProcessorBackend(Backend):
    """A Backend whose engine is a ray.data.llm processor, built per ``answer`` call: one engine runs a
    whole plan (generations and continuations), and is gone before ``answer`` returns."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, batch_size: int = 64, max_length: int = 1024, gpus: float = 0.0,
                 remote_args: dict | None = None):
        from transformers import AutoTokenizer

        self.model_dir, self.batch_size, self.max_length, self.gpus = model_dir, batch_size, max_length, gpus
        self.remote_args = remote_args  # the scoring node group (jobs/placement.py scoring_remote_args)
        self.enc = framing_for(AutoTokenizer.from_pretrained(str(model_dir)))
        self.timings: dict[str, float | None] = {}

    def generate(self, requests: Sequence[Generation]) -> list[Reply]:
        return self._run(RequestPlan(0, self.enc, list(requests), []))[0]

    def continuation_nll(self, requests: Sequence[Continuation]) -> list[float]:
        return self._run(RequestPlan(0, self.enc, [], list(requests)))[1]

    def answer(self, plan: RequestPlan) -> list[Prediction]:
        return plan.predictions(*self._run(plan))

    def close(self) -> None:
        pass  # every run's engine is gone when it returns

    def _run(self, plan: RequestPlan) -> tuple[list[Reply], list[float]]:
        """Every request through one processor; ``timings``: wall seconds ``total`` and ``first_row``
        (engine start + first batch, from the run's start)."""
        import ray.data
        from ray.data.llm import build_processor

        t0 = time.time()
        rows = request_rows(plan)
        if not rows:
            return [], []
        before = engine_actors()
        ray.data.DataContext.get_current().enable_progress_bars = False
        processor = build_processor(
            processor_config(self.model_dir, batch_size=self.batch_size, gpus=self.gpus, max_length=self.max_length,
                             remote_args=self.remote_args),
            postprocess=reduce_output,
            preprocess_map_kwargs={"num_cpus": 0.1},
            postprocess_map_kwargs={"num_cpus": 0.1},
        )
        ds = processor(ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // self.batch_size)))
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
            raise RuntimeError(f"{self.model_dir}: the vLLM processor returned {len(results)} of {len(rows)} requests")
        n = len(plan.generations)
        replies = [Reply([int(t) for t in results[i]["tokens"]], tuple(map(float, results[i]["letters"] or ())))
                   for i in range(n)]
        nll = [float(results[n + i]["nll"]) for i in range(len(plan.continuations))]
        self.timings = {"total": time.time() - t0, "first_row": first}
        return replies, nll
