# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test score bench clean

# hatch_build.py compiles pipeline/_tiles.c at install: a changed kernel needs a reinstall
$(BIN)/sopline: pyproject.toml hatch_build.py pipeline/_tiles.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/sopline

## Build the SOP for the bundled example recording into out/examples/.
demo: install
	$(BIN)/sopline build examples -o out/examples
	@echo "open out/examples/deploy-checkout/sop.md"

## Run the test suite (real recordings, real ffmpeg, the real bundled model).
test: install
	$(BIN)/pytest -q

## Score SOPs for the shared corpus and our own scenarios against their truth files.
score: install
	PATH=$(abspath $(BIN)):$$PATH bench/score_corpus.sh out/score ../shared/corpus/recordings

clean:
	rm -rf out .pytest_cache

## Speed, memory and step-finding accuracy against the decode and speech floors and
## PySceneDetect, on the corpus and 10/30-minute loops at 720p/1080p (about an hour on
## 2 cores; figures only, never run in CI). `bench/run_bench.py --quick` is the corpus alone.
bench: install
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/run_bench.py --minutes 10 30 --heights 720 1080 --summary bench/results/summary.json
