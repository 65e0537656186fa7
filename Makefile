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

.PHONY: help setup sample-data browser queries shards train audit test test-unit bench-queries bench-fullscale bench-match bench-download bench-scale bench-train bench-overlap overlap clean
help:
	@echo "make queries       build query_lists/ from the embedded sample (installs what it needs)"
	@echo "make shards        collect, balance and download the sample into shards/ (after queries)"
	@echo "make train         train a small CLIP on the sample shards with $(NPROC) processes: zero-shot, probes, overlap, runs/sample/report.html, export (after shards)"
	@echo "make overlap       how much of each evaluation set is in the shards, and its effect on zero-shot (after train)"
	@echo "make audit         write shards/audit/report.html, summary.json, report.md (after shards)"
	@echo "make test          run the test suite"
	@echo "make test-unit     the fast tests only (no end-to-end runs), for the edit loop"
	@echo "make setup         create $(VENV) with the pinned stack"
	@echo "make sample-data   fetch the sample inputs into $(CACHE)"
	@echo "make bench-queries benchmark the query builder"
	@echo "make bench-fullscale what each query recipe selects on a simulated full Wikipedia"
	@echo "make bench-match   benchmark matching captions against the query list"
	@echo "make bench-download benchmark the downloader against a loopback server"
	@echo "make bench-train   benchmark the trainer's throughput (after shards)"
	@echo "make bench-overlap the overlap scan's cost per million shard images"
	@echo "make bench-scale   pool/match/balance at 1M and 10M rows, local vs Ray"

setup: $(VENV)/.installed
$(VENV)/.installed: requirements/base.txt requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements/base.txt -c requirements/constraints.txt
	touch $@

sample-data: $(CACHE)/.complete
$(CACHE)/.complete: $(VENV)/.installed pipeline/sample_data.py
	$(PY) -m pipeline.sample_data --cache $(CACHE) enwiki wordnet openclipart animal-mnist
	touch $@

queries: sample-data
	$(PY) -m pipeline queries --wiki-dump $(WIKI_DUMP) --wordnet $(WORDNET) \
		--out query_lists $(SAMPLE_QUERY_ARGS) $(ARGS)

query_lists/queries.parquet:
	$(MAKE) queries

shards: sample-data query_lists/queries.parquet
	$(PY) -m pipeline shards --sample-openclipart $(CACHE) --out shards $(SAMPLE_SHARD_ARGS) $(ARGS)

shards/00000.tar:
	$(MAKE) shards

train: sample-data shards/00000.tar
	$(BIN)/torchrun --standalone --nproc_per_node $(NPROC) -m train --train-data 'shards/[0-9]*.tar' \
		--name sample --resume latest $(SAMPLE_TRAIN_ARGS) $(ARGS)
	$(PY) -m train.overlap --checkpoint runs/sample
	$(PY) -m train.export runs/sample --out runs/sample/export

# Train-test overlap of the sample run (CLIP paper, sec. 5): runs/sample/eval/overlap.json + overlap_pairs.parquet
overlap: sample-data shards/00000.tar
	$(PY) -m train.overlap --checkpoint runs/sample $(ARGS)

audit: sample-data shards/00000.tar
	$(PY) -m pipeline audit --queries query_lists --shards shards $(ARGS)

# The audit report's render test opens it in a headless browser: Debian's chromium.
browser:
	@command -v chromium >/dev/null || { apt-get update && apt-get install -y --no-install-recommends chromium; }

test: sample-data browser
	WIKI_SAMPLE_DUMP=$(abspath $(WIKI_DUMP)) WORDNET_DIR=$(abspath $(WORDNET)) OPENCLIPART_DIR=$(abspath $(CACHE)) \
		ANIMAL_MNIST_DIR=$(abspath $(CACHE))/animal-mnist \
		$(PY) -m pytest -q $(PYTEST_ARGS)

test-unit: sample-data
	$(MAKE) test PYTEST_ARGS='-m "not slow" $(PYTEST_ARGS)'

bench-queries: sample-data
	$(PY) bench/queries.py $(ARGS)

bench-fullscale: sample-data
	WIKI_SAMPLE_DUMP=$(abspath $(WIKI_DUMP)) WORDNET_DIR=$(abspath $(WORDNET)) $(PY) bench/queries_fullscale.py $(ARGS)

bench-match: sample-data
	$(PY) bench/match.py $(ARGS)

bench-download: sample-data
	$(PY) bench/download.py $(ARGS)

# pool -> match -> balance on --engine local and ray at 1M and 10M synthetic rows (~20 min on 2 cores)
bench-scale: sample-data
	WORDNET_DIR=$(abspath $(WORDNET)) $(PY) bench/scale.py $(ARGS)

bench-train: sample-data shards/00000.tar
	$(PY) bench/train.py $(ARGS)

bench-overlap: sample-data shards/00000.tar
	$(PY) bench/overlap.py $(ARGS)

clean:
	rm -rf query_lists/*.parquet query_lists/*.txt query_lists/*.json query_lists/.work query_lists/.lock
	find shards -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null || true
	rm -rf runs
