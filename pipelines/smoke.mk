# A seconds-long run of the whole chain (prep -> train-lm -> eval-ppl -> sample) on the first lines of
# the demo corpus; the test suite runs it (tests/test_pipeline.py). SMOKE_DIR must be a scratch dir.
SMOKE_DIR ?= /tmp/lmlab-smoke
SMOKE_TRAIN_ARGS := --steps 20 --set data.batch_size=8 --set model.d_model=32 --set model.lstm.hidden_size=32 \
	--set run.eval_interval=10 --set hardware.threads=1

$(SMOKE_DIR)/text/train.txt:
	mkdir -p $(SMOKE_DIR)/text
	head -n 1500 corpora/austen/train.txt > $(SMOKE_DIR)/text/train.txt
	head -n 100 corpora/austen/valid.txt > $(SMOKE_DIR)/text/valid.txt

$(SMOKE_DIR)/data/meta.json: $(SMOKE_DIR)/text/train.txt
	$(LMLAB) prep --train $(SMOKE_DIR)/text/train.txt --valid $(SMOKE_DIR)/text/valid.txt --vocab-size 2000 --out $(SMOKE_DIR)/data --force -q

$(SMOKE_DIR)/run.train.json: $(SMOKE_DIR)/data/meta.json
	@mkdir -p $(@D)
	$(LMLAB_TRAIN) train-lm --preset demo,$(HW) --data $(SMOKE_DIR)/data --run-dir $(SMOKE_DIR)/run $(SMOKE_TRAIN_ARGS) -q > $@.tmp
	$(train_done)

$(SMOKE_DIR)/eval.json: $(SMOKE_DIR)/run.train.json
	$(LMLAB) eval-ppl -c $(SMOKE_DIR)/run/checkpoints/best.pt --split valid -q > $@

$(SMOKE_DIR)/samples.txt: $(SMOKE_DIR)/run.train.json
	echo "she was" | $(LMLAB) sample -c $(SMOKE_DIR)/run/checkpoints/best.pt -n 2 --max-new-tokens 8 > $@

smoke: $(SMOKE_DIR)/eval.json $(SMOKE_DIR)/samples.txt  ## seconds-long run of the whole chain on a scratch dir (the tests run it) [SMOKE_DIR=/tmp/lmlab-smoke]
	@cat $(SMOKE_DIR)/eval.json
.PHONY: smoke
