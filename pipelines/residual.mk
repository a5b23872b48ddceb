# Residual energy-based model (Deng, Bakhtin, Ott, Szlam & Ranzato, ICLR 2020).
#   make residual-demo        CPU, ~30 min: small base LM -> BiT energy by NCE -> joint perplexity bracket (n-curve),
#                             Algorithm 1 samples, and the Algorithm 1 vs LM sampling cost
#   make residual-negatives   negatives written ahead of time (then train with --set negatives.file=...)
#   make residual-paper HW=gpu RESIDUAL_DATA=data/cc-news RESIDUAL_BASE_LM=runs/lm/checkpoints/best.pt
#                             the paper's BiT-Large energy on your own base LM and data (GPU, days)
HW ?= cpu
LMLAB ?= lmlab
PYTHON ?= python
RESIDUAL_LM_STEPS ?= 200
RESIDUAL_LM ?= runs/residual-demo-lm
RESIDUAL_RUN ?= runs/residual-demo
RESIDUAL_IS ?= 1,2,4,8,16,32
RESIDUAL_EVAL_EXAMPLES ?= 32
RESIDUAL_DATA ?= data/cc-news
RESIDUAL_BASE_LM ?= runs/lm/checkpoints/best.pt

.PHONY: residual-demo residual-negatives residual-paper

# Training steps are stamps (train_done, in the Makefile): a stopped run is resumed by the next make, never evaluated.
$(RESIDUAL_LM).train.json: data/demo/meta.json
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-lm --preset demo,$(HW) --run-dir $(RESIDUAL_LM) --steps $(RESIDUAL_LM_STEPS) --set run.eval_interval=100 $(TRAIN_ARGS) > $@.tmp
	$(train_done)

$(RESIDUAL_RUN).train.json: $(RESIDUAL_LM).train.json
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-ebm --kind residual --preset residual-demo,$(HW) --base-lm $(RESIDUAL_LM)/checkpoints/best.pt --run-dir $(RESIDUAL_RUN) $(TRAIN_ARGS) > $@.tmp
	$(train_done)

$(RESIDUAL_RUN)/eval-test.json: $(RESIDUAL_RUN).train.json
	@mkdir -p $(@D)
	$(LMLAB) eval-ppl --checkpoint $(RESIDUAL_RUN)/checkpoints/best.pt --split test --is-samples $(RESIDUAL_IS) --max-examples $(RESIDUAL_EVAL_EXAMPLES) > $@.tmp && mv $@.tmp $@

$(RESIDUAL_LM)/eval-valid.json: $(RESIDUAL_LM).train.json
	@mkdir -p $(@D)
	$(LMLAB) eval-ppl -c $(RESIDUAL_LM)/checkpoints/best.pt --split valid -q > $@

$(RESIDUAL_RUN)/samples.jsonl: $(RESIDUAL_RUN).train.json
	@mkdir -p $(@D)
	printf 'she said that\nit was a truth universally\n' | $(LMLAB) sample --checkpoint $(RESIDUAL_RUN)/checkpoints/best.pt --candidates 32 --top-k 10 --max-new-tokens 16 --json > $@.tmp && mv $@.tmp $@

$(RESIDUAL_RUN)/bench.json: $(RESIDUAL_RUN).train.json
	@mkdir -p $(@D)
	$(PYTHON) bench/residual_generation.py $(RESIDUAL_RUN)/checkpoints/best.pt --data data/demo --prefixes 2 --candidates 32 --top-k 10 > $@.tmp && mv $@.tmp $@

results/residual-demo.json: $(RESIDUAL_RUN)/eval-test.json $(RESIDUAL_LM)/eval-valid.json $(RESIDUAL_RUN)/bench.json
	@mkdir -p $(@D)
	$(RECORD) residual-demo --command '$(call made_by,residual-demo)' --train lm=$(RESIDUAL_LM).train.json \
	  --train energy=$(RESIDUAL_RUN).train.json --json base-lm-valid=$(RESIDUAL_LM)/eval-valid.json \
	  --json test=$(RESIDUAL_RUN)/eval-test.json --json generation=$(RESIDUAL_RUN)/bench.json
	$(RESULTS_DOC)

residual-demo: results/residual-demo.json $(RESIDUAL_RUN)/samples.jsonl  ## residual EBM on the demo LM: joint-perplexity bracket, Algorithm 1 samples and cost (CPU) [HW=cpu]
	@$(RESULTS_DOC) --print residual-demo

residual-negatives: $(RESIDUAL_LM).train.json  ## LM negatives written ahead of time (then train with --set negatives.file=...)
	$(PYTHON) -m lmlab.core.residual.negatives --base-lm $(RESIDUAL_LM)/checkpoints/best.pt --data data/demo --split train \
		--out $(RESIDUAL_RUN)-negatives/train.npz --prefix-len 24 --continuation-len 16 --per-prefix 4

RESIDUAL_PAPER_RUN ?= runs/residual-bit-large
$(RESIDUAL_PAPER_RUN).train.json:
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-ebm --kind residual --preset residual-bit-large,$(HW) --base-lm $(RESIDUAL_BASE_LM) --set data.dir=$(RESIDUAL_DATA) --run-dir $(RESIDUAL_PAPER_RUN) $(TRAIN_ARGS) > $@.tmp
	$(train_done)

$(RESIDUAL_PAPER_RUN)/eval-test.json: $(RESIDUAL_PAPER_RUN).train.json
	@mkdir -p $(@D)
	$(LMLAB) eval-ppl --checkpoint $(RESIDUAL_PAPER_RUN)/checkpoints/best.pt --split test --is-samples $(RESIDUAL_IS) > $@.tmp && mv $@.tmp $@

results/residual-paper.json: $(RESIDUAL_PAPER_RUN)/eval-test.json
	@mkdir -p $(@D)
	$(RECORD) residual-paper --command '$(call made_by,residual-paper)' --train energy=$(RESIDUAL_PAPER_RUN).train.json --json test=$<
	$(RESULTS_DOC)

residual-paper: results/residual-paper.json  ## the paper's BiT-Large energy on your base LM and data (GPU, days) [HW=gpu RESIDUAL_DATA=dir RESIDUAL_BASE_LM=ckpt]
	@$(RESULTS_DOC) --print residual-paper

# ---- CPU tier (issue #18): UniT and BiT energies on the converged Zaremba-small PTB LSTM, BALM of base + UniT's size, RALM,
# every window of the test split: the bracket per n with each n's paired per-window gain, the gain by position (the
# paper's Figure 3, RESIDUAL_CPU_POSITIONS LM futures per position) and generation quality (core/textquality.py).
RESIDUAL_CPU_RUNS ?= runs/residual-ptb-cpu
RESIDUAL_CPU_IS ?= 1,2,4,8,16,32,64
RESIDUAL_CPU_POSITIONS ?= 8
RESIDUAL_CPU_WINDOWS ?= 40,20
RESIDUAL_CPU_ENERGIES = unit bit

$(RESIDUAL_CPU_ENERGIES:%=$(RESIDUAL_CPU_RUNS)/%.train.json): $(RESIDUAL_CPU_RUNS)/%.train.json: runs/ptb-zaremba-small.train.json
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-ebm --kind residual --preset residual-ptb-$*-cpu,$(HW) --run-dir $(RESIDUAL_CPU_RUNS)/$* $(TRAIN_ARGS) > $@.tmp
	$(train_done)

$(RESIDUAL_CPU_ENERGIES:%=$(RESIDUAL_CPU_RUNS)/%/eval-test.json): $(RESIDUAL_CPU_RUNS)/%/eval-test.json: $(RESIDUAL_CPU_RUNS)/%.train.json
	$(LMLAB) eval-ppl -c $(RESIDUAL_CPU_RUNS)/$*/checkpoints/best.pt --split test --is-samples $(RESIDUAL_CPU_IS) \
	  --per-position $(RESIDUAL_CPU_POSITIONS) -q > $@.tmp && mv $@.tmp $@

$(RESIDUAL_CPU_ENERGIES:%=$(RESIDUAL_CPU_RUNS)/%/quality.json): $(RESIDUAL_CPU_RUNS)/%/quality.json: $(RESIDUAL_CPU_RUNS)/%.train.json
	$(PYTHON) -m lmlab.core.residual.quality --checkpoint $(RESIDUAL_CPU_RUNS)/$*/checkpoints/best.pt --split test > $@.tmp && mv $@.tmp $@

# Algorithm 1's cost at n = 32 against one batched base-LM sampling pass, and peak memory of `lmlab sample` on more prompts
RESIDUAL_CPU_MEMORY_PROMPTS ?= 16,64,256
$(RESIDUAL_CPU_ENERGIES:%=$(RESIDUAL_CPU_RUNS)/%/generation.json): $(RESIDUAL_CPU_RUNS)/%/generation.json: $(RESIDUAL_CPU_RUNS)/%.train.json
	$(PYTHON) bench/residual_generation.py $(RESIDUAL_CPU_RUNS)/$*/checkpoints/best.pt --data data/ptb --prefixes 16 \
	  --candidates 32 --top-k 10 --memory-prompts $(RESIDUAL_CPU_MEMORY_PROMPTS) --batch-size 16 > $@.tmp && mv $@.tmp $@

# the base LM on training windows: how closely it fits the text the energies are trained on (beside its test windows)
$(RESIDUAL_CPU_RUNS)/base-train-windows.json: runs/ptb-zaremba-small.train.json
	@mkdir -p $(@D)
	$(LMLAB) eval-ppl -c runs/ptb-zaremba-small/checkpoints/best.pt --split train --windows $(RESIDUAL_CPU_WINDOWS) --max-examples 4000 -q > $@.tmp && mv $@.tmp $@

# the baseline LMs: BALM (ptb-balm-cpu, a wider LSTM) and RALM (ptb-ralm-cpu, on the frozen base), scored on the windows
RESIDUAL_CPU_LMS = balm ralm
$(RESIDUAL_CPU_LMS:%=$(RESIDUAL_CPU_RUNS)/%.train.json): $(RESIDUAL_CPU_RUNS)/%.train.json: data/ptb/meta.json runs/ptb-zaremba-small.train.json
	$(call train_lm,ptb zaremba-small ptb-$*-cpu,$(RESIDUAL_CPU_RUNS)/$*)

$(RESIDUAL_CPU_LMS:%=$(RESIDUAL_CPU_RUNS)/%/eval-windows.json): $(RESIDUAL_CPU_RUNS)/%/eval-windows.json: $(RESIDUAL_CPU_RUNS)/%.train.json
	$(LMLAB) eval-ppl -c $(RESIDUAL_CPU_RUNS)/$*/checkpoints/best.pt --split test --windows $(RESIDUAL_CPU_WINDOWS) -q > $@.tmp && mv $@.tmp $@

results/residual-ptb-cpu.json: $(foreach e,$(RESIDUAL_CPU_ENERGIES),$(foreach f,eval-test quality generation,$(RESIDUAL_CPU_RUNS)/$(e)/$(f).json)) \
  $(RESIDUAL_CPU_LMS:%=$(RESIDUAL_CPU_RUNS)/%/eval-windows.json) $(RESIDUAL_CPU_RUNS)/base-train-windows.json
	@mkdir -p $(@D) docs/figures
	$(PYTHON) bench/residual_tier.py $(foreach e,$(RESIDUAL_CPU_ENERGIES),--joint $(e)=$(RESIDUAL_CPU_RUNS)/$(e)/eval-test.json \
	  --quality $(e)=$(RESIDUAL_CPU_RUNS)/$(e)/quality.json --generation $(e)=$(RESIDUAL_CPU_RUNS)/$(e)/generation.json \
	  --run $(e)=$(RESIDUAL_CPU_RUNS)/$(e)) --base-train $(RESIDUAL_CPU_RUNS)/base-train-windows.json \
	  $(foreach m,$(RESIDUAL_CPU_LMS),--lm $(m)=$(RESIDUAL_CPU_RUNS)/$(m)/eval-windows.json) --figure docs/figures/residual-ptb-cpu.png \
	  --json $(RESIDUAL_CPU_RUNS)/summary.json > $(RESIDUAL_CPU_RUNS)/summary.md
	$(RECORD) residual-ptb-cpu --command '$(call made_by,residual-ptb-cpu)' $(foreach e,$(RESIDUAL_CPU_ENERGIES) $(RESIDUAL_CPU_LMS),--train $(e)=$(RESIDUAL_CPU_RUNS)/$(e).train.json) \
	  --json summary=$(RESIDUAL_CPU_RUNS)/summary.json --markdown $(RESIDUAL_CPU_RUNS)/summary.md
	$(RESULTS_DOC)

.PHONY: residual-ptb-cpu
residual-ptb-cpu: results/residual-ptb-cpu.json  ## residual EBM CPU tier: UniT and BiT energies on the Zaremba-small PTB LSTM, BALM, RALM, every test window, per-position gain, generation quality (CPU, hours) [LMLAB_PTB=dir]
	@$(RESULTS_DOC) --print residual-ptb-cpu
