#!/usr/bin/env bash
# Fetch jars from Maven Central into a project-local cache (`make jars`; `make venv` calls it):
# - DIR: io.delta:delta-spark_<Scala> and io.delta:delta-storage at the version pyproject.toml pins for delta-spark
#   (constraints-spark3.5.txt's, Scala 2.12, for a Spark 3.5 venv; the rest of its dependency tree is in pyspark);
# - DIR/s3: org.apache.hadoop:hadoop-aws at pyspark's Hadoop version, with its runtime dependencies (the AWS SDK
#   bundle, ~690 MB): Spark's S3A filesystem, for warehouses and corpora on S3.
# - DIR/nlp, Scala 2.12 (Spark 3.5) only: spark-nlp_2.12 at pyproject.toml's spark-nlp pin and the jars its ONNX
#   embeddings load (~150 MB). Not its whole dependency tree: three of its John Snow Labs jars (TensorFlow, llama.cpp,
#   OpenVINO builds) are not on Maven Central, and embed.engine=spark-nlp needs none of them.
# Never fails the install: where Maven Central cannot be reached, semmem writes its tables with delta-rs and says so,
# and S3 locations need the jars passed to spark-submit instead.
# Usage: tools/fetch-jars.sh [DIR [PYTHON]]   (default .jars, .venv/bin/python)
set -uo pipefail
dir=${1:-.jars}
python=${2:-.venv/bin/python}
# the Delta release and Scala build of the venv's pyspark: pyproject.toml's pin for 4.x, constraints-spark3.5.txt's
# for 3.5
scala=$("$python" -c 'from semmem.compat import SCALA; print(SCALA)' 2>/dev/null)
if [ "$scala" = 2.12 ]; then pins=constraints-spark3.5.txt; else scala=2.13; pins=pyproject.toml; fi
version=$(sed -n 's/.*delta-spark==\([0-9.]*\).*/\1/p' "$pins" | head -1)
if [ -z "$version" ]; then echo "fetch-jars: no delta-spark pin in $pins" >&2; exit 1; fi
hadoop=$("$python" -c 'from semmem.spark import hadoop_version; print(hadoop_version())' 2>/dev/null)

have_delta() { [ -f "$dir/delta-spark_$scala-$version.jar" ] && [ -f "$dir/delta-storage-$version.jar" ]; }
# the AWS SDK: v2's bundle-*.jar (Hadoop 3.4+), v1's aws-java-sdk-bundle-*.jar (Hadoop 3.3, Spark 3.5)
have_s3() { [ -n "$hadoop" ] && [ -f "$dir/s3/hadoop-aws-$hadoop.jar" ] && \
  { compgen -G "$dir/s3/bundle-*.jar" || compgen -G "$dir/s3/aws-java-sdk-bundle-*.jar"; } >/dev/null; }

if ! command -v mvn >/dev/null 2>&1; then
  have_delta || echo "install: no Maven here, so no Delta jar: tables are written by delta-rs (delta-spark tests will be skipped)"
  have_s3 || echo "install: no Maven here, so no hadoop-aws jar: S3 warehouses need it passed to spark-submit (S3 tests will be skipped)"
  have_delta && have_s3 && echo "install: Delta and hadoop-aws jars in $dir"
  exit 0
fi
mkdir -p "$dir"

if have_delta; then
  echo "install: Delta jars $version in $dir: the delta-spark backend is available (--set spark.delta_jars=$dir)"
else
  ok=1
  for a in "io.delta:delta-spark_$scala:$version" "io.delta:delta-storage:$version"; do
    if ! mvn -q -B -U dependency:copy -Dartifact="$a" -DoutputDirectory="$dir" >"$dir/fetch.log" 2>&1; then
      echo "install: could not fetch $a from Maven Central (log: $dir/fetch.log): tables are written by delta-rs" \
           "(delta-spark tests will be skipped)"
      rm -f "$dir"/delta-*.jar
      ok=0
      break
    fi
  done
  [ "$ok" = 1 ] && rm -f "$dir/fetch.log" && \
    echo "install: Delta jars $version fetched into $dir: the delta-spark backend is available (--set spark.delta_jars=$dir)"
fi

if [ -z "$hadoop" ]; then
  echo "install: cannot tell pyspark's Hadoop version (is semmem installed in $python?): no hadoop-aws jar"
elif have_s3; then
  echo "install: hadoop-aws $hadoop jars in $dir/s3: S3 warehouses and corpora (s3://) work in local sessions"
else
  pom=$(mktemp -d)
  cat >"$pom/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
  <groupId>semmem</groupId><artifactId>s3-jars</artifactId><version>1</version>
  <dependencies><dependency><groupId>org.apache.hadoop</groupId><artifactId>hadoop-aws</artifactId>
    <version>$hadoop</version></dependency></dependencies></project>
EOF
  if mvn -q -B -U -f "$pom/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
       -DoutputDirectory="$(cd "$dir" && pwd)/s3" >"$dir/fetch-s3.log" 2>&1 && have_s3; then
    rm -f "$dir/fetch-s3.log"
    echo "install: hadoop-aws $hadoop jars fetched into $dir/s3: S3 warehouses and corpora (s3://) work in local sessions"
  else
    rm -rf "$dir/s3"
    echo "install: could not fetch org.apache.hadoop:hadoop-aws:$hadoop from Maven Central (log: $dir/fetch-s3.log):" \
         "S3 locations need the jars passed to spark-submit (S3 tests will be skipped)"
  fi
  rm -rf "$pom"
fi
# spark-nlp for embed.engine=spark-nlp: its jar and what loading an ONNX model into E5Embeddings touches (checked
# class by class on pyspark 3.5.9: the AWS SDK v1 pieces of its model downloader, TensorFlow's Java API classes)
nlp_version=$(sed -n 's/.*spark-nlp==\([0-9.]*\).*/\1/p' pyproject.toml | head -1)
nlp_jars=("com.johnsnowlabs.nlp:spark-nlp_2.12:$nlp_version" "com.microsoft.onnxruntime:onnxruntime:1.19.2"
  "com.amazonaws:aws-java-sdk-core:1.12.500" "com.amazonaws:aws-java-sdk-s3:1.12.500"
  "com.amazonaws:aws-java-sdk-kms:1.12.500" "com.amazonaws:jmespath-java:1.12.500" "software.amazon.ion:ion-java:1.0.2"
  "org.tensorflow:ndarray:0.4.0" "org.tensorflow:tensorflow-core-api:0.4.0")
have_nlp() { [ -f "$dir/nlp/spark-nlp_2.12-$nlp_version.jar" ] && \
  [ "$(compgen -G "$dir/nlp/*.jar" | wc -l)" -ge "${#nlp_jars[@]}" ]; }
if [ "$scala" = 2.12 ]; then
  if have_nlp; then
    echo "install: spark-nlp $nlp_version jars in $dir/nlp: embed.engine=spark-nlp is available"
  else
    mkdir -p "$dir/nlp"
    for a in "${nlp_jars[@]}"; do
      if ! mvn -q -B -U dependency:copy -Dartifact="$a" -DoutputDirectory="$dir/nlp" >"$dir/fetch-nlp.log" 2>&1; then
        echo "install: could not fetch $a from Maven Central (log: $dir/fetch-nlp.log): no embed.engine=spark-nlp" \
             "(its tests will be skipped)"
        rm -rf "$dir/nlp"
        break
      fi
    done
    have_nlp && rm -f "$dir/fetch-nlp.log" && echo "install: spark-nlp $nlp_version jars fetched into $dir/nlp:" \
      "embed.engine=spark-nlp is available"
  fi
fi
exit 0
