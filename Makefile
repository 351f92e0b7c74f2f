# Two commands do all set-up on a fresh machine with Python 3.10+ and make:
#   make demo   create .venv, install, run the main job on built-in demo models (CPU)
#   make test   create .venv if needed, install the test dependencies, lint, run the whole suite
#               (and the JupyterLab extension's jest tests)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet -c constraints.txt

.PHONY: demo test lint bench figures docs clean labextension

# The JupyterLab extension (labextension/, TypeScript): npm installs its packages from the lock file,
# then builds it into labextension/dist, which the wheel ships (pyproject's data-files). Node 20 + npm.
LABEXT_SOURCES := $(wildcard labextension/src/*.ts labextension/style/*) labextension/package.json labextension/tsconfig.json
LABEXT_BUILT   := labextension/dist/package.json

labextension/node_modules/.package-lock.json: labextension/package-lock.json
	cd labextension && npm ci --no-audit --no-fund --loglevel=error

$(LABEXT_BUILT): labextension/node_modules/.package-lock.json $(LABEXT_SOURCES)
	cd labextension && npm run --silent build
	touch $@

labextension: $(LABEXT_BUILT)

# `pip install -e` installs no data files: link the built extension (so a rebuild shows at the next page load)
# and copy the server extension's config file into the venv, where a wheel install puts them.
define JUPYTER_FILES
	rm -rf $(VENV)/share/jupyter/labextensions/nbmodels
	mkdir -p $(VENV)/share/jupyter/labextensions $(VENV)/etc/jupyter/jupyter_server_config.d
	ln -s $(CURDIR)/labextension/dist $(VENV)/share/jupyter/labextensions/nbmodels
	cp jupyter-config/jupyter_server_config.d/nbmodels.json $(VENV)/etc/jupyter/jupyter_server_config.d/
endef

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The demo runs a notebook on a kernel: it needs no JupyterLab extension (and so no Node).
$(VENV)/.installed-demo: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[notebook]'
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt $(LABEXT_BUILT) | $(BIN)/python
	$(PIP) -e '.[test]'
	$(JUPYTER_FILES)
	touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/python -m nbmodels demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check nbmodels tests benchmarks scripts
	$(BIN)/ruff format --check nbmodels tests benchmarks scripts
	$(BIN)/mypy

test: lint
	cd labextension && npx --no-install jest --silent
	$(BIN)/python -m pytest --ignore=tests/docs
	# the documentation's examples in a process of their own: each page expects a session as a user starts one,
	# and the process-wide state they set up (shells, the manager, imported libraries) must not meet the others'
	$(BIN)/python -m pytest tests/docs

# Every benchmark, stored in benchmarks/stored-run.json (the run the documentation's figures are checked
# against), then the figures the pages quote that this run changed. One module: python -m benchmarks core.
# Then the soak: the property tests at full length (make test runs a fifth of their examples).
bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks --update benchmarks/stored-run.json
	-$(BIN)/python -m benchmarks.quoted
	NBMODELS_SOAK=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/core/test_policy_state_machine.py \
		tests/core/test_force_properties.py

# Write the stored run's figures into the pages that quote them (README.md, docs/).
figures: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.quoted --write

# The pages of docs/ as a static site in site/; --strict: a broken link or a warning fails (the suite checks it too).
# NO_MKDOCS_2_WARNING: no end-of-life banner from the Material theme.
docs: $(VENV)/.installed-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache labextension/dist labextension/lib labextension/node_modules
