"""What differs between the Spark versions semmem runs on (3.5 LTS: Scala 2.12; 4.x: Scala 2.13), in one place.

Everything else is the same code on both: the calls here are the only ones whose spelling depends on the version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyspark

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)
VERSION = pyspark.__version__
SPARK_VERSION = tuple(int(x) for x in VERSION.split(".")[:2])
SPARK4 = SPARK_VERSION >= (4, 0)
SCALA = "2.13" if SPARK4 else "2.12"  # the Scala build of pyspark's bundled Spark, and so of every jar it loads
_said: set[str] = set()


def to_arrow(df: DataFrame) -> pa.Table:
    """`df` collected as one Arrow table (Spark 4's DataFrame.toArrow; on 3.5 the Arrow batches it collects with)."""
    if SPARK4:
        return df.toArrow()
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    return pa.Table.from_batches(df._collect_as_arrow(), schema=to_arrow_schema(df.schema))  # noqa: SLF001


def map_batches(df: DataFrame, fn: Callable, schema: Any, *, arrow: bool = False, profile: Any = None
                ) -> DataFrame:
    """df.mapInArrow (arrow) or df.mapInPandas, under the task resource `profile` where one is given. Spark 3.5's
    DataFrame API has no stage-level profile: there its tasks take the executors' default task resources (set
    spark.task.resource.gpu.amount for one GPU per task), said once."""
    run = df.mapInArrow if arrow else df.mapInPandas
    if profile is None:
        return run(fn, schema)
    if SPARK4:
        return run(fn, schema, profile=profile)
    if "profile" not in _said:
        _said.add("profile")
        log.warning("Spark %s: a DataFrame stage cannot ask for one GPU per task (stage-level scheduling of "
                    "DataFrames needs Spark 4); model tasks take the default task resources: set "
                    "spark.task.resource.gpu.amount=1 so each holds a GPU", VERSION)
    return run(fn, schema)
