#!/usr/bin/env bash
# The wheels bench/gpu_smoke.py needs on the lent GPU machine, whose image has torch and transformers but
# not these (bench/gpu_machine_lacks.txt): pydantic (DeepSpeed's config), msgspec (the record reader),
# DeepSpeed itself and their own needs. DeepSpeed is a source distribution: built here into a
# pure-Python wheel (DS_BUILD_OPS=0; its ops JIT-compile where used, and the smoke uses none).
#
#   bench/gpu_wheels.sh [DIR] [PYTHON_VERSION]     # default .whl and 3.12 (the GPU image's python3)
#
# Then, on the machine: python3 -m pip install -q --no-index --no-deps --target /tmp/site DIR/*.whl
set -euo pipefail
dir=${1:-.whl}
py=${2:-3.12}
pip=(python -m pip)
[ -x .venv/bin/python ] && pip=(.venv/bin/python -m pip)
mkdir -p "$dir"
have=$(ls "$dir" | grep -c -E '^(msgspec|pydantic|pydantic_core|annotated_types|typing_inspection|typing_extensions|hjson)-' || true)
[ "$have" -ge 7 ] || "${pip[@]}" download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$dir" \
  msgspec==0.23.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  typing-extensions==4.16.0 hjson==3.1.0
if ! ls "$dir"/deepspeed-0.19.8-*.whl >/dev/null 2>&1; then
  src=$(mktemp -d)
  "${pip[@]}" download -q --no-deps --no-binary=:all: -d "$src" deepspeed==0.19.8
  DS_BUILD_OPS=0 "${pip[@]}" wheel -q --no-deps --no-build-isolation -w "$dir" "$src"/deepspeed-0.19.8.tar.gz
  rm -rf "$src"
fi
du -sh "$dir"
ls "$dir"
