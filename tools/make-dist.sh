#!/usr/bin/env bash
# What spark-submit needs to run semmem on a cluster whose nodes have no semmem installed (`make dist`):
#   DIST/semmem-<version>-py3-none-any.whl   semmem itself
#   DIST/semmem-venv.tar.gz                  a venv with the wheel and every pinned dependency, packed by venv-pack,
#                                            for --archives DIST/semmem-venv.tar.gz#environment
#   DIST/jobs/, DIST/conf/                   the spark-submit entry points and example configs
# The archive is gzip at level 0 by default (stored blocks): packing 6 GB takes ~40 s instead of ~3 min at level 1
# (gzip runs on one core), for 1.6x the bytes to ship; DIST_COMPRESS_LEVEL=1..9 compresses, for a slow link to the
# cluster. It stays a .tar.gz because Spark unpacks those with tar, keeping the executable bits and the venv's
# symlinks (its own reader of a plain .tar drops both).
# The venv's torch follows `make venv`'s rule (the local CPU wheel, else PyPI's CUDA build), installed by .venv's uv
# from its cache. venv-pack does not pack the interpreter: nodes need Python 3.11 at the same path as this machine's,
# or at PYTHON_PREFIX (e.g. /usr) when that is set; or use the images of docker/.
# Usage: [PYTHON_PREFIX=/usr] [DIST_COMPRESS_LEVEL=0..9] tools/make-dist.sh [DIST] (default dist)
set -euo pipefail
out=${1:-dist}
level=${DIST_COMPRESS_LEVEL:-0}
if [[ ! "$level" =~ ^[0-9]$ ]]; then echo "make-dist: DIST_COMPRESS_LEVEL must be 0..9, not '$level'" >&2; exit 2; fi
rm -rf "$out"
mkdir -p "$out"
.venv/bin/pip wheel -q --no-deps --no-build-isolation -w "$out" .
wheel=$(ls "$out"/semmem-*.whl)
build="$out/.build-venv"
UV=.venv/bin/uv tools/install-venv.sh "$build" cluster "$wheel"
archive="$out/semmem-venv.tar.gz"
.venv/bin/venv-pack -q -p "$build" -o "$archive" --compress-level "$level" \
  ${PYTHON_PREFIX:+--python-prefix "$PYTHON_PREFIX"}
rm -rf "$build"
cp -r jobs conf "$out/"
echo "dist: $(du -h "$wheel" | cut -f1) $wheel; $(du -h "$archive" | cut -f1) $archive; jobs/ and conf/ in $out"
