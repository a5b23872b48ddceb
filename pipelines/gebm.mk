# GEBM (Arbel, Zhou & Gretton, ICLR 2021): train -> sample -> evaluate through the CLI, figures in docs/gebm.md.
#   make gebm-wine HW=cpu         # red + white wine: GEBM vs the same RealNVP by MLE, test NLL
#   make gebm-cifar10-cpu HW=cpu  # CIFAR-10 subset: train, ULA/KLA grids, FID/KID
# HW names a hardware preset (cpu, gpu, dgx8, slurm) appended after the experiment preset. Runs go under
# $(RUNS)/gebm-*; rerunning a target resumes/reuses its run dir; nothing is ever deleted.
HW ?= cpu
RUNS ?= runs
LMLAB ?= lmlab
EVAL = $(PYTHON) -m lmlab.core.gebm.evaluate
# Inception-v3 FID weights (a pytorch-fid pt_inception-2015-12-05 file): INCEPTION=path or LMLAB_INCEPTION in the
# environment; gebm-cifar10's training needs them too (its learning-rate schedule tests Inception features)
INCEPTION ?= $(LMLAB_INCEPTION)
ifneq ($(INCEPTION),)
export LMLAB_INCEPTION = $(abspath $(INCEPTION))
endif
IS_SAMPLES ?= 50000
# Same budget of optimizer updates for the flow MLE baseline as the GEBM: the presets' 8 base updates
# + 2x100 + 6x50 energy updates = 508 (change both together; bench/gebm_uci.py computes it).
MLE_STEPS ?= 508
# Data: LMLAB_REDWINE, LMLAB_WHITEWINE (CSV files) and LMLAB_CIFAR10 (the Makefile defaults them under LMLAB_DATA;
# set in the environment, they are kept). The older names still work on the command line: WINE=dir sets both wine
# files, CIFAR10=path the image archive. (Not from the environment: WINE there is often the Windows emulator.)
ifneq ($(filter command line file override,$(origin WINE)),)
export LMLAB_REDWINE = $(WINE)/winequality-red.csv
export LMLAB_WHITEWINE = $(WINE)/winequality-white.csv
endif
ifneq ($(filter command line file override,$(origin CIFAR10)),)
export LMLAB_CIFAR10 = $(CIFAR10)
endif

# UCI sets run here (presets gebm-uci-NAME); rules below are static pattern rules over them, so no stamp or
# checkpoint is ever an intermediate file that make may delete or skip.
GEBM_UCI ?= redwine whitewine
GEBM_UCI_RUNS = $(GEBM_UCI:%=$(RUNS)/gebm-uci-%) $(GEBM_UCI:%=$(RUNS)/gebm-uci-%-mle)
GEBM_IMAGE_RUNS = $(RUNS)/gebm-cifar10-cpu $(RUNS)/gebm-cifar10
.PRECIOUS: $(foreach r,$(GEBM_UCI_RUNS) $(GEBM_IMAGE_RUNS),$(r)/checkpoints/best.pt $(r)/checkpoints/last.pt)
.PHONY: gebm-prep gebm-wine gebm-redwine gebm-whitewine gebm-cifar10-cpu gebm-cifar10 gebm-clean

gebm-prep:  ## check the UCI wine files exist (nothing to tokenise; the preprocessing runs inside train, seeded) [LMLAB_DATA=dir or WINE=dir]
	@test -f $(LMLAB_REDWINE) || { echo "missing $(LMLAB_REDWINE) (set LMLAB_REDWINE=file.csv, WINE=dir or LMLAB_DATA=dir)"; exit 2; }
	@test -f $(LMLAB_WHITEWINE) || { echo "missing $(LMLAB_WHITEWINE) (set LMLAB_WHITEWINE=file.csv, WINE=dir or LMLAB_DATA=dir)"; exit 2; }

# ---- density: GEBM and the same RealNVP by maximum likelihood with the same number of updates
gebm-wine: gebm-redwine gebm-whitewine  ## red + white wine: GEBM vs the same RealNVP by MLE, test NLL (CPU) [HW=cpu LMLAB_DATA=dir or WINE=dir IS_SAMPLES=50000]
gebm-redwine gebm-whitewine: gebm-%: results/gebm-%.json  ## one wine set: GEBM vs flow MLE, test NLL [HW=cpu LMLAB_REDWINE=csv LMLAB_WHITEWINE=csv]
	@$(RESULTS_DOC) --print $@

# Training steps are stamps (train_done, in the Makefile): a run stopped by a signal leaves none, so the next
# make resumes it instead of evaluating a partial best.pt.
$(GEBM_UCI:%=$(RUNS)/gebm-uci-%.train.json): $(RUNS)/gebm-uci-%.train.json: | gebm-prep
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-ebm --kind gebm --preset gebm-uci-$*,$(HW) --run-dir $(RUNS)/gebm-uci-$* $(TRAIN_ARGS) > $@.tmp
	$(train_done)
$(GEBM_UCI:%=$(RUNS)/gebm-uci-%-mle.train.json): $(RUNS)/gebm-uci-%-mle.train.json: | gebm-prep
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-ebm --kind gebm --preset gebm-uci-$*,$(HW) --run-dir $(RUNS)/gebm-uci-$*-mle \
	  --set optim.objective=mle --set schedule.max_steps=$(MLE_STEPS) --set run.eval_interval=$(MLE_STEPS) $(TRAIN_ARGS) > $@.tmp
	$(train_done)
$(GEBM_UCI:%=$(RUNS)/gebm-uci-%/test-nll.json): $(RUNS)/gebm-uci-%/test-nll.json: $(RUNS)/gebm-uci-%.train.json
	$(EVAL) $(RUNS)/gebm-uci-$*/checkpoints/best.pt --split test --is-samples $(IS_SAMPLES) --device cpu --out $@
$(GEBM_UCI:%=$(RUNS)/gebm-uci-%-mle/test-nll.json): $(RUNS)/gebm-uci-%-mle/test-nll.json: $(RUNS)/gebm-uci-%-mle.train.json
	$(EVAL) $(RUNS)/gebm-uci-$*-mle/checkpoints/best.pt --split test --device cpu --out $@
$(GEBM_UCI:%=results/gebm-%.json): results/gebm-%.json: $(RUNS)/gebm-uci-%/test-nll.json $(RUNS)/gebm-uci-%-mle/test-nll.json
	@mkdir -p $(@D)
	$(RECORD) gebm-$* --command '$(call made_by,gebm-$*)' --train gebm=$(RUNS)/gebm-uci-$*.train.json \
	  --train mle=$(RUNS)/gebm-uci-$*-mle.train.json --json test-gebm=$(RUNS)/gebm-uci-$*/test-nll.json \
	  --json test-mle=$(RUNS)/gebm-uci-$*-mle/test-nll.json
	$(RESULTS_DOC)

# ---- red wine at the official epoch budget (issue #19, 5): GEBM and the same RealNVP by MLE for 2,000 epochs each
# (2,000 epochs: 516 base steps = 25,950 energy updates of batch 100 over the 1,296 training rows of lmlab's split; the
# MLE arm makes as many data updates), every evaluation scoring valid and test (eval.test_each_eval), so both the
# validation-selected and the official min-over-test rules are reported, with the test NLL against epochs beside the
# authors' logged GEBM points quoted in issue #19 (their logs are not in the public repository). ~1 h on 1 thread.
WINE_OFFICIAL = $(RUNS)/gebm-uci-redwine-official
WINE_OFFICIAL_STEPS ?= 516
WINE_OFFICIAL_MLE_UPDATES ?= 25950
WINE_OFFICIAL_LOGGED ?= 40:13.67,80:13.38
$(WINE_OFFICIAL).train.json: | gebm-prep
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-ebm --kind gebm --preset gebm-uci-redwine,$(HW) --run-dir $(WINE_OFFICIAL) \
	  --set schedule.max_steps=$(WINE_OFFICIAL_STEPS) --set run.eval_interval=5 --set eval.test_each_eval=true $(TRAIN_ARGS) > $@.tmp
	$(train_done)
$(WINE_OFFICIAL)-mle.train.json: | gebm-prep
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-ebm --kind gebm --preset gebm-uci-redwine,$(HW) --run-dir $(WINE_OFFICIAL)-mle --set optim.objective=mle \
	  --set schedule.max_steps=$(WINE_OFFICIAL_MLE_UPDATES) --set run.eval_interval=250 --set eval.test_each_eval=true $(TRAIN_ARGS) > $@.tmp
	$(train_done)
$(WINE_OFFICIAL)/test-nll.json: $(WINE_OFFICIAL).train.json
	$(EVAL) $(WINE_OFFICIAL)/checkpoints/best.pt --split test --is-samples $(IS_SAMPLES) --device cpu --out $@
$(WINE_OFFICIAL)-mle/test-nll.json: $(WINE_OFFICIAL)-mle.train.json
	$(EVAL) $(WINE_OFFICIAL)-mle/checkpoints/best.pt --split test --device cpu --out $@
results/gebm-redwine-official.json: $(WINE_OFFICIAL)/test-nll.json $(WINE_OFFICIAL)-mle/test-nll.json
	@mkdir -p $(@D) docs/figures
	$(PYTHON) bench/gebm_wine_official.py --gebm $(WINE_OFFICIAL) --mle $(WINE_OFFICIAL)-mle --test-gebm $(WINE_OFFICIAL)/test-nll.json \
	  --test-mle $(WINE_OFFICIAL)-mle/test-nll.json --official $(WINE_OFFICIAL_LOGGED) --figure docs/figures/gebm-redwine-official.png \
	  --json $(WINE_OFFICIAL)/summary.json > $(WINE_OFFICIAL)/summary.md
	$(RECORD) gebm-redwine-official --command '$(call made_by,gebm-redwine-official)' --train gebm=$(WINE_OFFICIAL).train.json \
	  --train mle=$(WINE_OFFICIAL)-mle.train.json --json summary=$(WINE_OFFICIAL)/summary.json --markdown $(WINE_OFFICIAL)/summary.md
	$(RESULTS_DOC)
.PHONY: gebm-redwine-official
gebm-redwine-official: results/gebm-redwine-official.json  ## red wine at the official 2,000 epochs: GEBM vs flow MLE, both selection rules, curve vs epochs (CPU, ~1 h) [LMLAB_REDWINE=csv TRAIN_ARGS=...]
	@$(RESULTS_DOC) --print gebm-redwine-official

# ---- images: CPU subset (gebm-cifar10-cpu) and the paper-size run (gebm-cifar10, GPU)
# one sampler for grids and FID: the preset's [sample] table (SamplerConfig, core/gebm/config.py)
SAMPLE_CPU = --preset gebm-cifar10-cpu -n 64 --force
gebm-cifar10-cpu: $(RUNS)/gebm-cifar10-cpu/checkpoints/best.pt  ## CIFAR-10 subset: train, ULA/KLA grids, FID/KID (CPU, ~15 min) [HW=cpu LMLAB_CIFAR10=tar.gz INCEPTION=weights]
	@test -e $(LMLAB_CIFAR10) || { echo "missing $(LMLAB_CIFAR10) (set LMLAB_CIFAR10=... or LMLAB_DATA=dir)"; exit 2; }
	for s in none ula kla; do $(LMLAB) sample -c $< --device cpu --sampler $$s $(SAMPLE_CPU) \
	  -o $(RUNS)/gebm-cifar10-cpu/samples-$$s.png || exit 1; done
	$(EVAL) $< --real $(LMLAB_CIFAR10) --real-split test --real-count 1000 --num-samples 1000 \
	  --preset gebm-cifar10-cpu --sampler kla --device cpu $(if $(INCEPTION),--inception $(INCEPTION)) \
	  --out $(RUNS)/gebm-cifar10-cpu/fid-kid.json
	$(RECORD) gebm-cifar10-cpu --command '$(call made_by,gebm-cifar10-cpu)' --train $(RUNS)/gebm-cifar10-cpu.train.json \
	  --json fid-kid=$(RUNS)/gebm-cifar10-cpu/fid-kid.json
	$(RESULTS_DOC)
# best.pt is made by the stamp's training (no recipe of its own: make never deletes it); the stamp exists only
# once training completed, so a stopped run is resumed before anything samples from it
$(RUNS)/gebm-cifar10-cpu/checkpoints/best.pt: $(RUNS)/gebm-cifar10-cpu.train.json ;
$(RUNS)/gebm-cifar10-cpu.train.json:
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-ebm --kind gebm --preset gebm-cifar10-cpu,$(HW) --run-dir $(RUNS)/gebm-cifar10-cpu $(TRAIN_ARGS) > $@.tmp
	$(train_done)

# the paper size: FID/KID of 50,000 KLA samples against 50,000 training images, whose feature statistics are computed
# once (runs/fid-stats/*.npz, tied to the Inception weights' sha256) and reused by later evaluations
FID_SAMPLES ?= 50000
gebm-cifar10: $(RUNS)/gebm-cifar10/checkpoints/best.pt  ## the paper-size CIFAR-10 run: KLA samples, FID/KID of 50k samples (GPU, about a day on one H200: make gpu-check) [HW=gpu LMLAB_CIFAR10=tar.gz INCEPTION=weights FID_SAMPLES=50000]
	$(LMLAB) sample -c $< --preset gebm-cifar10 --sampler kla -n 64 --force -o $(RUNS)/gebm-cifar10/samples-kla.png
	$(LMLAB) sample -c $< --preset gebm-cifar10 --sampler none -n 64 --force -o $(RUNS)/gebm-cifar10/samples-generator.png
	$(EVAL) $< --real $(LMLAB_CIFAR10) --real-split train --real-count $(FID_SAMPLES) --real-stats $(RUNS)/fid-stats/cifar10-train-$(FID_SAMPLES).npz \
	  --num-samples $(FID_SAMPLES) --preset gebm-cifar10 --sampler kla \
	  $(if $(INCEPTION),--inception $(INCEPTION)) --out $(RUNS)/gebm-cifar10/fid-kid.json
	$(RECORD) gebm-cifar10 --command '$(call made_by,gebm-cifar10)' --train $(RUNS)/gebm-cifar10.train.json \
	  --json fid-kid=$(RUNS)/gebm-cifar10/fid-kid.json
	$(RESULTS_DOC)
$(RUNS)/gebm-cifar10/checkpoints/best.pt: $(RUNS)/gebm-cifar10.train.json ;
$(RUNS)/gebm-cifar10.train.json:
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-ebm --kind gebm --preset gebm-cifar10,$(HW) --run-dir $(RUNS)/gebm-cifar10 $(TRAIN_ARGS) > $@.tmp
	$(train_done)

# The CPU image tier's feature extractor (issue #19, 4b): a CIFAR-10 classifier trained on the training set, its
# penultimate features used for FID/KID where no Inception weights are (evaluate --classifier); test accuracy recorded.
CLASSIFIER_ARGS ?=
$(RUNS)/cifar10-classifier.pt:
	@mkdir -p $(@D)
	$(PYTHON) -m lmlab.core.machine > $(RUNS)/cifar10-classifier.start.json
	$(PYTHON) -m lmlab.core.gebm.classifier --data $(LMLAB_CIFAR10) --out $@ $(CLASSIFIER_ARGS) > $(RUNS)/cifar10-classifier.json.tmp
	mv $(RUNS)/cifar10-classifier.json.tmp $(RUNS)/cifar10-classifier.json
results/cifar10-classifier.json: $(RUNS)/cifar10-classifier.pt
	@mkdir -p $(@D)
	$(RECORD) cifar10-classifier --command '$(call made_by,cifar10-classifier)' --since $(RUNS)/cifar10-classifier.start.json \
	  --json classifier=$(RUNS)/cifar10-classifier.json
	$(RESULTS_DOC)
cifar10-classifier: results/cifar10-classifier.json  ## the CPU image tier's FID/KID feature extractor: a CIFAR-10 classifier (CPU, ~1 h) [LMLAB_CIFAR10=tar.gz CLASSIFIER_ARGS='--epochs 10 --threads 2']
	@$(RESULTS_DOC) --print cifar10-classifier
.PHONY: cifar10-classifier

# ---- the CPU image tier (issue #19, 4b): GEBM_TIER_SEEDS runs of gebm-cifar10-cpu + gebm-cifar10-cpu-tier (45 min each at one thread, two side by side),
# each scored as the generator alone, ULA and KLA (the preset's [sample] table) on the classifier's features:
# GEBM_TIER_FID samples against the 10,000 test images, whose statistics are computed once per classifier file.
GEBM_TIER = $(RUNS)/gebm-cifar10-tier
GEBM_TIER_SEEDS ?= 1 2
GEBM_TIER_FID ?= 10000
GEBM_TIER_STATS = $(RUNS)/fid-stats/cifar10-test-classifier.npz
GEBM_TIER_PRESETS = gebm-cifar10-cpu,gebm-cifar10-cpu-tier
$(GEBM_TIER_SEEDS:%=$(GEBM_TIER)/s%.train.json): $(GEBM_TIER)/s%.train.json:
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-ebm --kind gebm --preset $(GEBM_TIER_PRESETS),$(HW) --set seed=$* --run-dir $(GEBM_TIER)/s$* $(TRAIN_ARGS) > $@.tmp
	$(train_done)

# one seed's sample grids and scores
$(GEBM_TIER_SEEDS:%=$(GEBM_TIER)/s%/scores.json): $(GEBM_TIER)/s%/scores.json: $(GEBM_TIER)/s%.train.json $(RUNS)/cifar10-classifier.pt
	@mkdir -p $(dir $(GEBM_TIER_STATS))
	for s in none ula kla; do $(LMLAB) sample -c $(@D)/checkpoints/last.pt --device cpu --sampler $$s --preset $(GEBM_TIER_PRESETS) \
	  -n 64 --force -o $(@D)/samples-$$s.png || exit 1; done
	for s in ula kla; do $(EVAL) $(@D)/checkpoints/last.pt --real $(LMLAB_CIFAR10) --real-split test --real-count 10000 \
	  --real-stats $(GEBM_TIER_STATS) --classifier $(RUNS)/cifar10-classifier.pt --num-samples $(GEBM_TIER_FID) \
	  --preset $(GEBM_TIER_PRESETS) --sampler $$s --device cpu > $(@D)/fid-$$s.json.tmp && mv $(@D)/fid-$$s.json.tmp $(@D)/fid-$$s.json || exit 1; done
	cat $(@D)/fid-ula.json $(@D)/fid-kla.json > $@

# the floor: GEBM_TIER_FID real training images scored against the same test statistics, as a sampler's samples are
$(GEBM_TIER)/fid-reference.json: $(RUNS)/cifar10-classifier.pt | $(GEBM_TIER_FIRST)
	$(EVAL) --real $(LMLAB_CIFAR10) --real-split test --real-count 10000 --real-stats $(GEBM_TIER_STATS) \
	  --classifier $(RUNS)/cifar10-classifier.pt --reference-split train --reference-count $(GEBM_TIER_FID) --device cpu \
	  > $@.tmp && mv $@.tmp $@

$(RECORD_STAMPS)/gebm-cifar10-cpu-tier: RECORD_SEEDS = $(GEBM_TIER_SEEDS)
results/gebm-cifar10-cpu-tier.json: $(RECORD_STAMPS)/gebm-cifar10-cpu-tier $(GEBM_TIER_SEEDS:%=$(GEBM_TIER)/s%/scores.json) $(GEBM_TIER)/fid-reference.json
	@mkdir -p $(@D) docs/figures
	$(PYTHON) bench/gebm_tier.py $(foreach s,$(GEBM_TIER_SEEDS),--seed $(s)=$(GEBM_TIER)/s$(s)) --figure docs/figures/gebm-cifar10-cpu-tier.png \
	  --reference $(GEBM_TIER)/fid-reference.json \
	  --json $(GEBM_TIER)/summary.json > $(GEBM_TIER)/summary.md
	$(RECORD) gebm-cifar10-cpu-tier --command '$(call made_by,gebm-cifar10-cpu-tier)' \
	  $(foreach s,$(GEBM_TIER_SEEDS),--train s$(s)=$(GEBM_TIER)/s$(s).train.json) --json classifier=$(RUNS)/cifar10-classifier.json \
	  --json summary=$(GEBM_TIER)/summary.json --markdown $(GEBM_TIER)/summary.md
	$(RESULTS_DOC)

# later seeds are scored after the first, which writes the shared statistics file (trainings still run in parallel)
GEBM_TIER_FIRST = $(GEBM_TIER)/s$(firstword $(GEBM_TIER_SEEDS))/scores.json
$(filter-out $(GEBM_TIER_FIRST),$(GEBM_TIER_SEEDS:%=$(GEBM_TIER)/s%/scores.json)): | $(GEBM_TIER_FIRST)
gebm-cifar10-cpu-tier: results/gebm-cifar10-cpu-tier.json  ## GEBM image claim on CPU: generator vs ULA vs KLA, FID/KID on the classifier's features, GEBM_TIER_SEEDS seeds (CPU, ~1.5 h for two seeds with -j2 after cifar10-classifier) [LMLAB_CIFAR10=tar.gz]
	@$(RESULTS_DOC) --print gebm-cifar10-cpu-tier
.PHONY: gebm-cifar10-cpu-tier

gebm-clean:  ## (deletes nothing: says which run dirs to remove yourself)
	@echo "run dirs are never deleted by make; remove $(RUNS)/gebm-* yourself"
