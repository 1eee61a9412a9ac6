"""SQL over every table of a warehouse, by catalog name: DataFusion (via delta-rs) or Spark SQL, same results."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.csv as pacsv
from deltalake import QueryBuilder

from semmem.compat import to_arrow
from semmem.errors import SemmemError
from semmem.tables import delta_table, list_tables

Engine = Literal["auto", "datafusion", "spark"]


def run_sql(warehouse: str | Path, query: str, *, engine: Engine = "auto") -> pa.Table:
    """Run `query` with every warehouse table registered under its catalog name; returns the result as Arrow.

    auto picks DataFusion (answers in well under a second, no JVM) unless the query needs the megatron stream,
    which only Spark can read in place.
    """
    infos = list_tables(warehouse)
    megatron = any(i.name == "stream_sources" for i in infos)
    if engine == "auto":
        engine = "spark" if megatron and "token_rows" in query.lower() else "datafusion"
    check_read_only(query, {i.name for i in infos} | ({"token_rows"} if megatron else set()),
                    "spark" if engine == "spark" else None)
    if engine == "datafusion":
        return _plain_types(_datafusion(infos, query))
    return _plain_types(_spark(warehouse, infos, query, megatron))


def check_read_only(query: str, tables: set[str], dialect: str | None) -> None:
    """SemmemError unless `query` is one read-only query (SELECT, WITH ... SELECT, UNION, ...) over the warehouse's
    tables: both engines would also run statements that write files or read outside the warehouse (COPY ... TO,
    CREATE EXTERNAL TABLE, INSERT, SELECT ... INTO, Spark's parquet.`/path`, table functions such as read_csv)."""
    import sqlglot
    from sqlglot import exp

    try:
        statements = [s for s in sqlglot.parse(query, read=dialect) if s is not None]
    except sqlglot.errors.SqlglotError as e:
        raise SemmemError(f"SQL failed: {' '.join(str(e).split())[:300]}") from None
    if len(statements) != 1:
        raise SemmemError(f"semmem sql runs one query at a time; found {len(statements)} statements")
    stmt = statements[0]
    if not isinstance(stmt, exp.Query) or stmt.find(exp.Into) is not None:
        kind = "SELECT ... INTO" if isinstance(stmt, exp.Query) else stmt.key.upper()
        raise SemmemError(f"semmem sql runs read-only queries (SELECT, WITH ... SELECT) over the warehouse's tables; "
                          f"{kind} statements are refused (they write, or read outside the warehouse)")
    named = tables | {cte.alias_or_name for cte in stmt.find_all(exp.CTE)}
    for t in stmt.find_all(exp.Table):
        if not isinstance(t.this, exp.Identifier) or t.db or t.catalog or t.name not in named:
            raise SemmemError(f"semmem sql reads only the warehouse's tables ({', '.join(sorted(tables))}); "
                              f"{t.sql(dialect=dialect)!r} is not one of them")


def _datafusion(infos: list, query: str) -> pa.Table:
    qb = QueryBuilder()
    for info in infos:
        qb.register(info.name, delta_table(info.path, info.version))  # the published version
    try:
        return pa.table(qb.execute(query).read_all())
    except Exception as e:  # noqa: BLE001 - DataFusion raises plain exceptions for SQL errors
        raise SemmemError(f"SQL failed (DataFusion): {str(e).splitlines()[0]}") from None


def _spark(warehouse: str | Path, infos: list, query: str, megatron: bool) -> pa.Table:
    from pyspark.errors import PySparkException

    from semmem.catalog import TABLES
    from semmem.config import load_config
    from semmem.ingest.stream import read_stream
    from semmem.spark import build_session
    from semmem.tables import Warehouse

    cfg = load_config(None, [f"warehouse={warehouse}", "spark.conf.spark.ui.enabled=false"])
    spark = build_session(cfg)
    wh = Warehouse(spark, warehouse)
    for info in infos:
        if info.name in TABLES:
            wh.read(info.name).createOrReplaceTempView(info.name)
    if megatron:
        read_stream(wh, cfg).createOrReplaceTempView("token_rows")
    try:
        return to_arrow(spark.sql(query))
    except PySparkException as e:
        raise SemmemError(f"SQL failed (Spark): {str(e).splitlines()[0]}") from None


def _plain_types(t: pa.Table) -> pa.Table:
    """View types (Utf8View, ...) as their plain equivalents, so both engines give identical tables."""

    def plain(tp: pa.DataType) -> pa.DataType:
        if pa.types.is_string_view(tp) or pa.types.is_large_string(tp):
            return pa.string()
        if pa.types.is_binary_view(tp) or pa.types.is_large_binary(tp):
            return pa.binary()
        if pa.types.is_list_view(tp) or pa.types.is_large_list(tp) or pa.types.is_list(tp):
            return pa.list_(plain(tp.value_type))
        return tp

    schema = pa.schema([pa.field(f.name, plain(f.type)) for f in t.schema])
    return t.cast(schema)


def format_table(t: pa.Table, fmt: Literal["table", "csv", "json"]) -> str:
    if fmt == "csv":
        if any(pa.types.is_list(f.type) or pa.types.is_struct(f.type) for f in t.schema):
            t = pa.table({n: [json.dumps(v) if isinstance(v, (list, dict)) else v for v in c.to_pylist()]
                          for n, c in zip(t.column_names, t.columns)})
        buf = io.BytesIO()
        pacsv.write_csv(t, buf, pacsv.WriteOptions(quoting_style="needed"))
        return buf.getvalue().decode()
    if fmt == "json":
        return "".join(json.dumps(row, default=str) + "\n" for row in t.to_pylist())
    cols = t.column_names
    rows = [["NULL" if v is None else str(v) for v in r.values()] for r in t.to_pylist()]
    widths = [max([len(c)] + [min(len(r[i]), 80) for r in rows]) for i, c in enumerate(cols)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |", line]
    for r in rows:
        out.append("| " + " | ".join((v if len(v) <= 80 else v[:77] + "...").ljust(w)
                                     for v, w in zip(r, widths)) + " |")
    out.append(line)
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


__all__ = ["format_table", "run_sql"]
