# GEBM on a 2-D ring of 8 Gaussians (core/gebm/toy.py): a small MLP generator trained by KALE (Algorithm 1)
# cannot put all its mass on the modes; ULA/KLA in the latent (the shipped SamplerConfig) and KLA at beta = 1
# are scored against held-out draws (MMD^2, sliced W1, high-quality fraction, modes covered), 3 seeds.
#   make gebm-toy     # ~4 min on 2 loaded CPU cores -> results/gebm-toy.json + docs/figures/gebm-toy.png
GEBM_TOY_SEEDS ?= 0,1,2
PYTHON ?= python3
.PHONY: gebm-toy
gebm-toy:  ## 2-D ring: generator vs ULA/KLA (shipped sampler) vs KLA at beta 1, exact metrics, 3 seeds (CPU, ~4 min) -> results/gebm-toy.json + docs/figures/gebm-toy.png [GEBM_TOY_SEEDS=0,1,2]
	$(PYTHON) -m lmlab.core.gebm.toy --seeds $(GEBM_TOY_SEEDS) --figure docs/figures/gebm-toy.png
	$(RESULTS_DOC)
