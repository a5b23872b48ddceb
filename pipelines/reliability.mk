# Reliability (issue #9): faults, bad input, clusters. `make reliability-doc` reruns the reliability tests
# with LMLAB_WRITE_RELIABILITY=1, which regenerates the blocks of docs/reliability.md from what they observe
# (20 SIGKILLs per trainer here; plain `make test` runs 20 for train-lm, 6 for train-lm with IMM and 5 per train-ebm kind).
RELIABILITY_TESTS = tests/test_reliability_matrix.py tests/test_kill_resume.py tests/test_reliability_cluster.py \
	tests/test_reliability_security.py
.PHONY: reliability reliability-doc

reliability: .installed  ## the reliability tests (faults, bad input, clusters), writing nothing
	$(PYTHON) -m pytest -q $(RELIABILITY_TESTS) tests/test_reliability_doc.py

# docs/reliability.md is written by the tests; results/reliability-doc.json is its summary, for docs/results.md.
reliability-doc: .installed  ## rerun them with 20 kills per trainer and regenerate docs/reliability.md (~15 min)
	@mkdir -p results runs
	$(PYTHON) -m lmlab.core.machine > runs/reliability-start.json
	LMLAB_WRITE_RELIABILITY=1 LMLAB_KILLS=20 LMLAB_IMM_KILLS=20 LMLAB_EBM_KILLS=20 $(PYTHON) -m pytest -q $(RELIABILITY_TESTS)
	$(PYTHON) -m pytest -q tests/test_reliability_doc.py
	$(PYTHON) pipelines/reliability_record.py docs/reliability.md > runs/reliability.json
	$(RECORD) reliability-doc --kind reliability --command '$(call made_by,reliability-doc)' \
	  --since runs/reliability-start.json --json summary=runs/reliability.json
	$(RESULTS_DOC)
