"""Result rows -> a pandas frame with exactly the columns and types of a catalog table."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa

from semmem.catalog import table

# Integer columns stay integers when some rows are NULL (e.g. the rank of a skipped candidate).
_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}


def table_frame(name: str, rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """`rows` (dicts, or a frame with at least the table's columns) as a frame of catalog table `name`: its columns
    in its order, cast to its Arrow types; missing dict keys are NULL."""
    schema = table(name).schema
    arrow = pa.Table.from_pandas(rows[schema.names], schema=schema, preserve_index=False) \
        if isinstance(rows, pd.DataFrame) else pa.Table.from_pylist(rows, schema=schema)
    return arrow.to_pandas(types_mapper=_NULLABLE.get)
