#!/usr/bin/env bash
# What spark-submit needs to run semmem on a cluster whose nodes have no semmem installed (`make dist`):
#   DIST/semmem-<version>-py3-none-any.whl   semmem itself
#   DIST/semmem-venv.tar.gz                  a venv with the wheel and every pinned dependency, packed by venv-pack,
#                                            for --archives DIST/semmem-venv.tar.gz#environment
#   DIST/jobs/, DIST/conf/                   the spark-submit entry points and example configs
# The venv's torch follows `make venv`'s rule (the local CPU wheel, else PyPI's CUDA build). venv-pack does not pack
# the interpreter: nodes need Python 3.11 at the same path as this machine's, or at PYTHON_PREFIX (e.g. /usr) when
# that is set; or use the images of docker/.
# Usage: [PYTHON_PREFIX=/usr] tools/make-dist.sh [DIST] (default dist)
set -euo pipefail
out=${1:-dist}
rm -rf "$out"
mkdir -p "$out"
.venv/bin/pip wheel -q --no-deps --no-build-isolation -w "$out" .
wheel=$(ls "$out"/semmem-*.whl)
build="$out/.build-venv"
tools/install-venv.sh "$build" cluster "$wheel"
.venv/bin/venv-pack -q -p "$build" -o "$out/semmem-venv.tar.gz" --compress-level 1 \
  ${PYTHON_PREFIX:+--python-prefix "$PYTHON_PREFIX"}
rm -rf "$build"
cp -r jobs conf "$out/"
echo "dist: $(du -h "$wheel" | cut -f1) $wheel; $(du -h "$out/semmem-venv.tar.gz" | cut -f1) $out/semmem-venv.tar.gz;" \
     "jobs/ and conf/ in $out"
