# Induced Model Matching (Muneeb & Ohannessian, NeurIPS 2024) and the KN-noising baseline.
#   make imm-demo        CPU, minutes: plain CE vs IMM on the demo corpus, same seed and updates
#   make imm-bench       IMM step cost as a ratio to a plain step (k = 10)
#   make kn-bigram-ptb   KN bigram file + its valid/test perplexity on PTB (checked against a slow reference)
#   make imm-ptb HW=gpu  the paper's PTB pair: 2x1500 LSTM dropout-only vs + IMM (GPU, days)
# Included by the top-level Makefile (HW, LMLAB, LMLAB_TRAIN, PYTHON and the data/*/meta.json rules).
IMM_DEMO_STEPS ?= 200
IMM_DEMO_RUNS ?= runs/imm-demo
PTB_DATA := data/ptb

IMM_WORK ?= runs/imm-work

.PHONY: imm-demo imm-bench kn-bigram-demo kn-bigram-ptb imm-ptb kn-noising-ptb

# the KN bigram file IMM trains against (python -m lmlab.core.imm.kn_bigram builds it and prints its perplexity)
%/kn_bigram.safetensors: %/meta.json
	$(PYTHON) -m lmlab.core.imm.kn_bigram $* --force

kn-bigram-demo: data/demo/kn_bigram.safetensors  ## the KN bigram file of data/demo (IMM's restricted model)

# Training steps are stamps (train_done, in the Makefile): a stopped run is resumed by the next make.
$(IMM_DEMO_RUNS)/ce.train.json: data/demo/meta.json
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-lm --preset demo,$(HW) --steps $(IMM_DEMO_STEPS) --set run.eval_interval=100 --run-dir $(IMM_DEMO_RUNS)/ce > $@.tmp
	$(train_done)

$(IMM_DEMO_RUNS)/imm.train.json: data/demo/kn_bigram.safetensors
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-lm --preset demo,$(HW),demo-imm --steps $(IMM_DEMO_STEPS) --set run.eval_interval=100 --run-dir $(IMM_DEMO_RUNS)/imm > $@.tmp
	$(train_done)

results/imm-demo.json: $(IMM_DEMO_RUNS)/ce.train.json $(IMM_DEMO_RUNS)/imm.train.json
	@mkdir -p $(@D) $(IMM_DEMO_RUNS)
	$(PYTHON) bench/imm_compare.py $(IMM_DEMO_RUNS)/ce $(IMM_DEMO_RUNS)/imm > $(IMM_DEMO_RUNS)/compare.md
	$(RECORD) imm-demo --command '$(call made_by,imm-demo)' --train ce=$(IMM_DEMO_RUNS)/ce.train.json \
	  --train imm=$(IMM_DEMO_RUNS)/imm.train.json --markdown $(IMM_DEMO_RUNS)/compare.md
	$(RESULTS_DOC)

imm-demo: results/imm-demo.json  ## plain CE vs IMM on the demo corpus, same seed and updates (CPU, minutes) [HW=cpu]
	@$(RESULTS_DOC) --print imm-demo

results/imm-bench.json: data/demo/kn_bigram.safetensors
	@mkdir -p $(@D) $(IMM_WORK)
	$(PYTHON) -m lmlab.core.machine > $(IMM_WORK)/bench-start.json
	$(PYTHON) bench/imm_overhead.py --preset demo,$(HW),demo-imm --set imm.j=1 > $(IMM_WORK)/bench.jsonl
	$(PYTHON) bench/imm_overhead.py --preset demo,$(HW),demo-imm --set imm.j=5 >> $(IMM_WORK)/bench.jsonl
	$(RECORD) imm-bench --command '$(call made_by,imm-bench)' --since $(IMM_WORK)/bench-start.json --jsonl steps=$(IMM_WORK)/bench.jsonl
	$(RESULTS_DOC)

imm-bench: results/imm-bench.json  ## IMM step cost as a ratio to a plain step (k = 10, j = 1 and 5) [HW=cpu|gpu]
	@$(RESULTS_DOC) --print imm-bench

results/kn-bigram-ptb.json: $(PTB_DATA)/meta.json
	@mkdir -p $(@D) $(IMM_WORK)
	$(PYTHON) -m lmlab.core.machine > $(IMM_WORK)/kn-start.json
	$(PYTHON) -m lmlab.core.imm.kn_bigram $(PTB_DATA) > $(IMM_WORK)/kn-bigram-ptb.json
	$(PYTHON) bench/imm_kn_ptb.py $(PTB_DATA) > $(IMM_WORK)/kn-bigram-ptb-reference.json
	$(RECORD) kn-bigram-ptb --command '$(call made_by,kn-bigram-ptb)' --since $(IMM_WORK)/kn-start.json \
	  --json kn_bigram=$(IMM_WORK)/kn-bigram-ptb.json --json reference=$(IMM_WORK)/kn-bigram-ptb-reference.json
	$(RESULTS_DOC)

kn-bigram-ptb: results/kn-bigram-ptb.json  ## KN bigram file + valid/test perplexity on PTB, checked against a slow reference [LMLAB_PTB=dir]
	@$(RESULTS_DOC) --print kn-bigram-ptb

runs/ptb-lstm-large.train.json: $(PTB_DATA)/meta.json
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-lm --preset ptb,ptb-lstm-large,$(HW) --data $(PTB_DATA) --run-dir runs/ptb-lstm-large > $@.tmp
	$(train_done)

runs/ptb-lstm-imm.train.json: $(PTB_DATA)/kn_bigram.safetensors
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-lm --preset ptb,ptb-lstm-large,ptb-lstm-imm,$(HW) --data $(PTB_DATA) --run-dir runs/ptb-lstm-imm > $@.tmp
	$(train_done)

runs/ptb-lstm-kn-noising.train.json: $(PTB_DATA)/kn_bigram.safetensors
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-lm --preset ptb,ptb-lstm-large,$(HW) --data $(PTB_DATA) --set objective=kn-noising --run-dir runs/ptb-lstm-kn-noising > $@.tmp
	$(train_done)

runs/ptb-lstm-%/eval-test.json: runs/ptb-lstm-%.train.json
	@mkdir -p $(@D)
	$(LMLAB) eval-ppl -c runs/ptb-lstm-$*/checkpoints/best.pt --split test -q > $@

results/imm-ptb.json: runs/ptb-lstm-large/eval-test.json runs/ptb-lstm-imm/eval-test.json
	@mkdir -p $(@D)
	$(PYTHON) bench/imm_compare.py runs/ptb-lstm-large runs/ptb-lstm-imm > runs/ptb-lstm-imm/compare.md
	$(RECORD) imm-ptb --command '$(call made_by,imm-ptb)' --train dropout-only=runs/ptb-lstm-large.train.json \
	  --train imm=runs/ptb-lstm-imm.train.json --json test-dropout-only=runs/ptb-lstm-large/eval-test.json \
	  --json test-imm=runs/ptb-lstm-imm/eval-test.json --markdown runs/ptb-lstm-imm/compare.md
	$(RESULTS_DOC)

imm-ptb: results/imm-ptb.json  ## the paper's PTB pair: 2x1500 LSTM dropout-only vs + IMM (GPU, days) [HW=gpu LMLAB_PTB=dir]
	@$(RESULTS_DOC) --print imm-ptb

results/kn-noising-ptb.json: runs/ptb-lstm-kn-noising/eval-test.json
	@mkdir -p $(@D)
	$(RECORD) kn-noising-ptb --command '$(call made_by,kn-noising-ptb)' --train runs/ptb-lstm-kn-noising.train.json --json test=$<
	$(RESULTS_DOC)

kn-noising-ptb: results/kn-noising-ptb.json  ## the KN-noising baseline (Xie et al. 2017) on the same LSTM (GPU) [HW=gpu LMLAB_PTB=dir]
	@$(RESULTS_DOC) --print kn-noising-ptb
