# Speed benchmarks: lmlab vs fairseq (prep, train-lm, eval-ppl) and vs pytorch/examples' word LM design,
# on the same data and model sizes, arms alternated, median ratios -> results/bench.json -> docs/results.md.
#   make bench                      full run (< 20 min on 2 quiet CPU cores)
#   make bench BENCH_QUICK=1        ~3 min smoke version
#   make bench BENCH_BIG=1          also lmlab prep on a WikiText-103-sized (~540 MB) stream: bounded memory
#   make bench BENCH_ARGS='--device cuda --precision bf16'   GPU mode (MFU against the GPU's bf16 peak)
# fairseq runs from its own interpreter: FAIRSEQ_PYTHON (default /work/venv-fairseq/bin/python if present);
# without it the fairseq column is reported as skipped. Method and where the time goes: docs/bench.md.

BENCH_QUICK ?= 0
BENCH_BIG ?= 0
BENCH_DIR ?= /tmp/lmlab-bench
BENCH_ARGS ?=

# The full run is a result (results/bench.json -> the bench region of docs/results.md); the quick one only prints.
bench: .installed  ## lmlab vs fairseq speed benchmarks (< 20 min on 2 quiet cores) [BENCH_QUICK=1 BENCH_BIG=1 BENCH_ARGS='--device cuda --precision bf16' FAIRSEQ_PYTHON=python]
	@mkdir -p $(BENCH_DIR)
	$(PYTHON) -m lmlab.core.machine > $(BENCH_DIR)/start.json
	BENCH_QUICK=$(BENCH_QUICK) BENCH_BIG=$(BENCH_BIG) BENCH_DIR=$(BENCH_DIR) $(PYTHON) bench/vs_fairseq.py $(BENCH_ARGS) > $(BENCH_DIR)/bench.md
	$(if $(filter 1,$(BENCH_QUICK)),@echo "quick mode: not recorded",$(RECORD) bench --command '$(call made_by,bench)' --since $(BENCH_DIR)/start.json --markdown $(BENCH_DIR)/bench.md)
	$(if $(filter 1,$(BENCH_QUICK)),@cat $(BENCH_DIR)/bench.md,$(RESULTS_DOC))

.PHONY: bench
