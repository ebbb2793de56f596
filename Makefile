# Two commands a newcomer needs:  make demo  and  make test.
# Both build their own environment (.venv) from PyPI on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
# The quick demo (make demo): 72 subjects (40% severe, a quarter with a follow-up) at three
# times the paper's voxel size, config.yaml with config.quick.yaml on top. The full demo
# (make demo-full): the same cohort at twice the voxel size, config.yaml alone. Both plant
# half the generator's full effect (DEMO_EFFECT): MWF -45%, qT1 +26%, NDI -26% in both
# corticospinal tracts of the severe, within what damaged MS white matter shows
# (docs/method.md, section 10); 72 subjects is what the network needs to learn
# it at the quick demo's grid (docs/benchmarks.md, learning curves).
DEMO_DIR      ?= demo
DEMO_SUBJECTS ?= 72
DEMO_SCALE    ?= 2
DEMO_EFFECT   ?= 0.5
QUICK_SUBJECTS ?= 72
QUICK_SCALE    ?= 3
SNAKEMAKE := PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake

.PHONY: demo demo-full test lint unit env clean-demo check-report

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

$(DEMO_DIR)/quick/rawdata/participants.tsv: | $(VENV)/.installed
	$(BIN)/gamer-mril-synth $(DEMO_DIR)/quick --subjects $(QUICK_SUBJECTS) --followup 0.25 --severe 0.4 --scale $(QUICK_SCALE) --effect-scale $(DEMO_EFFECT) --seed 0

$(DEMO_DIR)/cohort/rawdata/participants.tsv: | $(VENV)/.installed
	$(BIN)/gamer-mril-synth $(DEMO_DIR)/cohort --subjects $(DEMO_SUBJECTS) --severe 0.4 --scale $(DEMO_SCALE) --effect-scale $(DEMO_EFFECT) --followup 0.25 --seed 0

# The workflow's run timed by GNU time where it is installed (wall, CPU of Snakemake and
# every job): `python bench/breakdown.py results` splits it per rule, controller and idle.
TIMED := $(shell test -x /usr/bin/time && printf '%s' "/usr/bin/time -f 'wall\tuser\tsys\n%e\t%U\t%S' -o results/benchmarks/run.tsv")

demo: $(VENV)/.installed $(DEMO_DIR)/quick/rawdata/participants.tsv
	@mkdir -p results/benchmarks; start=$$(date +%s); \
	PATH=$(CURDIR)/$(BIN):$$PATH $(TIMED) $(BIN)/snakemake --cores $(CORES) --configfile config.yaml config.quick.yaml && \
	$(SNAKEMAKE) --configfile config.yaml config.quick.yaml --report results/report.html && \
	$(SNAKEMAKE) --configfile config.yaml config.quick.yaml --report results/report.zip && \
	echo "Workflow and report in $$(( $$(date +%s) - start )) s (environment and cohort not counted)"
	@echo "Outputs: results/ (per session under results/sub-*/ses-*/{anat,xai}, findings in results/group/, the report: results/report.html, also as results/report.zip)"

demo-full: $(VENV)/.installed $(DEMO_DIR)/cohort/rawdata/participants.tsv
	$(SNAKEMAKE) --cores $(CORES)
	$(SNAKEMAKE) --report results/report.html
	$(SNAKEMAKE) --report results/report.zip
	@echo "Outputs: results/ (per session under results/sub-*/ses-*/{anat,xai}, findings in results/group/, the report: results/report.html, also as results/report.zip)"

test: lint
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q

# The rule files formatted as snakefmt writes them, and Snakemake's own linter (it reads
# the workflow with or without data: a missing participants table is only a warning).
lint: $(VENV)/.installed
	$(BIN)/snakefmt --check Snakefile rules/
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint

unit: $(VENV)/.installed
	$(BIN)/python -m pytest -q tests

# The report of `make demo` in a real browser (Debian's headless Chromium, installed with
# apt-get when missing): screenshots of the Quality control page and of the heatmap viewer
# in results/screenshots/, checked not blank (workflow_tests/test_report_browser.py).
check-report: $(VENV)/.installed
	@command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	GAMER_MRIL_REPORT=$(CURDIR)/results/report.zip GAMER_MRIL_SCREENSHOTS=$(CURDIR)/results/screenshots \
	  $(BIN)/python -m pytest -q workflow_tests/test_report_browser.py
	@echo "Screenshots: results/screenshots/"

clean-demo:
	rm -rf results $(DEMO_DIR) .snakemake

# Cluster runs (README "Running on a cluster"). The controller environment, Snakemake and
# its SLURM executor plugin, is kept apart from .venv: the plugin needs numpy >= 2.4.5,
# antspyx numpy < 2.4.
CONTROLLER_VENV    ?= .venv-controller
SLURM_TEST_TIMEOUT ?= 1500

.PHONY: controller test-slurm

controller: $(CONTROLLER_VENV)/.installed

# The Snakefile imports the package, so the controller has it too (without the rules'
# dependencies: only the input checks' numpy, pandas, nibabel and scipy).
$(CONTROLLER_VENV)/.installed: envs/controller.txt pyproject.toml
	$(PYTHON) -m venv $(CONTROLLER_VENV)
	$(CONTROLLER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CONTROLLER_VENV)/bin/python -m pip install --quiet -r envs/controller.txt
	$(CONTROLLER_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

# Jobs that run without conda run Snakemake from .venv, which then needs the SLURM
# job-step plugin (the same pin as the controller's).
$(VENV)/.slurm-jobstep: $(VENV)/.installed envs/controller.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt \
	  "$$(grep '^snakemake-executor-plugin-slurm-jobstep==' envs/controller.txt)"
	touch $@

# The workflow on a single-node SLURM started here (root; apt-get installs SLURM and munge
# when missing): workflow_tests/test_slurm.py, with a hard time limit (SIGINT, so that the
# test's teardown stops every SLURM daemon it started).
test-slurm: $(CONTROLLER_VENV)/.installed $(VENV)/.slurm-jobstep
	GAMER_MRIL_SLURM_TEST=1 GAMER_MRIL_CONTROLLER=$(CURDIR)/$(CONTROLLER_VENV) \
	  PATH=$(CURDIR)/$(BIN):$$PATH timeout -s INT -k 120 $(SLURM_TEST_TIMEOUT) \
	  $(BIN)/python -m pytest -q -m slurm workflow_tests/test_slurm.py
