# semmem — run `make help` for the targets.
SHELL := /bin/bash
PYTHON ?= python3
# SPARK=3.5: the Spark 3.5 LTS build (constraints-spark3.5.txt) in its own venv and jars folder, beside the default 4.x
SPARK ?= 4
ifeq ($(SPARK),3.5)
VENV := .venv-spark3.5
JARS := .jars-spark3.5
else ifeq ($(SPARK),4)
VENV := .venv
JARS := .jars
else
$(error SPARK=$(SPARK): expected 4 (the default) or 3.5)
endif
export SPARK
BIN := $(VENV)/bin
CONFIG ?= conf/local.yaml
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)

.PHONY: help venv jars run test test-delta cluster-test s3-test integration-test spark3.5-test dist dist-test bench gpu-check capacity sample tables clean

help:  ## list the targets
	@grep -E '^[a-z0-9.-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints-cpu.txt constraints-spark3.5.txt tools/install-venv.sh tools/fetch-jars.sh
	PYTHON=$(PYTHON) JARS=$(JARS) tools/install-venv.sh $(VENV) dev
	touch $@

venv: $(VENV)/.installed  ## create .venv: semmem pinned (torch: local CPU wheel, else PyPI's), jars; SPARK=3.5: its own

jars:  ## fetch the Delta jars (.jars/) and hadoop-aws (.jars/s3) from Maven Central (delta-rs / no S3 without)
	tools/fetch-jars.sh $(JARS) $(BIN)/python

run: venv  ## run the whole pipeline on the bundled sample (CONFIG=conf/local.yaml)
	$(BIN)/semmem run --config $(CONFIG)

test: venv  ## run the test suite (CPU; the GPU tests too where CUDA is present), in two pytest workers
	$(BIN)/pytest -q -n 2 --durations=15

test-delta: venv  ## the delta-spark backend tests, in a session with the Delta jars of .jars/ (skipped without them)
	@if ls $(JARS)/delta-spark_*.jar >/dev/null 2>&1; then SEMMEM_TEST_DELTA_JARS=$(abspath $(JARS)) $(BIN)/pytest -q -m delta_spark tests/test_delta_spark.py; \
	else echo "test-delta: skipped: no Delta jar in $(JARS)/ (Maven Central unreachable at install?); run make jars"; fi

cluster-test: venv  ## the pipeline (small corpus) by spark-submit on a standalone cluster on 127.0.0.1, one worker killed
	$(BIN)/pytest -q -m cluster tests/test_cluster.py

s3-test: venv  ## warehouse and corpora on an S3 server on 127.0.0.1 (moto), both Delta backends, vs local runs
	$(BIN)/pytest -q -m s3 tests/test_s3.py

integration-test: venv  ## s3-test and cluster-test in one pytest process: their local run of the small pipeline once
	$(BIN)/pytest -q -m "s3 or cluster" tests/test_s3.py tests/test_cluster.py

spark3.5-test:  ## Spark 3.5 (.venv-spark3.5): delta-spark tests; the embedded default on a 3.5 cluster = 4.x's; spark-nlp
	$(MAKE) SPARK=3.5 venv
	$(MAKE) SPARK=3.5 test-delta
	.venv-spark3.5/bin/pytest -q -rs -m spark35 tests/test_spark_versions.py tests/test_embeddings_sparknlp.py

dist: venv  ## dist/: semmem's wheel, a venv-pack'ed venv for spark-submit --archives, jobs/ and conf/ (~2 min)
	tools/make-dist.sh dist

dist-test: dist  ## spark-submit of dist/jobs on a standalone cluster, executors on the packed venv (--archives)
	$(BIN)/pytest -q -rs -m dist tests/test_dist.py

bench: venv  ## benchmarks: ratios against baselines measured in the same run
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

gpu-check: venv  ## GPU tests + GPU benches (scoring, embed, semantic, family, localize) in <= 8 min: one table (no CUDA: says so)
	$(BIN)/python tools/gpu_check.py

capacity: venv  ## bits per parameter on random data (stage capacity, Morris et al.; 5 min on 2 cores)
	$(BIN)/semmem run --config $(CONFIG) --stages capacity

sample: venv  ## regenerate the bundled sample corpus (byte-identical)
	$(BIN)/python -m semmem.sample

tables: venv  ## list the tables of the default warehouse
	$(BIN)/semmem tables --warehouse warehouse

clean:  ## remove the default warehouse and caches (keeps .venv)
	rm -rf warehouse spark-warehouse metastore_db derby.log .pytest_cache
