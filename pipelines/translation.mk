# Translation (Vaswani et al. 2017; DeFINE's MT task, Mehta et al. ICLR 2020): prep -> train-lm --task translation
# -> sample --beam 5 -> bleu, on Multi30k test_2016_flickr, with the standard and the DeFINE input embedding.
#   make mt-multi30k-de-en                 de->en, standard and DeFINE (small CPU model, HW ?= cpu)
#   make mt-multi30k-en-de                 en->de
#   make -j2 mt-multi30k-en-de-seeds       the en->de pair over seeds MT_SEEDS (and seed 1234's record), paired
#   make -j2 mt-multi30k-de-en TRAIN_ARGS="--set hardware.threads=1"   both systems at once, one core each
#   make mt-wmt14-en-de HW=dgx8 LMLAB_TRAIN='torchrun --nproc_per_node 8 -m lmlab'   the paper's setting (GPU)
# Data: LMLAB_MULTI30K, LMLAB_WMT14 (defaults under LMLAB_DATA, in the Makefile). Figures go to docs/translation.md.

HW ?= cpu
LMLAB ?= lmlab
LMLAB_TRAIN ?= $(LMLAB)
MT_BEAM ?= 5
MT_LENPEN ?= 1.0
MT_AVERAGE ?= 5
# DeFINE on the small CPU model: n=64, k=256, N=3, g_max=4; shared by encoder and decoder, output tied to its Map
MT_DEFINE_FLAGS = --embedding define --set model.embedding.define.map_dim=64 --set model.embedding.define.expand_dim=256 \
  --set model.embedding.define.layers=3 --set model.embedding.define.max_groups=4 --set model.embed_scale=false

.PHONY: mt-multi30k-de-en mt-multi30k-en-de mt-multi30k-de-en-seeds mt-multi30k-en-de-seeds mt-wmt14-en-de

# $(1) = direction (de-en), $(2) = src, $(3) = tgt, $(4) = run dir, $(5) = extra train flags.
# Training is a stamp (train_done, in the Makefile): a stopped run is resumed by the next make, never decoded.
# The test set is decoded from the average of the last MT_AVERAGE step checkpoints (Vaswani et al. 2017 §6.1; the
# presets keep that many) and, beside it, from best.pt (lowest validation NLL).
define MT_RUN
$(4).train.json: data/multi30k-$(1)/meta.json
	@mkdir -p $$(@D)
	$$(LMLAB_TRAIN) train-lm --task translation --preset multi30k-$(1),$$(HW) --run-dir $(4) $(5) $$(TRAIN_ARGS) > $$@.tmp
	$$(train_done)

# the stamp is average's JSON line (a checkpoint is never a make target: .DELETE_ON_ERROR), average.pt beside it
$(4)/checkpoints/average.json: $(4).train.json
	@mkdir -p $$(@D)
	$$(LMLAB) average --last $$(MT_AVERAGE) $(4) -o $$(@D)/average.pt --force > $$@.tmp && mv $$@.tmp $$@

$(4)/test.hyp: $(4)/checkpoints/average.json
	$$(LMLAB) sample --checkpoint $$(<D)/average.pt --beam $$(MT_BEAM) --lenpen $$(MT_LENPEN) < $$(LMLAB_MULTI30K)/test_2016_flickr.$(2) > $$@

$(4)/test-best.hyp: $(4).train.json
	$$(LMLAB) sample --checkpoint $(4)/checkpoints/best.pt --beam $$(MT_BEAM) --lenpen $$(MT_LENPEN) < $$(LMLAB_MULTI30K)/test_2016_flickr.$(2) > $$@

$(4)/test.bleu: $(4)/test.hyp
	$$(LMLAB) bleu $$(LMLAB_MULTI30K)/test_2016_flickr.$(3) --metrics bleu,chrf < $$< | tee $$@

$(4)/%.bleu.json: $(4)/%.hyp
	$$(LMLAB) bleu $$(LMLAB_MULTI30K)/test_2016_flickr.$(3) --metrics bleu,chrf -w 2 --json < $$< > $$@
endef

# results/NAME.json from the two arms: bench/mt_pair.py's table (parameters, validation, BLEU/chrF of best.pt and of
# the averaged checkpoint) and sacrebleu's paired bootstrap of the averaged DeFINE system against the standard one
define mt_record
	@mkdir -p $(@D)
	$(LMLAB) bleu $(LMLAB_MULTI30K)/test_2016_flickr.$(4) -i $(2)/test.hyp -i $(3)/test.hyp --paired-bs -m bleu,chrf -w 2 --json > $(3)/paired.json
	$(PYTHON) bench/mt_pair.py $(2) $(3) --names standard define --paired $(3)/paired.json --json $(3)/pair.json > $(3)/pair.md
	$(RECORD) $(1) --command '$(call made_by,$(1))' --train standard=$(2).train.json --train define=$(3).train.json \
	  --json pair=$(3)/pair.json --markdown $(3)/pair.md --seed 1234
	$(RESULTS_DOC)
endef

data/multi30k-de-en/meta.json: | .installed
	$(LMLAB) prep --preset multi30k-de-en --src-lang de --tgt-lang en
data/multi30k-en-de/meta.json: | .installed
	$(LMLAB) prep --preset multi30k-en-de --src-lang en --tgt-lang de

$(eval $(call MT_RUN,de-en,de,en,runs/multi30k-de-en,))
$(eval $(call MT_RUN,de-en,de,en,runs/multi30k-de-en-define,$(MT_DEFINE_FLAGS)))
$(eval $(call MT_RUN,en-de,en,de,runs/multi30k-en-de,))
$(eval $(call MT_RUN,en-de,en,de,runs/multi30k-en-de-define,$(MT_DEFINE_FLAGS)))

mt_outputs = $(foreach r,$(1),$(r)/test.bleu.json $(r)/test-best.bleu.json)
results/mt-multi30k-de-en.json: $(call mt_outputs,runs/multi30k-de-en runs/multi30k-de-en-define)
	$(call mt_record,mt-multi30k-de-en,runs/multi30k-de-en,runs/multi30k-de-en-define,en)
results/mt-multi30k-en-de.json: $(call mt_outputs,runs/multi30k-en-de runs/multi30k-en-de-define)
	$(call mt_record,mt-multi30k-en-de,runs/multi30k-en-de,runs/multi30k-en-de-define,de)

# Seeds of the pair: one seed cannot say how much of a BLEU difference is training noise. MT_SEEDS more seeds of both
# systems (the same flags plus --seed) in runs/mt-multi30k-DIR-seeds/{standard,define}-sSEED; the single pair above
# is seed 1234 (the presets' seed), read from its record when there is one (a record is never a prerequisite: make
# would rebuild it from run dirs that do not outlive a session). bench/mt_seeds.py pairs them by seed.
MT_SEEDS ?= 1 2
mt_seed_runs = $(foreach s,$(MT_SEEDS),runs/mt-multi30k-$(1)-seeds/standard-s$(s) runs/mt-multi30k-$(1)-seeds/define-s$(s))
$(foreach s,$(MT_SEEDS),\
  $(eval $(call MT_RUN,de-en,de,en,runs/mt-multi30k-de-en-seeds/standard-s$(s),--seed $(s)))\
  $(eval $(call MT_RUN,de-en,de,en,runs/mt-multi30k-de-en-seeds/define-s$(s),--seed $(s) $(MT_DEFINE_FLAGS)))\
  $(eval $(call MT_RUN,en-de,en,de,runs/mt-multi30k-en-de-seeds/standard-s$(s),--seed $(s)))\
  $(eval $(call MT_RUN,en-de,en,de,runs/mt-multi30k-en-de-seeds/define-s$(s),--seed $(s) $(MT_DEFINE_FLAGS))))

# $(1) = direction: results/mt-multi30k-DIR-seeds.json from the seeds' run dirs and the single pair's record
mt_single_pair = $(wildcard results/mt-multi30k-$(1).json)
define mt_seeds_record
	@mkdir -p $(@D)
	$(PYTHON) bench/mt_seeds.py runs/mt-multi30k-$(1)-seeds --seeds $(MT_SEEDS) \
	  $(if $(call mt_single_pair,$(1)),--recorded 1234=$(call mt_single_pair,$(1))) \
	  --json runs/mt-multi30k-$(1)-seeds/paired.json > runs/mt-multi30k-$(1)-seeds/paired.md
	$(RECORD) mt-multi30k-$(1)-seeds --command '$(call made_by,mt-multi30k-$(1)-seeds)' \
	  $(foreach r,$(call mt_seed_runs,$(1)),--train $(notdir $(r))=$(r).train.json) \
	  --json paired=runs/mt-multi30k-$(1)-seeds/paired.json --markdown runs/mt-multi30k-$(1)-seeds/paired.md \
	  --seed '$(if $(call mt_single_pair,$(1)),1234 )$(MT_SEEDS)'
	$(RESULTS_DOC)
endef
results/mt-multi30k-de-en-seeds.json: $(call mt_outputs,$(call mt_seed_runs,de-en))
	$(call mt_seeds_record,de-en)
results/mt-multi30k-en-de-seeds.json: $(call mt_outputs,$(call mt_seed_runs,en-de))
	$(call mt_seeds_record,en-de)

mt-multi30k-de-en-seeds: results/mt-multi30k-de-en-seeds.json  ## the de->en pair over seeds: MT_SEEDS more of each system, paired with seed 1234's record (CPU, ~1 h a seed with -j2) [MT_SEEDS='1 2']
	@$(RESULTS_DOC) --print mt-multi30k-de-en-seeds
mt-multi30k-en-de-seeds: results/mt-multi30k-en-de-seeds.json  ## the en->de pair over seeds, as mt-multi30k-de-en-seeds [MT_SEEDS='1 2']
	@$(RESULTS_DOC) --print mt-multi30k-en-de-seeds

mt-multi30k-de-en: results/mt-multi30k-de-en.json runs/multi30k-de-en/test.bleu runs/multi30k-de-en-define/test.bleu  ## Multi30k de->en, standard vs DeFINE embedding (small CPU Transformer) [HW=cpu LMLAB_MULTI30K=dir]
mt-multi30k-en-de: results/mt-multi30k-en-de.json runs/multi30k-en-de/test.bleu runs/multi30k-en-de-define/test.bleu  ## Multi30k en->de, standard vs DeFINE [HW=cpu LMLAB_MULTI30K=dir]

# WMT14 en->de, Transformer base, with and without DeFINE (GPU; newstest2014 BLEU, beam 4, lenpen 0.6 as the paper)
data/wmt14-en-de/meta.json: | .installed
	$(LMLAB) prep --preset wmt14-en-de --src-lang en --tgt-lang de

define WMT_RUN
runs/wmt14-en-de$(1).train.json: data/wmt14-en-de/meta.json
	@mkdir -p $$(@D)
	$$(LMLAB_TRAIN) train-lm --task translation --preset wmt14-en-de$(1),$$(HW) --run-dir runs/wmt14-en-de$(1) $$(TRAIN_ARGS) > $$@.tmp
	$$(train_done)

runs/wmt14-en-de$(1)/test.hyp: runs/wmt14-en-de$(1).train.json
	@mkdir -p $$(@D)
	$$(LMLAB) sample --checkpoint runs/wmt14-en-de$(1)/checkpoints/best.pt --beam 4 --lenpen 0.6 < $$(LMLAB_WMT14)/newstest2014.en > $$@

runs/wmt14-en-de$(1)/test.bleu.json: runs/wmt14-en-de$(1)/test.hyp
	$$(LMLAB) bleu $$(LMLAB_WMT14)/newstest2014.de --json < $$< > $$@
endef

$(eval $(call WMT_RUN,))
$(eval $(call WMT_RUN,-define))

results/mt-wmt14-en-de.json: runs/wmt14-en-de/test.bleu.json runs/wmt14-en-de-define/test.bleu.json
	$(call mt_record,mt-wmt14-en-de,runs/wmt14-en-de,runs/wmt14-en-de-define)

mt-wmt14-en-de: results/mt-wmt14-en-de.json  ## WMT14 en->de Transformer base, standard vs DeFINE (GPU; newstest2014, beam 4) [HW=dgx8 LMLAB_TRAIN='torchrun --nproc_per_node 8 -m lmlab' LMLAB_WMT14=dir]
	@$(RESULTS_DOC) --print mt-wmt14-en-de
