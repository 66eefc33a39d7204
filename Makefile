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

.PHONY: setup setup-backends site generated test test-fast serve benchmark iwae iwae-long avb flows likelihoods composition conv kl-weight gradients distributed clean

setup:
	@bash scripts/setup.sh

# The tests also run under the JAX and PyTorch backends (requirements-backends.txt).
setup-backends:
	@bash scripts/setup.sh --backends

# One process checks every record (fingerprints come from cache/fingerprints
# when the code is unchanged), redraws stale figures and diagrams, retrains the
# main post's model if stale, and warns about stale long measurements.
generated: setup
	@$(PYTHON) scripts/make_generated.py

site: generated
	$(VENV)/bin/nikola build --strict

# Two pytest workers, one per core; each test file runs whole, in order, on one worker.
PYTEST_WORKERS ?= -n 2 --dist loadfile

test: setup-backends
	$(VENV)/bin/python -m pytest $(PYTEST_WORKERS)

test-fast: setup-backends
	$(VENV)/bin/python -m pytest $(PYTEST_WORKERS) -m "not slow"

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

# The IWAE table's rows trained on, stage by stage (results/iwae-long; about four
# hours on two cores for stages 0-4). Each row goes on from its committed state,
# or from the checkpoint an interrupted run left (--resume): it can be stopped and rerun.
iwae-long: setup
	$(PYTHON) scripts/train_iwae_table.py --output-dir results/iwae-long --if-stale --resume
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

# The composition post's model: IWAE, an IAF posterior and a continuous
# Bernoulli head on grey-level MNIST, trained and scored (about half an hour).
composition: setup
	$(PYTHON) scripts/composition_experiments.py --if-stale

# The convolutional post's models: dense against convolutional on MNIST and
# Fashion-MNIST, and keras.io's VAE against our twin (hours on two cores, the
# convolutional decoders dominate; the keras_io part needs KERAS_BACKEND=tensorflow).
conv: setup
	$(PYTHON) scripts/conv_experiments.py --if-stale
	$(PYTHON) scripts/plot_conv.py --if-stale

# The KL weight (beta) and KL warm-up sweeps on Burda et al.'s MNIST VAE.
kl-weight: setup
	$(PYTHON) scripts/kl_weight_experiments.py --if-stale
	$(PYTHON) scripts/plot_kl_weight.py --if-stale

# The encoder's gradient estimators: their signal-to-noise ratio against S on
# a linear-Gaussian model and on two trained rows of the IWAE table, and four
# models trained with each (about 25 minutes on two cores).
gradients: setup
	$(PYTHON) scripts/gradient_experiments.py --if-stale
	$(PYTHON) scripts/plot_gradients.py --if-stale

# Data-parallel training on JAX: images per second on one device, two devices
# and two processes of this machine (about 10 minutes on two cores; needs the
# JAX backend, so it installs the test backends; run it on an idle machine).
distributed: setup-backends
	$(PYTHON) scripts/distributed_experiments.py --if-stale
	$(PYTHON) scripts/plot_distributed.py --if-stale

serve: site
	$(VENV)/bin/nikola serve --address 127.0.0.1 --port 8000

clean:
	rm -rf output cache .doit.db*
