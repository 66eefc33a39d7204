# The two set-up commands (see README.md):
#   make site   install what is missing, regenerate stale diagrams, results
#               and figures, build the site into output/
#   make test   install what is missing, run the whole test suite
# and `make test-fast` for the quick tier while you work (no site build, no
# browser, no subprocesses, no quick-mode training: a few minutes),
# and `make serve` to look at the built site on http://127.0.0.1:8000/.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup site generated test test-fast serve benchmark iwae avb flows likelihoods clean

setup:
	@bash scripts/setup.sh

# Each script compares the SHA-256 of its inputs with its record and does
# nothing when they match, so an up-to-date checkout retrains nothing.
generated: setup
	@$(PYTHON) scripts/make_diagrams.py --if-stale
	@$(PYTHON) scripts/train_main_post.py --if-stale
	@$(PYTHON) scripts/plot_main_post.py --if-stale
	@$(PYTHON) scripts/plot_benchmark.py --if-stale
	@$(PYTHON) scripts/benchmark.py --check || echo "warning: the performance page shows stale numbers; run make benchmark"
	@$(PYTHON) scripts/train_iwae_table.py --check || echo "warning: the IWAE table is stale; run make iwae"
	@$(PYTHON) scripts/mc_samples_experiments.py --check || echo "warning: the IWAE post's measurements are stale; run make iwae"
	@$(PYTHON) scripts/plot_iwae.py --if-stale
	@$(PYTHON) scripts/avb_experiments.py --check || echo "warning: the AVB post's measurements are stale; run make avb"
	@$(PYTHON) scripts/plot_avb.py --if-stale
	@$(PYTHON) scripts/flow_experiments.py --check || echo "warning: the flows post's measurements are stale; run make flows"
	@$(PYTHON) scripts/plot_flows.py --if-stale
	@$(PYTHON) scripts/likelihood_experiments.py --check || echo "warning: the likelihoods post's measurements are stale; run make likelihoods"
	@$(PYTHON) scripts/plot_likelihoods.py --if-stale

site: generated
	$(VENV)/bin/nikola build --strict

test: setup
	$(VENV)/bin/python -m pytest

test-fast: setup
	$(VENV)/bin/python -m pytest -m "not slow"

# The side-by-side speed benchmark (tens of minutes; run it on an idle machine).
benchmark: setup
	$(PYTHON) scripts/benchmark.py
	$(PYTHON) scripts/plot_benchmark.py

# The IWAE post's table and measurements (about an hour and a half on two
# cores; only the stale rows rerun). Run it on an idle machine: it times things.
iwae: setup
	$(PYTHON) scripts/train_iwae_table.py --if-stale
	$(PYTHON) scripts/mc_samples_experiments.py --if-stale
	$(PYTHON) scripts/plot_iwae.py --if-stale

# The AVB post's estimator curves, four-point models and MNIST table (about
# half an hour on two cores; only the stale parts rerun).
avb: setup
	$(PYTHON) scripts/avb_experiments.py --if-stale
	$(PYTHON) scripts/plot_avb.py --if-stale

# The normalizing-flows post's 2-D fits, MNIST table and cost per flow length
# (about an hour on two cores; only the stale parts rerun). Run it on an idle
# machine: it times things.
flows: setup
	$(PYTHON) scripts/flow_experiments.py --if-stale
	$(PYTHON) scripts/plot_flows.py --if-stale

# The likelihoods post's MNIST heads, regression and classification
likelihoods: setup
	$(PYTHON) scripts/likelihood_experiments.py --if-stale
	$(PYTHON) scripts/plot_likelihoods.py --if-stale

serve: site
	$(VENV)/bin/nikola serve --address 127.0.0.1 --port 8000

clean:
	rm -rf output cache .doit.db*
