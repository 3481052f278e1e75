# Two commands: `make run` (serve on 127.0.0.1:8000 with embedded defaults) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: run test setup lock lint demo clean-data

# Python 3.12: the machine's pyenv first, then python3.12 on PATH.
PYTHON312 := $(shell (command -v pyenv >/dev/null 2>&1 && ls -d "$$(pyenv root)"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -1) || true)
ifeq ($(PYTHON312),)
PYTHON312 := $(shell ls -d $$HOME/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -1)
endif
ifeq ($(PYTHON312),)
PYTHON312 := $(shell command -v python3.12)
endif

$(PY):
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found (install it with pyenv: pyenv install 3.12)"; exit 1; }
	$(PYTHON312) -m venv $(VENV)

$(STAMP): requirements.txt requirements-nodeps.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements.txt
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -r requirements-nodeps.txt
	@touch $(STAMP)

# The official MCP TypeScript SDK for tests/test_mcp_conformance.py, from the committed package-lock.json.
JS_CONFORMANCE := tests/js/mcp-conformance
$(JS_CONFORMANCE)/node_modules/.package-lock.json: $(JS_CONFORMANCE)/package-lock.json
	cd $(JS_CONFORMANCE) && npm ci --no-audit --no-fund --ignore-scripts

setup: $(STAMP) $(JS_CONFORMANCE)/node_modules/.package-lock.json
	$(PY) manage.py migrate --noinput -v 0

run: $(STAMP)
	$(PY) manage.py serve --prepare

test: $(STAMP) $(JS_CONFORMANCE)/node_modules/.package-lock.json
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) manage.py demo

lock: | $(PY)
	$(PY) -m pip install --quiet uv==0.13.8
	$(VENV)/bin/uv pip compile --python $(PY) requirements.in -o requirements.txt

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean-data:
	rm -rf .data
