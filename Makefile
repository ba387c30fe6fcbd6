# Two commands a person needs: `make demo` and `make test`.
PY      ?= /usr/bin/python3.11
VENV    := .venv
STAMP   := $(VENV)/.installed-stamp
PYTEST  ?= -q
# torch/torchvision pinned for this machine (a CUDA build that runs on the CPU); the `train` extra keeps a
# torch>=1.13 floor for vendor images.
TORCH   := torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo test unit integration testbed-up testbed-down bench clean

$(STAMP): pyproject.toml
	@if [ "$$(id -u)" = 0 ] && ! { [ -x $(PY) ] && $(PY) -c "import ensurepip" 2>/dev/null; }; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv; fi
	test -x $(PY) || { echo "need $(PY) (Debian's python3.11: apt-get install python3.11-venv)"; exit 1; }
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[train,test]' $(TORCH)
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(VENV)/bin/orchestrate up jobs/local_cpu.yaml

# The whole suite. As root it installs the testbed's packages and starts the testbed (and stops it again
# if it started it); under CI=true the integration tier must run, so a testbed that cannot start fails.
test: venv
	@set -e; started=0; \
	if [ "$$(id -u)" = 0 ]; then \
	  tests/testbed/install-deps.sh; \
	  if ! tests/testbed/testbed.sh status >/dev/null 2>&1; then tests/testbed/testbed.sh up 4; started=1; fi; \
	elif [ "$$CI" = true ]; then echo "make test: the integration tier needs root under CI" >&2; exit 1; fi; \
	rc=0; $(VENV)/bin/python -m pytest $(PYTEST) || rc=$$?; \
	if [ $$started = 1 ] && [ "$$KEEP_TESTBED" != 1 ]; then tests/testbed/testbed.sh down || true; fi; \
	exit $$rc

unit: venv
	$(VENV)/bin/python -m pytest $(PYTEST) tests/unit tests/trainer

integration: venv
	$(VENV)/bin/python -m pytest $(PYTEST) tests/integration

testbed-up:
	tests/testbed/install-deps.sh
	tests/testbed/testbed.sh up 4

testbed-down:
	tests/testbed/testbed.sh down

bench: venv
	$(VENV)/bin/python bench/up_scaling.py

clean:
	rm -rf $(VENV) runs .pytest_cache
