#!/usr/bin/env bash
# Create a venv and install semmem with its pinned dependencies (`make venv` and `make dist` call this).
# torch: the CPU wheel torch==2.13.0+cpu when pip finds it on local disk (its find-links: PIP_FIND_LINKS or pip.conf),
# else PyPI's torch==2.13.0 (the CUDA build: about 3 GB of wheels).
# Usage: tools/install-venv.sh VENV [EXTRAS [WHEEL]]: semmem from WHEEL (a built wheel, for `make dist`), else this
# checkout in editable mode, followed by the jars of tools/fetch-jars.sh.
set -euo pipefail
venv=${1:-.venv}
extras=${2:-dev}
wheel=${3:-}
python=${PYTHON:-python3}
test -x "$venv/bin/python" || "$python" -m venv "$venv"
if [ -n "$wheel" ]; then target=("$wheel[$extras]"); else target=(-e ".[$extras]"); fi
pip=("$venv/bin/pip" install -q)
if "$venv/bin/pip" install -q --dry-run --no-index --no-deps -c constraints-cpu.txt torch >/dev/null 2>&1; then
  echo "install: torch from the local CPU wheel (constraints-cpu.txt)"
  "${pip[@]}" -c constraints-cpu.txt "${target[@]}"
else
  echo "install: no local CPU wheel of torch 2.13.0 in pip's find-links; installing PyPI's torch==2.13.0 (CUDA build, ~3 GB)"
  "${pip[@]}" "${target[@]}"
fi
"$venv/bin/python" -c 'import torch; print(f"install: torch {torch.__version__}")'
[ -n "$wheel" ] || tools/fetch-jars.sh .jars "$venv/bin/python"
