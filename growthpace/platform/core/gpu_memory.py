"""What one GPU holds: a training rank's estimated peak and a scoring engine's room for KV cache, the
arithmetic `plan` checks against the card a model size is pinned to (docs/cluster.md).

Both are estimates from the model's shape and the spec's settings, not measurements; plan prints them
as such. bench/scale_proxies.py measures the CPU proxies of the same terms.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
# Memory per GPU as torch.cuda reports it (total_memory, GiB), by the name Ray reports for the
# accelerator (Ray reports an A100 80 GB as "A100"): 80 GB cards give 79.2, a 141 GB H200 139.8.
GPU_MEMORY_GIB = {"A100": 79.2, "A100-80G": 79.2, "A100-40G": 39.4, "H100": 79.2, "H200": 139.8, "L40S": 44.4}
# The estimate below leaves out the caching allocator's fragmentation: plan warns above this share.
TRAINING_HEADROOM = 0.95
# CUDA context, NCCL buffers and cuBLAS workspaces of one rank.
FIXED_GIB = 3.0
# vLLM's gpu_memory_utilization default (evaluators/vllm_backend.py leaves it), and what its engine takes
# beside weights and KV cache (activations of the largest batch, CUDA graphs).
VLLM_MEMORY_FRACTION = 0.9
VLLM_OVERHEAD_GIB = 1.0
_WEIGHT_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
# DeepSpeed's default buckets (elements): ZeRO-1/2 reduce + all-gather 5e8 each, ZeRO-3 up to 1e9 live
# parameters and a 5e8 reduce bucket.
_BUCKET_ELEMENTS = {0: 0, 1: 1e9, 2: 1e9, 3: 1.5e9}
# LLaMA-1's (hidden, layers, intermediate): the shape a declared parameter count is read as when the
# model's config is not at hand (doit's base models live on the cluster's storage).
LLAMA_SHAPES = ((4096, 32, 11008), (5120, 40, 13824), (6656, 60, 17920), (8192, 80, 22016))


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    intermediate: int
    vocab: int


def _layer_params(hidden: int, layers: int, intermediate: int) -> int:
    return layers * (4 * hidden * hidden + 3 * hidden * intermediate) + (2 * layers + 1) * hidden


def llama_shape(params: int) -> Shape:
    """The largest LLaMA shape whose layers fit in ``params``; the rest is the (untied) embedding and head."""
    fits = [s for s in LLAMA_SHAPES if _layer_params(*s) < params] or [LLAMA_SHAPES[0]]
    hidden, layers, intermediate = fits[-1]
    vocab = max(0, (params - _layer_params(hidden, layers, intermediate)) // (2 * hidden))
    return Shape(hidden, layers, intermediate, vocab)


def training_peak_gib(params: int, shape: Shape, zero_stage: int, world: int, micro_batch: int, max_length: int,
                      precision: str, gradient_checkpointing: bool) -> float:
    """One rank's estimated peak in backward: model states as ZeRO partitions them (16-bit weights and
    gradients, fp32 master weights and Adam moments; 16 bytes/param in fp32 too), DeepSpeed's buckets, the
    activations of one packed micro-batch (34 bytes x tokens x hidden per layer in 16 bits, Korthikanti et
    al. 2022, no s^2 term: sdpa/flash attention; with gradient checkpointing each layer keeps only its
    input and one layer is recomputed at a time), the logits with their fp32 copy and gradient, and a
    fixed CUDA/NCCL share."""
    w = _WEIGHT_BYTES[precision]
    grads, optim = w, (12 if w == 2 else 8)
    per_param = {0: w + grads + optim, 1: w + grads + optim / world, 2: w + (grads + optim) / world,
                 3: (w + grads + optim) / world}[zero_stage]
    tokens = micro_batch * max_length
    layer = 34 * tokens * shape.hidden * w / 2
    activations = shape.layers * tokens * shape.hidden * w + layer if gradient_checkpointing else shape.layers * layer
    logits = tokens * shape.vocab * (w + 4 + 4)
    total = params * per_param + _BUCKET_ELEMENTS[zero_stage] * w + activations + logits
    return total / GIB + FIXED_GIB


def kv_cache_gib(params: int, card_gib: float, gpus: float, dtype_bytes: int = 2) -> float:
    """What a vLLM engine over ``gpus`` cards (tensor parallel) has left per card for KV cache once its
    share of the 16-bit weights is loaded."""
    return card_gib * VLLM_MEMORY_FRACTION - params * dtype_bytes / max(gpus, 1) / GIB - VLLM_OVERHEAD_GIB
