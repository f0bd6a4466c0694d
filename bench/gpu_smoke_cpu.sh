#!/usr/bin/env bash
# bench/gpu_smoke.py --cpu as the lent GPU machine would run it: every package its image lacks
# (bench/gpu_machine_lacks.txt: msgspec, pydantic, DeepSpeed, Ray, vLLM, MLflow, polars, ...) is hidden
# (bench/gpu_env/sitecustomize.py), and only the wheels bench/gpu_wheels.sh fetches are installed
# beside it, as the GPU command installs them. Passes when the smoke runs to its figures.
#
#   bench/gpu_smoke_cpu.sh [WHEEL_DIR] [gpu_smoke.py options]   # default .whl-cpu (this python's version)
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
wheels=${1:-.whl-cpu}
version=$($py -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
bench/gpu_wheels.sh "$wheels" "$version" >/dev/null
site=$PWD/$wheels/site  # kept: DeepSpeed's JIT-built CPU comm op is cached for this path (else ~3 min a run)
[ -d "$site/deepspeed" ] || $py -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
export TOKENIZERS_PARALLELISM=false TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.venv/torch_extensions}
GPU_SMOKE_SITE=$site PYTHONPATH=bench/gpu_env:$site $py - <<'PY'
import importlib.util
for name in ("ray", "vllm", "mlflow", "polars"):
    assert importlib.util.find_spec(name) is None, f"{name} is not hidden"
PY
GPU_SMOKE_SITE=$site PYTHONPATH=bench/gpu_env:$site $py bench/gpu_smoke.py --cpu "${@:2}"
