# Two commands for a fresh machine (each creates .venv/ itself):
#   make demo   - run all ten nodes on the local fal emulator (no key, no network)
#   make test   - run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench setup docs

setup: $(STAMP)

# torch==2.13.0 is the CPU build these machines carry; users' ComfyUI brings its own torch.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) demo/run_demo.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)
	@command -v node >/dev/null 2>&1 || { echo "make test: Node.js (v18+) is needed for the web tests in web/tests/; install it (e.g. apt-get install nodejs)" >&2; exit 1; }
	node --test web/tests/

# The help pages in web/docs/ from the nodes' tooltips; run it after changing a node
# (tests/test_node_docs.py fails while they are stale).
docs: $(STAMP)
	$(PY) tools/make_node_docs.py

bench: $(STAMP)
	$(PY) bench/run_bench.py $(ARGS)
