# lmlab: the two commands of the README, and every reproduction as a Make target. `make help` lists them all
# (from the `## ` comments on the target lines here and in pipelines/*.mk).
#   make demo      prep -> train-lm -> eval-ppl -> sample on the shipped Austen corpus (< 10 min, 2 CPU cores)
#   make test      the test suite (what CI runs: .ci/run, which runs `make demo` first)
#   make results   regenerate every generated region of docs/*.md from the records in results/
# Hardware is a preset: `make ptb-zaremba-medium HW=gpu`, `HW=dgx8` under torchrun, `HW=slurm` in sbatch.

PYTHON ?= python3
LMLAB ?= $(PYTHON) -m lmlab
# training steps only: torchrun/srun wrappers go here (pipelines/slurm.sbatch sets it)
LMLAB_TRAIN ?= $(LMLAB)
HW ?= cpu
# The CPU wheel; a GPU user sets TORCH_SPEC='torch>=2.2' (or installs torch first: then nothing is reinstalled).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

# Datasets. The presets take every dataset path from an LMLAB_* variable and have no defaults (README, "Data");
# the pipelines default them under one root, LMLAB_DATA, laid out as on this project's development machines
# (../shared/data/ptb, .../multi30k, ...). Elsewhere: make TARGET LMLAB_DATA=/your/datasets (the same layout),
# or set each LMLAB_* variable (in the environment or on the command line; either wins over these defaults).
LMLAB_DATA ?= ../shared/data
export LMLAB_PTB ?= $(LMLAB_DATA)/ptb
export LMLAB_WIKITEXT2 ?= $(LMLAB_DATA)/wikitext-2
export LMLAB_WIKITEXT103 ?= $(LMLAB_DATA)/wikitext-103
export LMLAB_MULTI30K ?= $(LMLAB_DATA)/multi30k
export LMLAB_WMT14 ?= $(LMLAB_DATA)/wmt14-en-de
export LMLAB_REDWINE ?= $(LMLAB_DATA)/uci-wine/winequality-red.csv
export LMLAB_WHITEWINE ?= $(LMLAB_DATA)/uci-wine/winequality-white.csv
export LMLAB_CIFAR10 ?= $(LMLAB_DATA)/cifar10/CIFAR-10-images.tar.gz

.DELETE_ON_ERROR:
.PHONY: help install demo test bench results results-check clean-demo

# `make help`: every target with a `## ` comment on its line, grouped by the file that defines it.
help:  ## this list
	@awk 'FNR == 1 { file = FILENAME; title = ($$0 ~ /^# /) ? substr($$0, 3) : "" } \
	  /^[A-Za-z0-9][A-Za-z0-9_.%\/ -]*:([^=]|$$).*## / { \
	    if (file != shown) { printf "\n%s%s\n", file, (title != "" ? ": " title : ""); shown = file } \
	    target = $$0; sub(/:.*/, "", target); doc = $$0; sub(/^[^#]*## /, "", doc); \
	    printf "  %-24s  %s\n", target, doc }' $(MAKEFILE_LIST)
	@echo; echo "Variables: HW=cpu|gpu|dgx8|slurm (hardware preset), PYTHON, LMLAB_TRAIN (launcher for training steps),"
	@echo "TRAIN_ARGS (extra flags for every training step, e.g. TRAIN_ARGS='--set hardware.threads=1'); data paths as in"
	@echo "each target's line (LMLAB_PTB=dir, ...), all defaulting"
	@echo "under LMLAB_DATA=$(LMLAB_DATA) (the development machines' layout; README, section Data, lists every variable)."

# ---- training steps: a stamp written only when training completed ------------------------------------------
# Every training step is a rule whose target is a stamp (runs/X.train.json), never a checkpoint:
#   runs/X.train.json: deps
#   	@mkdir -p $(@D)
#   	$(LMLAB_TRAIN) train-lm ... --run-dir runs/X > $@.tmp
#   	$(train_done)
# train-lm and train-ebm print a JSON summary line on stdout (rank 0 only under torchrun); a run stopped by SIGTERM/SIGUSR1 saves, exits 0 and says
# so in it ("stopped_by"), so train_done fails ("rerun to resume") and leaves no stamp: the next `make` resumes
# the run instead of decoding a partial best.pt. Ctrl-C or a crash leaves no stamp either, and since no rule
# names a checkpoint as its target, .DELETE_ON_ERROR never deletes one (.PRECIOUS says the same to any that does).
define train_done
@$(PYTHON) -c "import json,sys; p=sys.argv[1]; rs=[json.loads(l) for l in open(p) if l.strip()] or [{'stopped_by': 'unknown (the trainer printed no summary)'}]; s=[x for r in rs for x in [r.get('stopped_by') or r.get('stopped') or (r.get('completed') is False and 'an unfinished budget')] if x]; sys.exit(f'{p}: training stopped by {s[0]}; rerun make to resume it' if s else 0)" $@.tmp
mv $@.tmp $@
endef
.PRECIOUS: %.pt runs/%/checkpoints/best.pt runs/%/checkpoints/last.pt

# ---- result records: results/NAME.json (NAME = the make target), the only source of docs/ figures ----------
RECORD = $(PYTHON) -m lmlab.core.records
RESULTS_DOC = $(PYTHON) -m lmlab.core.results_doc
# $(call made_by,NAME): the command line a record names (the make target and the variables given to make)
made_by = $(strip make $(1) HW=$(HW) $(filter-out HW=%,$(MAKEOVERRIDES)))

# A record whose seed list is a make variable lists it in a stamp, runs/.record-seeds/NAME, one of its prerequisites:
#   results/NAME.json: $(RECORD_STAMPS)/NAME
#   $(RECORD_STAMPS)/NAME: RECORD_SEEDS = $(THE_SEEDS_VARIABLE)
# Its recipe always runs but rewrites the stamp (so making it newer than the record) only when the list changed: a
# record of seed 1 followed by `make NAME SEEDS='1 2'` is remade even when seed 2's runs finished before that record
# was (their files are then older than it, and make alone would call the record up to date); the same list again
# leaves the record as it is.
RECORD_STAMPS ?= runs/.record-seeds
$(RECORD_STAMPS)/%: FORCE
	@mkdir -p $(@D); [ "$$(cat $@ 2>/dev/null)" = '$(RECORD_SEEDS)' ] || echo '$(RECORD_SEEDS)' > $@
FORCE:  # no recipe, no file: always remade, so whatever names it runs (GNU make's idiom; not a target to call)

results: .installed  ## regenerate every generated region of docs/*.md from results/*.json
	$(RESULTS_DOC)

results-check: .installed  ## fail if a generated region of docs/*.md differs from its record (a hand edit)
	$(RESULTS_DOC) --check

# Installs into the current Python (use a virtualenv if you prefer): torch first, so the range in
# pyproject.toml is already met and pip never pulls a multi-GB CUDA build on a CPU machine.
.installed: pyproject.toml
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install --quiet "$(TORCH_SPEC)"
	$(PYTHON) -m pip install --quiet -e '.[test]'
	@touch $@

install: .installed  ## pip-install lmlab[test] into $(PYTHON) (CPU torch first if no torch is present)

test: .installed  ## the test suite (README command #2; CI: .ci/run)
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

include pipelines/*.mk
