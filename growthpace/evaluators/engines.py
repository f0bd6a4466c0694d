"""Which engine scores a checkpoint, and keeping it warm: `vllm`, `transformers`, or `auto` (vLLM where it
pays); `actor` or `processor` for vllm. The factory of the Backend contract (evaluators/backends.py)."""

from __future__ import annotations

from pathlib import Path

from growthpace.evaluators.backends import Backend
from growthpace.platform.core.spec import PIPELINES, PROCESSOR_NEEDS_A_FILESYSTEM

# On CPU, vLLM only pays off on larger models: on a 0.4M model it was no faster than batched
# transformers, on a 26M model 1.8x faster (docs/performance.md). `auto` uses it from this size on.
CPU_VLLM_MIN_PARAMS = 10_000_000


def resolve(name: str, params: int | None = None, gpu: bool | None = None) -> tuple[str, str]:
    """(backend to use, why). `auto`: vLLM where installed and worth it, else transformers."""
    from growthpace.evaluators.vllm_backend import available

    if name == "transformers":
        return "transformers", "asked for in the spec"
    problem = available()
    if name == "vllm":
        if problem:
            raise RuntimeError(f"evaluation.backend is 'vllm' but {problem}; install the cpu or gpu extra")
        return "vllm", "asked for in the spec"
    if problem:
        return "transformers", f"auto: {problem}"
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    if not gpu and params is not None and params < CPU_VLLM_MIN_PARAMS:
        return "transformers", f"auto: vllm installed, but on CPU a {params / 1e6:.1f}M-param model scores faster batched in transformers"
    return "vllm", "auto: vllm is installed" + ("" if gpu else " and the model is large enough to gain on CPU")


def load(name: str, model_dir: str | Path, batch_size: int, max_length: int = 1024, gpus: float = 0.0) -> Backend:
    if name == "vllm":
        from growthpace.evaluators.vllm_backend import VLLMBackend

        return VLLMBackend(model_dir, batch_size=batch_size, max_length=max_length, gpus=gpus)
    from growthpace.evaluators.transformers_backend import TransformersBackend

    return TransformersBackend(model_dir, batch_size=batch_size, max_length=max_length)


def warm(engine: Backend | None, name: str, model_dir: str | Path, batch_size: int, max_length: int = 1024,
         say=print, gpus: float = 0.0) -> Backend:
    """An engine holding ``model_dir``: the warm ``engine`` with the checkpoint's weights swapped in
    where it can take them (vllm, same signature), else a fresh one; a swap that fails says why."""
    swap = getattr(engine, "swap", None)
    if engine is not None and swap is not None and engine.max_length == max_length:
        try:
            swap(model_dir)
            return engine
        except ValueError as e:  # another shape, dtype or tokenizer: expected between model sizes
            say(f"warm engine: {model_dir}: a fresh engine, {e}")
        except Exception as e:  # noqa: BLE001  a broken swap must not lose the checkpoint's scores
            say(f"warm engine: {model_dir}: the in-place swap failed ({type(e).__name__}: {e}); a fresh engine")
    if engine is not None:
        engine.close()
    return load(name, model_dir, batch_size, max_length, gpus)


def resolve_pipeline(
    name: str, gpus_per_actor: float, backend: str | None = None, remote_storage: bool = False
) -> tuple[str, str]:
    """(how a vllm backend scores, why): `processor` (ray.data.llm, one engine per checkpoint) or `actor`
    (the engine inside the scoring actor, warm across checkpoints). `auto`: actor, on CPUs and GPUs: an
    engine start (1-3 min for 7b-33b on a GPU) is paid once per actor, not once per checkpoint.
    With ``backend`` given and not vllm, always `actor` (the setting does not apply). The processor's
    engine loads weights from a path its node sees, so storage in an object store means `actor` (which
    copies each checkpoint to its own node first)."""
    if name not in PIPELINES:
        raise ValueError(f"evaluation.vllm_pipeline must be one of {', '.join(PIPELINES)}, got {name!r}")
    if backend is not None and backend != "vllm":
        return "actor", f"backend is {backend}; evaluation.vllm_pipeline only applies to vllm"
    if remote_storage:
        if name == "processor":
            raise ValueError(PROCESSOR_NEEDS_A_FILESYSTEM)
        return "actor", "storage is an object store: each scoring actor copies the checkpoint to its node"
    if name != "auto":
        return name, "asked for in the spec"
    where = f"GPUs ({gpus_per_actor:g} per engine)" if gpus_per_actor > 0 else "CPUs"
    return "actor", f"auto: scoring runs on {where}, the engine stays warm inside the scoring actor across checkpoints"
