# IMM toy experiments (Muneeb & Ohannessian, NeurIPS 2024), CPU, a few minutes each on 2 cores:
#   make imm-logistic    logistic regression: MLE vs IMM vs reverse KD vs noising across training-set sizes,
#                        with the λ/(1+λ) sweep -> results/imm-logistic.json, docs/figures/imm-logistic.png
#   make imm-reinforce   REINFORCE on the 11x11 grid MDP with and without IMM against the x-only POMDP policy
#                        -> results/imm-reinforce.json, docs/figures/imm-reinforce.png
# Seeds are paired across arms. Extra flags: IMM_LOGISTIC_ARGS / IMM_REINFORCE_ARGS (see --help).
# Included by the top-level Makefile (PYTHON).
IMM_LOGISTIC_ARGS ?=
IMM_REINFORCE_ARGS ?=

.PHONY: imm-logistic imm-reinforce imm-toys

imm-logistic:  ## logistic regression: MLE vs IMM vs reverse KD vs noising across sizes (CPU, minutes) [IMM_LOGISTIC_ARGS=...]
	$(PYTHON) -m lmlab.core.imm.logistic --out results --figure docs/figures/imm-logistic.png $(IMM_LOGISTIC_ARGS)
	$(RESULTS_DOC)

imm-reinforce:  ## REINFORCE on the 11x11 grid MDP with and without IMM (CPU, minutes) [IMM_REINFORCE_ARGS=...]
	$(PYTHON) -m lmlab.core.imm.reinforce --out results --figure docs/figures/imm-reinforce.png $(IMM_REINFORCE_ARGS)
	$(RESULTS_DOC)

imm-toys: imm-logistic imm-reinforce  ## both IMM toy experiments
