"""A GPU node's boot check (cluster.yaml worker_setup_commands, in the project's image):

    python -m growthpace.jobs.node_check

Prints the NVIDIA driver version, then fails with one line naming the driver and the minimum when it is
older than what the image's CUDA 13 builds need, before anything imports torch (an old driver only makes
``torch.cuda.is_available()`` false, with no word on why). Then imports what a trial and a scoring actor
need and asks for CUDA, so a wrong image fails the node at boot, not at its first trial.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# torch 2.13.0 and vLLM 0.32.0 from the registry are CUDA 13 builds: NVIDIA driver >= 580 (the CUDA 13.0
# release notes' minimum for Linux). docs/cluster.md and deploy/Dockerfile state the same figure.
MIN_DRIVER = (580, 0)
WHY = "the image's CUDA 13 builds of torch 2.13.0 / vLLM 0.32.0"


def driver_version() -> str | None:
    """The loaded kernel driver's version: from NVML (nvidia-ml-py, in the gpu extra), else the kernel's
    /proc/driver/nvidia/version; None when neither tells (no driver, no GPU passed to the container)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # NVML missing or no driver: fall back to the kernel's own line
        pass
    try:
        found = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9]+(?:\.[0-9]+)+)",
                          Path("/proc/driver/nvidia/version").read_text())
    except OSError:
        return None
    return found.group(1) if found else None


def driver_problem(version: str | None, minimum: tuple[int, ...] = MIN_DRIVER) -> str | None:
    """The one line that fails the node, or None when the driver is new enough."""
    need = ".".join(map(str, minimum))
    if version is None:
        return (f"no NVIDIA driver found (NVML, /proc/driver/nvidia/version): {WHY} need driver >= {need}; "
                "use a GPU AMI/node image with it and run the container with the GPUs")
    try:
        have = tuple(int(p) for p in version.split("."))
    except ValueError:
        return f"NVIDIA driver version {version!r} is unreadable: {WHY} need >= {need}"
    if have < minimum:
        return (f"NVIDIA driver {version} is older than {need}, the minimum for {WHY}: use a node image "
                f"(AMI) with driver >= {need}")
    return None


def main() -> int:
    version = driver_version()
    print(f"nvidia driver {version or 'absent'} (minimum {'.'.join(map(str, MIN_DRIVER))})", flush=True)
    problem = driver_problem(version)
    if problem:
        print(f"growthpace node check failed: {problem}", file=sys.stderr)
        return 1
    import deepspeed  # noqa: F401  (what every trial imports)
    import torch
    import vllm  # noqa: F401  (what every GPU scoring actor imports)

    import growthpace  # noqa: F401

    if not torch.cuda.is_available():
        print(f"growthpace node check failed: driver {version} but torch {torch.__version__} sees no CUDA device",
              file=sys.stderr)
        return 1
    print(f"growthpace image ok, torch {torch.__version__}, {torch.cuda.device_count()} GPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
