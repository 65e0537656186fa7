# Two commands for a newcomer:  `make queries` (runs on the embedded sample) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
CACHE  ?= .cache/sample
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1

WIKI_DUMP := $(CACHE)/enwiki/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2
WORDNET   := $(CACHE)/wordnet-base/usr/share/wordnet

# The sample dump has ~450k words, 10,000x fewer than English Wikipedia, so the defaults
# (count >= 100) would leave unigrams and bigrams nearly empty. These thresholds let every
# source contribute, per recipe (ARGS="--recipe metaclip"); see README "Sample thresholds".
SAMPLE_CLIP_ARGS     ?= --min-count 20 --min-bigram-count 5 --min-pmi 10
SAMPLE_METACLIP_ARGS ?= --min-count 20 --min-pmi 14
SAMPLE_QUERY_ARGS ?= $(if $(findstring metaclip,$(ARGS)),$(SAMPLE_METACLIP_ARGS),$(SAMPLE_CLIP_ARGS))
# ~6,200 sample pairs over ~90k queries: a cap of 100 pairs per query (CLIP: 20,000) makes
# balancing visibly drop pairs of the most frequent queries. See README "Sample shards".
SAMPLE_SHARD_ARGS ?= --per-query 100 --samples-per-shard 1000
# ~4,200 training pairs on 2 CPU cores: a small ViT (train/model_configs/tiny-ViT-64.json),
# 2 gloo processes x 64 = 128 pairs a step, 400 steps (~12 epochs) in about 10 minutes, zero-shot
# evaluation every 100 steps and the linear/few-shot probes at the end; then the overlap analysis.
NPROC ?= 2
SAMPLE_TRAIN_ARGS ?= --model tiny-ViT-64 --steps 400 --batch-size 64 --lr 1e-3 --warmup 50 \
	--save-every 100 --log-every 20 --workers 1 --eval-every 100 --linear-probe

.PHONY: help setup sample-data browser queries queries-worldwide shards train overlap audit browse lint test test-unit test-fast \
	bench-queries bench-fullscale bench-match bench-download bench-scale bench-train bench-overlap bench-eval bench-browse bench-lid bench-worldwide bench-balance bench-pool-formats bench-loader clean
# `make help` lists every target that has a `## text` after its prerequisites (tests/test_makefile.py
# checks that each .PHONY target has one), so the list cannot drift from the targets.
help: ## this list
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-zA-Z_-]+):.*## (.*)/\1\t\2/' | \
		awk -F '\t' '{ printf "make %-16s %s\n", $$1, $$2 }'

setup: $(VENV)/.installed  ## create .venv (VENV=...) with the pinned stack
$(VENV)/.installed: requirements/base.txt requirements/constraints.txt requirements/no-deps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements/base.txt -c requirements/constraints.txt
	$(PY) -m pip install --quiet --no-deps -r requirements/no-deps.txt
	touch $@

sample-data: $(CACHE)/.complete  ## fetch the sample inputs into .cache/sample (CACHE=...)
$(CACHE)/.complete: $(VENV)/.installed pipeline/sample/fetch.py pipeline/sample/multiwiki.py
	$(PY) -m pipeline.sample.fetch --cache $(CACHE) enwiki wordnet openclipart animal-mnist multiwiki
	touch $@

queries: sample-data  ## build query_lists/ from the embedded sample (installs what it needs)
	$(PY) -m pipeline queries --wiki-dump $(WIKI_DUMP) --wordnet $(WORDNET) \
		--out query_lists $(SAMPLE_QUERY_ARGS) $(ARGS)

query_lists/queries.parquet:
	$(MAKE) queries

# The worldwide recipe on the multilingual sample: the English sample dump beside de, ja, ru,
# th and zh ones, their pageviews and Thai's OMW lemmas. Its per-language shares need no
# sample thresholds. See README "Worldwide curation".
MULTIWIKI := $(CACHE)/multiwiki
queries-worldwide: sample-data  ## build query_lists/worldwide/ from the multilingual sample (--recipe worldwide)
	$(PY) -m pipeline queries --recipe worldwide --wiki-dump $(MULTIWIKI) --wiki-dump en=$(WIKI_DUMP) \
		--wordnet $(WORDNET) --omw $(MULTIWIKI)/omw --pageviews $(MULTIWIKI)/pageviews-sample \
		--out query_lists/worldwide $(ARGS)

shards: sample-data query_lists/queries.parquet  ## collect, balance and download the sample into shards/ (after queries)
	$(PY) -m pipeline shards --sample-openclipart $(CACHE) --out shards $(SAMPLE_SHARD_ARGS) $(ARGS)

shards/00000.tar:
	$(MAKE) shards

train: sample-data shards/00000.tar  ## train a small CLIP on the sample shards: zero-shot, probes, overlap, runs/sample/report.html, export (after shards)
	$(BIN)/torchrun --standalone --nproc_per_node $(NPROC) -m train --train-data 'shards/[0-9]*.tar' \
		--name sample --resume latest $(SAMPLE_TRAIN_ARGS) $(ARGS)
	$(PY) -m train.overlap --checkpoint runs/sample
	$(PY) -m train.export runs/sample --out runs/sample/export

# Train-test overlap of the sample run (CLIP paper, sec. 5): runs/sample/eval/overlap.json + overlap_pairs.parquet
overlap: sample-data shards/00000.tar  ## how much of each evaluation set is in the shards, and its effect on zero-shot (after train)
	$(PY) -m train.overlap --checkpoint runs/sample $(ARGS)

audit: sample-data shards/00000.tar  ## write shards/audit/report.html, summary.json, report.md (after shards)
	$(PY) -m pipeline audit --queries query_lists --shards shards $(ARGS)

# The dataset browser: a local web app on 127.0.0.1 only (ARGS='--port 0' picks a free port).
browse: sample-data shards/00000.tar  ## serve the dataset browser on the sample shards (http://127.0.0.1:8765/, Ctrl-C stops it)
	$(PY) -m pipeline browse --queries query_lists --shards shards $(ARGS)

# The audit report's render test opens it in a headless browser: Debian's chromium.
browser:  ## install headless Chromium (Debian) for the page-rendering tests
	@command -v chromium >/dev/null || { apt-get update && apt-get install -y --no-install-recommends chromium; }

# The suite runs on TEST_WORKERS pytest-xdist processes (2: CI's cores; TEST_WORKERS=0 runs it in
# this process). A test file stays on one worker, and so do the users of the Ray cluster and of
# the trained run (tests/conftest.py's scheduler; --dist only starts xdist's distributed mode), so
# no fixture is built twice.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)
test: sample-data browser  ## run the whole test suite (what .ci/run runs after lint)
	WIKI_SAMPLE_DUMP=$(abspath $(WIKI_DUMP)) WORDNET_DIR=$(abspath $(WORDNET)) OPENCLIPART_DIR=$(abspath $(CACHE)) \
		ANIMAL_MNIST_DIR=$(abspath $(CACHE))/animal-mnist MULTIWIKI_SAMPLE_DIR=$(abspath $(MULTIWIKI)) \
		$(PY) -m pytest -q $(XDIST) --durations=30 $(PYTEST_ARGS)

# ruff (lint, then format --check) and mypy over the code; .ci/run runs it before the tests.
LINT_PATHS := pipeline train tests bench
lint: setup  ## ruff check, ruff format --check and mypy (pipeline/, train/): zero findings
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

# The unit tests alone: no sample download, no browser, no Ray cluster, no end-to-end run
# (tests marked `slow`, `sample`, `browser` or `ray` are deselected; tests/conftest.py marks
# them). About 1.5 minutes on 2 cores.
test-fast: setup  ## the unit tests only: no sample data, no browser, about 1.5 minutes on 2 cores
	$(PY) -m pytest -q $(XDIST) -m "not slow and not sample and not browser and not ray" $(PYTEST_ARGS)

test-unit: sample-data  ## the tests not marked slow (with the sample data), for the edit loop
	$(MAKE) test PYTEST_ARGS='-m "not slow" $(PYTEST_ARGS)'

bench-worldwide: sample-data  ## the worldwide recipe's bigram rules on simulated Wikipedias of 2e6-4.5e9 tokens
	WORDNET_DIR=$(abspath $(WORDNET)) $(PY) bench/queries_worldwide_sizes.py $(ARGS)

bench-lid: setup  ## language identifiers on short real texts in 30 languages: accuracy and texts/s (installs lingua, pycld2)
	$(PY) -m pip install --quiet -r requirements/bench-lid.txt -c requirements/constraints.txt
	$(PY) bench/lid.py $(ARGS)

bench-queries: sample-data  ## benchmark the query builder
	$(PY) bench/queries.py $(ARGS)

bench-fullscale: sample-data  ## what each query recipe selects on a simulated full Wikipedia
	WIKI_SAMPLE_DUMP=$(abspath $(WIKI_DUMP)) WORDNET_DIR=$(abspath $(WORDNET)) $(PY) bench/queries_fullscale.py $(ARGS)

bench-match: sample-data  ## benchmark matching captions against the query list
	$(PY) bench/match.py $(ARGS)

bench-download: sample-data  ## benchmark the downloader against a loopback server
	$(PY) bench/download.py $(ARGS)

# pool -> match -> balance on --engine local and ray at 1M and 10M synthetic rows (~20 min on 2 cores)
bench-scale: sample-data  ## pool/match/balance at 1M and 10M rows, local vs Ray (~20 min on 2 cores)
	WORDNET_DIR=$(abspath $(WORDNET)) $(PY) bench/scale.py $(ARGS)

bench-train: sample-data shards/00000.tar  ## benchmark the trainer's throughput (after shards)
	$(PY) bench/train.py $(ARGS)

bench-overlap: sample-data shards/00000.tar  ## the overlap scan's cost per million shard images (after shards)
	$(PY) bench/overlap.py $(ARGS)

bench-eval: setup  ## zero-shot evaluation on a 50,000-image webdataset set vs the decode-only floor (~10 min)
	$(PY) bench/evaluate.py $(ARGS)

bench-balance: setup  ## balancing while training: loader throughput per kept sample at 50% keep vs an offline-balanced set, local and S3 (moto)
	$(PY) bench/balance.py $(ARGS)

bench-loader: sample-data shards/00000.tar  ## the training loader per core at 224 and 64 px vs the decode floor and an open_clip-style pipeline, with a per-stage breakdown (after shards)
	$(PY) bench/loader.py $(ARGS)

bench-pool-formats: setup  ## a 1M-row DataComp-shaped pool: pool/match/balance/subset with --pool-format datacomp vs url/text only
	$(PY) bench/pool_formats.py $(ARGS)

bench-browse: setup  ## the dataset browser's start-up and page cost vs scanning the shards per page (2M synthetic rows)
	$(PY) bench/browse.py $(ARGS)

clean:  ## remove generated query lists, shards and runs
	rm -rf query_lists/*.parquet query_lists/*.txt query_lists/*.json query_lists/.work query_lists/.lock
	find shards -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null || true
	rm -rf runs
