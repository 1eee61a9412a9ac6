#!/usr/bin/env bash
# Fetch the Delta Lake jars from Maven Central into a project-local cache (`make jars`; `make venv` calls it).
# io.delta:delta-spark_2.13 and io.delta:delta-storage at the version pyproject.toml pins for delta-spark, by Maven
# (dependency:copy; the rest of delta-spark's dependency tree is already in pyspark). Never fails the install: where
# Maven Central cannot be reached, semmem writes its tables with delta-rs and says so.
# Usage: tools/fetch-jars.sh [DIR]   (default .jars)
set -uo pipefail
dir=${1:-.jars}
version=$(sed -n 's/.*"delta-spark==\([0-9.]*\)".*/\1/p' pyproject.toml | head -1)
if [ -z "$version" ]; then echo "fetch-jars: no delta-spark pin in pyproject.toml" >&2; exit 1; fi
want=("io.delta:delta-spark_2.13:$version" "io.delta:delta-storage:$version")
have=1
for a in "${want[@]}"; do
  IFS=: read -r _ artifact v <<<"$a"
  [ -f "$dir/$artifact-$v.jar" ] || have=0
done
if [ "$have" = 1 ]; then
  echo "install: Delta jars $version in $dir: the delta-spark backend is available (--set spark.delta_jars=$dir)"
  exit 0
fi
if ! command -v mvn >/dev/null 2>&1; then
  echo "install: no Maven here, so no Delta jar: tables are written by delta-rs (delta-spark tests will be skipped)"
  exit 0
fi
mkdir -p "$dir"
for a in "${want[@]}"; do
  if ! mvn -q -B -U dependency:copy -Dartifact="$a" -DoutputDirectory="$dir" >"$dir/fetch.log" 2>&1; then
    echo "install: could not fetch $a from Maven Central (log: $dir/fetch.log): tables are written by delta-rs" \
         "(delta-spark tests will be skipped)"
    rm -f "$dir"/*.jar
    exit 0
  fi
done
rm -f "$dir/fetch.log"
echo "install: Delta jars $version fetched into $dir: the delta-spark backend is available (--set spark.delta_jars=$dir)"
