#!/usr/bin/env bash
# Create a venv and install semmem with its pinned dependencies (`make venv` and `make dist` call this).
# The installer is uv (pinned below, bootstrapped into the venv by pip): it installs in parallel and links files from
# its cache (~/.cache/uv, or UV_CACHE_DIR) instead of unpacking every wheel again, so a second venv with the same
# packages (make dist's) takes seconds; like pip, it compiles the packages' bytecode at install. UV names another uv
# binary to use (make dist passes .venv's, so the packed venv does not carry uv).
# torch: the CPU wheel torch==2.13.0+cpu when pip finds it on local disk (its find-links: PIP_FIND_LINKS or pip.conf),
# else PyPI's torch==2.13.0 (the CUDA build: about 3 GB of wheels).
# SPARK=3.5 installs the Spark 3.5 LTS build instead of pyproject.toml's pyspark 4.x (constraints-spark3.5.txt, as uv
# overrides) and the sparknlp extra (embed.engine=spark-nlp, whose jars need Scala 2.12); JARS names the folder the
# jars go to (default .jars).
# Usage: tools/install-venv.sh VENV [EXTRAS [WHEEL]]: semmem from WHEEL (a built wheel, for `make dist`), else this
# checkout in editable mode, followed by the jars of tools/fetch-jars.sh.
set -euo pipefail
venv=${1:-.venv}
extras=${2:-dev}
wheel=${3:-}
python=${PYTHON:-python3}
uv_version=0.13.9
test -x "$venv/bin/python" || "$python" -m venv "$venv"
uv=${UV:-$venv/bin/uv}
"$uv" --version 2>/dev/null | grep -q " $uv_version" || "$venv/bin/pip" install -q "uv==$uv_version"
# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set, no .pyc is ever written at import, so without it every
# Python process (each test's `semmem`, each Spark worker) would compile torch and the rest from source again.
install=("$uv" pip install -q --compile-bytecode --python "$venv/bin/python")
case "${SPARK:-4}" in
  4) ;;
  3.5) echo "install: Spark 3.5 LTS (constraints-spark3.5.txt), with spark-nlp"
       install+=(--override constraints-spark3.5.txt); extras="$extras,sparknlp" ;;
  *) echo "install: SPARK=$SPARK: expected 4 (the default) or 3.5" >&2; exit 2 ;;
esac
if [ -n "$wheel" ]; then target=("$wheel[$extras]"); else target=(-e ".[$extras]"); fi
if "$venv/bin/pip" install -q --dry-run --no-index --no-deps -c constraints-cpu.txt torch >/dev/null 2>&1; then
  echo "install: torch from the local CPU wheel (constraints-cpu.txt)"
  links=${PIP_FIND_LINKS:-$("$venv/bin/pip" config get global.find-links 2>/dev/null || true)}
  for link in $links; do install+=(--find-links "$link"); done
  install+=(-c constraints-cpu.txt)
else
  echo "install: no local CPU wheel of torch 2.13.0 in pip's find-links; installing PyPI's torch==2.13.0 (CUDA build, ~3 GB)"
fi
"${install[@]}" "${target[@]}"
"$venv/bin/python" -c 'import torch; print(f"install: torch {torch.__version__}")'
[ -n "$wheel" ] || tools/fetch-jars.sh "${JARS:-.jars}" "$venv/bin/python"
