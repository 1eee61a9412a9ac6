"""The one SparkSession factory: local[*] by default, whatever spark-submit says otherwise."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from semmem import storage
from semmem.compat import SCALA, VERSION, map_batches
from semmem.config import Config
from semmem.errors import ConfigError

# Settings every semmem session needs; conf/*.yaml `spark.conf` entries win over them.
BASE_CONF: dict[str, str] = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "4096",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",  # semmem prints its own progress lines
    "spark.python.worker.reuse": "true",  # models are cached per Python worker
}


def build_session(cfg: Config) -> SparkSession:
    """Create (or return the running) SparkSession for `cfg`.

    Workers run the same interpreter as the driver (PYSPARK_PYTHON), so a venv's packages are always visible to them.
    Under spark-submit the master and resources come from its command line; we only set what it left unset.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    storage.configure(cfg.storage.endpoint_url, cfg.storage.region)
    builder = SparkSession.builder.appName(cfg.spark.app_name)
    conf = {**BASE_CONF, **storage.spark_conf()}
    jars: list[str] = []
    s3 = uses_object_store(cfg)
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # launched by spark-submit: the classpath is set already
    if not submitted:
        builder = builder.master(cfg.spark.master)
        if cfg.spark.delta_jars:
            delta = delta_conf(cfg.spark.delta_jars)
            jars += delta.pop("spark.jars").split(",")
            conf.update(delta)
        if s3:
            jars += s3_jars(cfg.storage.s3_jars)
        if cfg.embed.engine == "spark-nlp":
            jars += sparknlp_jars(cfg.embed.sparknlp_jars)
    if jars:
        conf["spark.jars"] = ",".join(jars)
    for key, value in {**conf, **cfg.spark.conf}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if s3 and not _has_class(spark, "org.apache.hadoop.fs.s3a.S3AFileSystem"):
        raise ConfigError("the warehouse or the input is on S3, but this Spark session has no hadoop-aws jar: pass "
                          f"--packages org.apache.hadoop:hadoop-aws:{hadoop_version()} to spark-submit (or --jars with "
                          "the jars of `make jars` in .jars/s3)")
    return spark


def hadoop_version() -> str:
    """The Hadoop client version pyspark ships (hadoop-aws must match it)."""
    import pyspark

    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
    return jars[0].name.removeprefix("hadoop-client-api-").removesuffix(".jar") if jars else "<Hadoop version>"


def uses_object_store(cfg: Config) -> bool:
    """True when the warehouse or an input path is an S3 URI."""
    return any(storage.is_remote(p) for p in [cfg.warehouse, *cfg.input.path])


def _jars_with(folder: str, prefix: str) -> list[str]:
    """Every jar in `folder` (relative: to the working directory, else to the semmem checkout, where `make jars`
    puts them) when one of them is named prefix*, else []."""
    candidates = [Path(folder)]
    if not Path(folder).is_absolute():
        candidates.append(Path(__file__).resolve().parents[1] / folder)
    for where in candidates:
        jars = sorted(where.glob("*.jar"))
        if any(j.name.startswith(prefix) for j in jars):
            return [str(j.absolute()) for j in jars]
    return []


def sparknlp_jars(folder: str) -> list[str]:
    """spark-nlp's jar (the Scala 2.12 build Maven Central serves) and the runtime jars its ONNX models need, from
    `folder`, or a ConfigError that says how to get them."""
    jars = _jars_with(folder, "spark-nlp_2.12-")
    if not jars:
        raise ConfigError(f"embed.engine=spark-nlp, but embed.sparknlp_jars={folder} holds no spark-nlp_2.12-*.jar: "
                          "run `make venv SPARK=3.5` (it fetches them from Maven Central into .jars-spark3.5/nlp)")
    return jars


def s3_jars(folder: str) -> list[str]:
    """The hadoop-aws jar and its AWS SDK from `folder`, or a ConfigError that says how to get them."""
    jars = _jars_with(folder, "hadoop-aws-")
    if jars:
        return jars
    raise ConfigError(f"the warehouse or the input is on S3, but storage.s3_jars={folder} holds no hadoop-aws jar: "
                      "run `make jars` (needs Maven Central), or set storage.s3_jars to a folder with "
                      f"hadoop-aws-{hadoop_version()}.jar and the AWS SDK bundle it depends on")


def _has_class(spark: SparkSession, name: str) -> bool:
    try:
        jvm = spark.sparkContext._jvm  # noqa: SLF001 - the only way to probe the classpath
        jvm.java.lang.Class.forName(name, True, jvm.Thread.currentThread().getContextClassLoader())
        return True
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False


def delta_conf(folder: str) -> dict[str, str]:
    """Session settings that put the Delta jars of `folder` on the classpath with Delta's extension and catalog."""
    jars = sorted(Path(folder).absolute().glob("delta-*.jar"))
    if not any(j.name.startswith("delta-spark_") for j in jars):
        raise ConfigError(f"spark.delta_jars={folder}: no delta-spark jar there; run `make jars` (needs Maven "
                          "Central), or leave spark.delta_jars empty to write the tables with delta-rs")
    other = [j.name for j in jars
             if j.name.startswith("delta-spark_") and not j.name.startswith(f"delta-spark_{SCALA}-")]
    if other:
        raise ConfigError(f"spark.delta_jars={folder}: {other[0]} is built for another Scala than this pyspark "
                          f"{VERSION} (Scala {SCALA}): `make venv SPARK=3.5` puts Spark 3.5's Delta jars in "
                          ".jars-spark3.5, the default venv's in .jars")
    return {"spark.jars": ",".join(str(j) for j in jars),
            "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog"}


def delta_jar_available(spark: SparkSession) -> bool:
    """True when delta-spark's classes are on the classpath and its session extension is configured."""
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    return "io.delta.sql.DeltaSparkSessionExtension" in extensions and _has_class(spark, "io.delta.tables.DeltaTable")


def default_parallelism(spark: SparkSession) -> int:
    return max(1, spark.sparkContext.defaultParallelism)


def tasks_per_executor(spark: SparkSession) -> int:
    """How many tasks an executor runs at once: all local cores in local mode, else spark.executor.cores /
    spark.task.cpus (1 when spark.executor.cores is unset: set it where executors take several cores)."""
    conf = spark.sparkContext.getConf()
    cpus = max(1, int(conf.get("spark.task.cpus", "1")))
    local = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", spark.sparkContext.master)
    if local:
        cores = (os.cpu_count() or 1) if local.group(1) == "*" else int(local.group(1) or 1)
        return max(1, cores // cpus)
    return max(1, int(conf.get("spark.executor.cores", "1")) // cpus)


def executor_gpus(spark: SparkSession) -> float:
    """GPUs each executor has (spark.executor.resource.gpu.amount; 0 when unset)."""
    return float(spark.sparkContext.getConf().get("spark.executor.resource.gpu.amount", "0") or 0)


def gpu_task_profile(spark: SparkSession):
    """A TaskResourceProfile asking one GPU per task (and the executor's cores per GPU), when executors have GPUs
    (spark.executor.resource.gpu.amount > 0); None otherwise. Stages run under it only where a model needs it."""
    gpus = executor_gpus(spark)
    if gpus <= 0:
        return None
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    cpus = max(1, int(int(spark.sparkContext.getConf().get("spark.executor.cores", "1")) // gpus))
    return ResourceProfileBuilder().require(TaskResourceRequests().cpus(cpus).resource("gpu", 1.0)).build


def gpu_slots(spark: SparkSession) -> int:
    """How many one-GPU tasks the cluster runs at once: executors x GPUs per executor."""
    sc = spark.sparkContext
    executors = max(sc._jsc.sc().getExecutorIds().size(),  # noqa: SLF001 - registered executors
                    int(sc.getConf().get("spark.executor.instances", "0") or 0), 1)
    return max(1, int(executors * executor_gpus(spark)))


def per_distinct_text(sequences: DataFrame, udf: Callable[[Column], Column] | None, name: str,
                      partitions: int | None = None, *,
                      transform: Callable[[DataFrame], DataFrame] | None = None) -> DataFrame:
    """sequences(sequence_id, text) -> (sequence_id, <name>): a model run once per distinct text (a NULL text is ""),
    laid out by model_tasks, and its value given to every sequence with that text: identical texts get identical
    values, and a text repeated 10^5 times costs one model call. The model: `udf` (a predict_batch_udf) on column
    text, or `transform` (a JVM model such as a spark-nlp annotator) adding column <name> to the (text, ids) rows."""
    texts = (sequences.select("sequence_id", F.coalesce(F.col("text"), F.lit("")).alias("text"))
             .groupBy("text").agg(F.collect_list("sequence_id").alias("ids")))
    laid_out = model_tasks(texts, "text", partitions)
    scored = transform(laid_out) if transform else laid_out.select("ids", udf(F.col("text")).alias(name))
    return scored.select(F.explode("ids").alias("sequence_id"), name)


def model_tasks(df: DataFrame, order: str, partitions: int | None = None) -> DataFrame:
    """`df` laid out for the model that runs next in the same Spark stage (a predict_batch_udf projection).

    With executor GPUs: partitioned into the GPU task slots and passed through a mapInArrow under
    `gpu_task_profile`, which puts the whole stage (and so the model) one task per GPU; the CPU stages keep the
    default profile and every core. Without: partitioned into `partitions` tasks when given, else unchanged.

    The model must see the same batches on every run: a text batched with other texts is padded and multiplied
    differently (sentence-transformers moves a vector by ~1e-7). So rows are hash-partitioned by `order` (a unique
    column): a row's task depends on its key and the task count only, not on how the input was laid out (adaptive
    execution coalesces a shuffle by the cluster's cores at that moment); and each task's rows are sorted by it (a
    shuffle delivers them in fetch order).
    """
    profile = gpu_task_profile(df.sparkSession)
    if profile is None:
        return (df.repartition(partitions, order) if partitions else df).sortWithinPartitions(order)
    laid_out = df.repartition(gpu_slots(df.sparkSession), order).sortWithinPartitions(order)
    return map_batches(laid_out, _unchanged, df.schema, arrow=True, profile=profile)


def spread_partitions(spark: SparkSession) -> int:
    """Tasks to spread a repartitioned input over (a model over the distinct texts, the forecast's sequences): Spark
    would otherwise leave a small input in few tasks, on few cores. Every core, and at least
    spark.sql.shuffle.partitions (a fixed count, so a local run and a cluster run of up to that many cores batch the
    texts alike)."""
    return max(default_parallelism(spark), int(spark.conf.get("spark.sql.shuffle.partitions")))


def _unchanged(batches):
    yield from batches


def task_cpus() -> int:
    """CPU cores Spark gave the running task (spark.task.cpus); all cores outside a task. Torch in a task uses this
    many threads, so concurrent tasks do not oversubscribe the executor."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return max(1, int(ctx.cpus())) if ctx is not None else max(1, os.cpu_count() or 1)


def one_task_each(spark: SparkSession, rows: list[tuple], schema: str) -> DataFrame:
    """`rows` as a DataFrame with one partition per row: each unit of work listed on the driver (a shard, a grid
    block, a model to train) becomes its own Spark task."""
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, max(1, len(rows))), schema)
