# One-command set-up: `make demo` and `make test` create the venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
REQUIREMENTS := $(sort $(wildcard requirements/*.txt)) pyproject.toml
# The stamp's name is a hash of the requirement files: editing one re-runs the install, otherwise no-op.
STAMP := $(VENV)/.installed-$(shell cat $(REQUIREMENTS) | md5sum | cut -c1-12)
SAMKIT := $(BIN)/samkit

.PHONY: install test test-browser demo demo-shared demo-dementia demo-med3d demo-finetune demo-dformer bench lint doctor clean

install: $(STAMP)

$(STAMP): $(REQUIREMENTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements/dev.txt 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@$(BIN)/python -c "import torch, transformers, segment_anything, monai, peft, librosa, lion_pytorch, pycocotools, cv2" \
		|| (echo "install incomplete: see the pip output above" && exit 1)
	@rm -f $(VENV)/.installed-*
	@touch $@

test: install
	$(BIN)/python -m pytest tests -n 2 --dist loadfile

# The annotation page in a real headless Chromium (Debian's chromium + chromium-driver; no browser download).
test-browser: install
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium chromium-driver; \
		else echo "test-browser needs /usr/bin/chromium and /usr/bin/chromedriver: apt-get install chromium chromium-driver (as root)"; exit 1; fi; \
	fi
	$(BIN)/python -m pytest tests/browser -m browser

demo: install
	$(SAMKIT) demo all

demo-shared: install
	$(SAMKIT) demo shared

demo-dementia: install
	$(SAMKIT) demo siglip_sam_dementia

demo-med3d: install
	$(SAMKIT) demo sam_med3d_ich

demo-finetune: install
	$(SAMKIT) demo sam_finetune

demo-dformer: install
	$(SAMKIT) demo dformer_sam_attention

bench: install
	$(SAMKIT) bench all

# every tool at full size on one CUDA GPU (< 8 min); without a GPU it says so in one line and exits 0
gpu-check: install
	@$(SAMKIT) gpu-check

doctor: install
	$(SAMKIT) doctor

lint: install
	$(BIN)/ruff check shared projects tests

clean:
	rm -rf runs .pytest_cache .ruff_cache
