# Speed benchmarks: lmlab vs fairseq (prep, train-lm, eval-ppl) and vs pytorch/examples' word LM design,
# on the same data and model sizes, arms alternated, median ratios -> results/bench.json -> docs/results.md.
#   make bench                      full run (< 20 min on 2 quiet CPU cores)
#   make bench BENCH_QUICK=1        ~3 min smoke version
#   make bench BENCH_BIG=1          also lmlab prep on a WikiText-103-sized (~540 MB) stream: bounded memory
#   make bench BENCH_ARGS='--device cuda --precision bf16'   GPU mode (MFU against the GPU's bf16 peak)
# fairseq runs from its own interpreter: `make fairseq-env` builds it in $(FAIRSEQ_VENV) (fairseq-fixed on
# lmlab's own torch, never in lmlab's environment), and bench uses it; FAIRSEQ_PYTHON=... names another one.
# Without either the fairseq column is reported as skipped. Method and where the time goes: docs/bench.md.

BENCH_QUICK ?= 0
BENCH_BIG ?= 0
BENCH_DIR ?= /tmp/lmlab-bench
BENCH_ARGS ?=
FAIRSEQ_VENV ?= .venv-fairseq
FAIRSEQ_VERSION ?= 0.12.3.1
export FAIRSEQ_PYTHON ?= $(if $(wildcard $(FAIRSEQ_VENV)/bin/python),$(abspath $(FAIRSEQ_VENV))/bin/python)

# --system-site-packages: the baseline runs on the torch lmlab runs on (the same build, the same kernels);
# --no-build-isolation: fairseq's C extensions compile against that torch, not a freshly downloaded one.
fairseq-env: $(FAIRSEQ_VENV)/.built  ## build the fairseq baseline's own virtualenv for make bench (compiles its C++ extensions)
$(FAIRSEQ_VENV)/.built: | .installed
	$(PYTHON) -m venv --system-site-packages $(FAIRSEQ_VENV)
	$(FAIRSEQ_VENV)/bin/pip install -q cython wheel setuptools
	$(FAIRSEQ_VENV)/bin/pip install -q --no-build-isolation 'fairseq-fixed==$(FAIRSEQ_VERSION)'
	$(FAIRSEQ_VENV)/bin/python -c "import fairseq, torch; print('fairseq', fairseq.__version__, 'on torch', torch.__version__)"
	@touch $@

# The full run is a result (results/bench.json -> the bench region of docs/results.md); the quick one only prints.
bench: .installed  ## lmlab vs fairseq speed benchmarks (< 20 min on 2 quiet cores) [BENCH_QUICK=1 BENCH_BIG=1 BENCH_ARGS='--device cuda --precision bf16' FAIRSEQ_PYTHON=python]
	@mkdir -p $(BENCH_DIR)
	$(PYTHON) -m lmlab.core.machine > $(BENCH_DIR)/start.json
	BENCH_QUICK=$(BENCH_QUICK) BENCH_BIG=$(BENCH_BIG) BENCH_DIR=$(BENCH_DIR) $(PYTHON) bench/vs_fairseq.py $(BENCH_ARGS) > $(BENCH_DIR)/bench.md
	$(if $(filter 1,$(BENCH_QUICK)),@echo "quick mode: not recorded",$(RECORD) bench --command '$(call made_by,bench)' --since $(BENCH_DIR)/start.json --markdown $(BENCH_DIR)/bench.md)
	$(if $(filter 1,$(BENCH_QUICK)),@cat $(BENCH_DIR)/bench.md,$(RESULTS_DOC))

.PHONY: bench fairseq-env
