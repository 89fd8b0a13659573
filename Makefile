# Set-up and the two entry points README.md starts with: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
INDEX_ROOT ?= data/indexes
HOST ?= 127.0.0.1
PORT ?= 8000
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo index serve test test-fast clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

# Index the bundled Cranfield corpus with all three retrievers (once), then serve it.
$(INDEX_ROOT)/cranfield/manifest.json: | $(BIN)/.installed
	$(BIN)/hybrid index build eval/datasets/cranfield --name cranfield --index-root $(INDEX_ROOT)

index: $(INDEX_ROOT)/cranfield/manifest.json

demo: index
	$(BIN)/hybrid serve --index-root $(INDEX_ROOT) --host $(HOST) --port $(PORT)

# The full suite (what .ci/run calls), and the edit-loop lane: unit tests and small real-component tests, no index
# built with the real models, no Ray (tests marked slow are left out).
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) data build *.egg-info

# The impact writer's jar (indexes/storage/lucene/java/hybrid-lucene.jar), rebuilt from its Java sources; needs a JDK
# 17+ (javac). The jar is committed: a test fails when it is stale against the sources.
.PHONY: jar
jar: | $(BIN)/.installed
	$(BIN)/python -m indexes.storage.lucene.jar

# docs/configuration.md, the reference of every setting, rendered from retrieval/core/settings.py.
.PHONY: docs
docs: | $(BIN)/.installed
	$(BIN)/python -m retrieval.core.settings_reference
