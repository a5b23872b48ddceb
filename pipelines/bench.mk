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

# The fused chunked output layer + loss (model.output.loss_chunk) against plain logits + cross-entropy, forward and
# backward, at two shapes: one PTB 2x650 update (700 x 650 x 10k) and the bench's WikiText-2 Transformer batch
# (32 x 256 tokens, d 256, V 33,280: 1.1 GB of fp32 logits). Needs quiet cores (~5 min).
FUSED_CE_WORK ?= $(BENCH_DIR)/fused-ce
results/bench-fused-ce.json: bench/fused_ce.py core/models/fused_ce.py | .installed
	@mkdir -p $(@D) $(FUSED_CE_WORK)
	$(PYTHON) -m lmlab.core.machine > $(FUSED_CE_WORK)/start.json
	$(PYTHON) bench/fused_ce.py --tokens 700 --dim 650 --vocab 10000 --chunk 1024 --steps 10 --rounds 5 > $(FUSED_CE_WORK)/ptb.json
	$(PYTHON) bench/fused_ce.py --tokens 8192 --dim 256 --vocab 33280 --chunk 1024 --steps 2 --rounds 3 > $(FUSED_CE_WORK)/wt2.json
	$(RECORD) bench-fused-ce --command '$(call made_by,bench-fused-ce)' --since $(FUSED_CE_WORK)/start.json \
	  --json ptb-2x650=$(FUSED_CE_WORK)/ptb.json --json wt2-transformer=$(FUSED_CE_WORK)/wt2.json
	$(RESULTS_DOC)

bench-fused-ce: results/bench-fused-ce.json  ## fused chunked output layer + loss vs plain logits + CE: speed ratio and peak RSS at two shapes (quiet cores, ~5 min)
	@$(RESULTS_DOC) --print bench-fused-ce

# Beam decoding against fairseq-generate: the Multi30k de-en standard system's last-5 average converted to a fairseq
# transformer that computes the same function (bench/fairseq_convert_mt.py), the 1,000 test_2016_flickr sentences,
# beam 5, batches of 64, arms alternated (bench/beam_vs_fairseq.py). Needs the fairseq env and quiet cores (~10 min).
# BEAM_RUN names another de-en system of the same preset, e.g. one of mt-multi30k-de-en-seeds' standard runs.
BEAM_WORK ?= $(BENCH_DIR)/beam
BEAM_RUN ?= runs/multi30k-de-en
results/bench-beam.json: $(BEAM_RUN)/checkpoints/average.json | .installed
	@mkdir -p $(@D) $(BEAM_WORK)
	$(PYTHON) -m lmlab.core.machine > $(BEAM_WORK)/start.json
	$(PYTHON) bench/beam_vs_fairseq.py $(<D)/average.pt $(LMLAB_MULTI30K)/test_2016_flickr.de $(LMLAB_MULTI30K)/test_2016_flickr.en \
	  --work $(BEAM_WORK) > $(BEAM_WORK)/beam.json
	$(RECORD) bench-beam --command '$(call made_by,bench-beam)' --since $(BEAM_WORK)/start.json --json beam-5=$(BEAM_WORK)/beam.json
	$(RESULTS_DOC)

bench-beam: results/bench-beam.json  ## beam-5 decoding vs fairseq-generate on the same converted weights (needs make fairseq-env and the Multi30k de-en run; quiet cores, ~10 min) [BEAM_RUN=runs/multi30k-de-en]
	@$(RESULTS_DOC) --print bench-beam

.PHONY: bench fairseq-env bench-fused-ce bench-beam

# ---- the GPU tier's check: every paper-size target started unedited (HW=gpu) for GPU_CHECK_SECONDS each ---------
# A lease of minutes cannot finish a paper run; this shows each target preparing its data and training on the GPU
# with the paper's preset, the update rate there and the hours its whole budget would take (bench/gpu_check.py).
# gebm-cifar10 needs INCEPTION=weights (never downloaded; without it the check reports the preset's error line).
# residual-paper runs on PTB with the dropout-only IMM LSTM's checkpoint as its base LM (the paper's data is not here).
# imm-ptb-imm's limit includes building the KN bigram. bench runs in quick mode (no record; the fairseq column is skipped where no fairseq environment is).
# Raw data comes from LMLAB_DATA (../shared/data here). A device that gets only the repository needs the raw sets
# copied in and named, e.g. cp -r ../shared/data/{ptb,wikitext-2} data/raw/, carried, and make gpu-check
# LMLAB_DATA=data/raw: bench-quick failed in 11 s on the first device run for want of WikiText-2.
GPU_CHECK_SECONDS ?= 50
GPU_CHECK_DIR ?= /tmp/lmlab-gpu-check
GPU_CHECK_GOALS ?= imm-ptb-dropout=runs/ptb-lstm-large.train.json imm-ptb-imm@90=runs/ptb-lstm-imm.train.json \
  gebm-cifar10=$(RUNS)/gebm-cifar10.train.json$(if $(INCEPTION),$(comma)INCEPTION=$(INCEPTION)) \
  residual-paper=runs/residual-bit-large.train.json,RESIDUAL_DATA=data/ptb,RESIDUAL_BASE_LM=runs/ptb-lstm-large/checkpoints/last.pt \
  define-ptb@40=runs/awd-lstm-define-ptb.train.json \
  'bench-quick@150=bench,BENCH_QUICK=1,BENCH_ARGS=--device cuda --precision bf16'
.PHONY: gpu-check
gpu-check: .installed  ## the GPU tier: each paper-size target started unedited for GPU_CHECK_SECONDS, its rate and hours (GPU, ~8 min) [HW=gpu INCEPTION=weights]
	@mkdir -p results $(GPU_CHECK_DIR)
	$(PYTHON) -m lmlab.core.machine > $(GPU_CHECK_DIR)/start.json
	$(PYTHON) bench/gpu_check.py --seconds $(GPU_CHECK_SECONDS) --hw $(HW) --logs $(GPU_CHECK_DIR) --json $(GPU_CHECK_DIR)/check.json \
	  $(GPU_CHECK_GOALS) > $(GPU_CHECK_DIR)/check.md
	$(RECORD) gpu-check --command '$(call made_by,gpu-check)' --since $(GPU_CHECK_DIR)/start.json \
	  --json check=$(GPU_CHECK_DIR)/check.json --markdown $(GPU_CHECK_DIR)/check.md
	$(RESULTS_DOC)
	@$(RESULTS_DOC) --print gpu-check
