# Two commands a newcomer needs:  make demo  and  make test.
# Both build their own environment (.venv) from PyPI on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
# The demo cohort: 48 subjects (40% severe) at twice the paper's voxel size (see README).
DEMO_DIR      ?= demo
DEMO_SUBJECTS ?= 48
DEMO_SCALE    ?= 2

.PHONY: demo test unit env clean-demo

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

$(DEMO_DIR)/cohort/rawdata/participants.tsv: | $(VENV)/.installed
	$(BIN)/gamer-mril-synth $(DEMO_DIR)/cohort --subjects $(DEMO_SUBJECTS) --severe 0.4 --scale $(DEMO_SCALE) --seed 0

demo: $(VENV)/.installed $(DEMO_DIR)/cohort/rawdata/participants.tsv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES)
	@echo "Outputs: results/ (per session under results/sub-*/ses-*/anat, QC in results/group/)"

test: $(VENV)/.installed
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q

unit: $(VENV)/.installed
	$(BIN)/python -m pytest -q tests

clean-demo:
	rm -rf results $(DEMO_DIR) .snakemake
