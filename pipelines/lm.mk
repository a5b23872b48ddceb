# Language-model pipelines: prep -> train-lm -> eval-ppl -> a record in results/, one target per result in docs/results.md.
# A train step writes its summary JSON only when training finished (not when stopped by a signal), so
# rerunning `make` after a kill or a SLURM requeue resumes the run instead of skipping it.

comma := ,
empty :=
space := $(empty) $(empty)

# $(call train_lm,PRESET PRESET...,RUN_DIR): the recipe of RUN_DIR.train.json: train with the presets
# (space-separated) + $(HW), then require a completed run (train_done, in the Makefile). TRAIN_ARGS adds flags, e.g. TRAIN_ARGS='--set schedule.epochs=1'.
define train_lm
	@mkdir -p $(dir $(2))
	$(LMLAB_TRAIN) train-lm --preset $(subst $(space),$(comma),$(strip $(1))),$(HW) --run-dir $(2) $(TRAIN_ARGS) > $(2).train.json.tmp
	$(train_done)
endef

# ---- the demo (README command #1) ---------------------------------------------------------------
DEMO_RUN := runs/demo

data/demo/meta.json: presets/demo.toml corpora/austen/train.txt corpora/austen/valid.txt corpora/austen/test.txt | .installed
	$(LMLAB) prep --preset demo --force

$(DEMO_RUN).train.json: data/demo/meta.json
	$(call train_lm,demo,$(DEMO_RUN))

$(DEMO_RUN)/eval-%.json: $(DEMO_RUN).train.json
	@mkdir -p $(@D)
	$(LMLAB) eval-ppl -c $(DEMO_RUN)/checkpoints/best.pt --split $* -q > $@

$(DEMO_RUN)/unigram-%.json: data/demo/meta.json
	@mkdir -p $(@D)
	$(LMLAB) eval-ppl --ngram unigram --data data/demo --split $* > $@

$(DEMO_RUN)/samples.txt: $(DEMO_RUN).train.json
	@mkdir -p $(@D)
	printf 'it was a truth\nmr. knightley\n\n' | $(LMLAB) sample -c $(DEMO_RUN)/checkpoints/best.pt -n 2 --top-p 0.9 --max-new-tokens 25 --seed 1 > $@

results/demo.json: $(DEMO_RUN).train.json $(DEMO_RUN)/eval-valid.json $(DEMO_RUN)/eval-test.json $(DEMO_RUN)/unigram-valid.json $(DEMO_RUN)/unigram-test.json
	@mkdir -p $(@D)
	$(RECORD) demo --kind lm --command '$(call made_by,demo)' --train $(DEMO_RUN).train.json \
	  $(foreach s,valid test,--json $(s)=$(DEMO_RUN)/eval-$(s).json --json unigram-$(s)=$(DEMO_RUN)/unigram-$(s).json)
	$(RESULTS_DOC)

demo: results/demo.json $(DEMO_RUN)/samples.txt  ## README command #1: Austen corpus, 1x200 LSTM vs the unigram baseline, + samples (~5½ min on 2 cores) [HW=cpu|gpu]
	@echo; $(RESULTS_DOC) --print demo
	@echo; echo "samples (prompt -> 2 continuations each):"; cat $(DEMO_RUN)/samples.txt

clean-demo:  ## delete data/demo and runs/demo (results/demo.json is kept)
	rm -rf data/demo $(DEMO_RUN) $(DEMO_RUN).train.json

# ---- Zaremba et al. 2014 on PTB (paper valid/test ppl: small 120.7/114.5, medium 86.2/82.7, large 82.2/78.4) --------
data/ptb/meta.json: | .installed
	$(LMLAB) prep --preset ptb --force

# Static pattern rules (explicit targets): make never treats a stamp or an eval file as an intermediate to delete
# or skip. (This rule's command line is what runs/ptb-zaremba-small.train.json was made with: keep it.)
ZAREMBA := small medium large
$(ZAREMBA:%=runs/ptb-zaremba-%.train.json): runs/ptb-zaremba-%.train.json: data/ptb/meta.json
	$(call train_lm,ptb zaremba-$*,runs/ptb-zaremba-$*)

# PTB scored in full, one stream (--batch-size 1): every token but the first
$(ZAREMBA:%=runs/ptb-zaremba-%/eval-valid.json): runs/ptb-zaremba-%/eval-valid.json: runs/ptb-zaremba-%.train.json
	@mkdir -p $(@D)
	$(LMLAB) eval-ppl -c runs/ptb-zaremba-$*/checkpoints/best.pt --split valid --batch-size 1 -q > $@

$(ZAREMBA:%=runs/ptb-zaremba-%/eval-test.json): runs/ptb-zaremba-%/eval-test.json: runs/ptb-zaremba-%.train.json
	@mkdir -p $(@D)
	$(LMLAB) eval-ppl -c runs/ptb-zaremba-$*/checkpoints/best.pt --split test --batch-size 1 -q > $@

ZAREMBA_PAPER_small = --paper valid_ppl=120.7 --paper test_ppl=114.5 --paper-source 'Zaremba et al. 2014, Table 1, non-regularized LSTM (2x200)'
ZAREMBA_PAPER_medium = --paper valid_ppl=86.2 --paper test_ppl=82.7 --paper-source 'Zaremba et al. 2014, Table 1, medium regularized LSTM (2x650)'
ZAREMBA_PAPER_large = --paper valid_ppl=82.2 --paper test_ppl=78.4 --paper-source 'Zaremba et al. 2014, Table 1, large regularized LSTM (2x1500)'

$(ZAREMBA:%=results/ptb-zaremba-%.json): results/ptb-zaremba-%.json: runs/ptb-zaremba-%.train.json runs/ptb-zaremba-%/eval-valid.json runs/ptb-zaremba-%/eval-test.json
	@mkdir -p $(@D)
	$(RECORD) ptb-zaremba-$* --kind lm --command '$(call made_by,ptb-zaremba-$*)' --train runs/ptb-zaremba-$*.train.json \
	  --json valid=runs/ptb-zaremba-$*/eval-valid.json --json test=runs/ptb-zaremba-$*/eval-test.json $(ZAREMBA_PAPER_$*)
	$(RESULTS_DOC)

ptb-zaremba-small: results/ptb-zaremba-small.json  ## Zaremba et al. 2014 small LSTM on PTB (CPU, ~1 h on 2 cores) [HW=cpu|gpu LMLAB_PTB=dir]
	@$(RESULTS_DOC) --print $@
ptb-zaremba-medium: results/ptb-zaremba-medium.json  ## Zaremba medium, dropout 0.5 (GPU) [HW=gpu LMLAB_PTB=dir]
	@$(RESULTS_DOC) --print $@
ptb-zaremba-large: results/ptb-zaremba-large.json  ## Zaremba large, dropout 0.65 (GPU) [HW=gpu LMLAB_PTB=dir]
	@$(RESULTS_DOC) --print $@
.PHONY: demo ptb-zaremba-small ptb-zaremba-medium ptb-zaremba-large

# ---- a small Transformer LM on WikiText-2 --------------------------------------------------------
data/wikitext-2/meta.json: | .installed
	$(LMLAB) prep --preset wikitext-2 --force

runs/wt2-transformer-small.train.json: data/wikitext-2/meta.json
	$(call train_lm,wikitext-2 transformer-small,runs/wt2-transformer-small)

runs/wt2-transformer-small/eval-%.json: runs/wt2-transformer-small.train.json
	@mkdir -p $(@D)
	$(LMLAB) eval-ppl -c runs/wt2-transformer-small/checkpoints/best.pt --split $* -q > $@

results/wt2-transformer-small.json: runs/wt2-transformer-small.train.json runs/wt2-transformer-small/eval-valid.json runs/wt2-transformer-small/eval-test.json
	@mkdir -p $(@D)
	$(RECORD) wt2-transformer-small --kind lm --command '$(call made_by,wt2-transformer-small)' --train runs/wt2-transformer-small.train.json \
	  --json valid=runs/wt2-transformer-small/eval-valid.json --json test=runs/wt2-transformer-small/eval-test.json
	$(RESULTS_DOC)

wt2-transformer-small: results/wt2-transformer-small.json  ## a small Transformer LM on WikiText-2 [HW=cpu|gpu LMLAB_WIKITEXT2=dir]
	@$(RESULTS_DOC) --print $@
.PHONY: wt2-transformer-small
