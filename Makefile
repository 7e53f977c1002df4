# The two set-up commands of the README:  `make demo`  and  `make test`.
# Both create .venv, install skymorph with everything it needs, then run.
VENV ?= .venv
PY := $(VENV)/bin/python
# This machine kind's PyTorch builds lie on local disk; elsewhere pick the build for your hardware.
TORCH ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_run

.PHONY: install demo test browser lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Headless Chromium for the browser test of `skymorph inspect serve` (Debian packages; needs root).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }

demo: install
	$(VENV)/bin/skymorph run --demo --out $(DEMO_OUT)

test: install browser
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
