# `make run` and `make test` create .venv on first use (pinned lock file, plus
# the runtime compatibility step where this machine's C/C++ runtime is older
# than the wheels need), then reuse it: a second call installs nothing.
# uv copies files (--link-mode copy) because the compatibility step patches
# two extensions in place, which must not reach uv's cache through hardlinks.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
READY := $(VENV)/.ready
# The optional Airflow group (requirements/airflow.lock: the main lock plus Airflow 2).
AIRFLOW_READY := $(VENV)/.airflow-ready
# The wheels of ml-metadata and TFDV 1.21 exist only for manylinux_2_39.
PLATFORM := x86_64-manylinux_2_39
PYTEST_ARGS ?=
# Test worker processes (pytest-xdist), each given whole files; 0 runs the suite in this process.
TEST_WORKERS ?= 2

.PHONY: env run test lint lock clean

env: $(READY)

$(READY): requirements/requirements.lock requirements/tools.txt setup.py \
          tools/runtime_compat/patch.py tools/runtime_compat/shim.cc
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/tools.txt
	$(VENV)/bin/uv pip install --python $(PY) --python-platform $(PLATFORM) \
	    --link-mode copy -r requirements/requirements.lock
	$(VENV)/bin/uv pip install --python $(PY) --no-deps -e .
	$(PY) tools/runtime_compat/patch.py
	$(PY) -c 'import ml_metadata.metadata_store, tensorflow_data_validation'
	touch $@

$(AIRFLOW_READY): $(READY) requirements/airflow.lock
	$(VENV)/bin/uv pip install --python $(PY) --python-platform $(PLATFORM) \
	    --link-mode copy -r requirements/airflow.lock
	$(PY) tools/runtime_compat/patch.py
	$(PY) -c 'import airflow, ml_metadata.metadata_store, tensorflow_data_validation'
	touch $@

run: $(READY)
	$(PY) run_local.py $(ARGS)

# The test target also installs the Airflow group (the Airflow DAG is tested
# against a real Airflow 2). MariaDB (from Debian's packages, where this machine can install them) lets
# the MySQL ML Metadata test run; without it that one test is skipped.
test: lint $(AIRFLOW_READY)
	sh tools/install_mariadb.sh
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The lint configuration is pyproject.toml's [tool.ruff].
lint: $(READY)
	$(VENV)/bin/ruff check .

# Re-resolve the pinned, hashed closures of requirements/*.in (the tools within the main lock's versions).
lock: $(READY)
	$(VENV)/bin/uv pip compile --python-version 3.11 --python-platform $(PLATFORM) \
	    --generate-hashes requirements/requirements.in -o requirements/requirements.lock
	$(VENV)/bin/uv pip compile --python-version 3.11 --python-platform $(PLATFORM) \
	    --generate-hashes requirements/airflow.in -o requirements/airflow.lock
	$(VENV)/bin/uv pip compile --python-version 3.11 --python-platform $(PLATFORM) \
	    --generate-hashes -c requirements/requirements.lock requirements/tools.in -o requirements/tools.txt

clean:
	rm -rf $(VENV) outputs
