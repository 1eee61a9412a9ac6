"""Two warehouses hold the same tables: same names, schemas, rows and values (a reference for runs that must agree).

`python -m tests.warehouses WH_A WH_B` checks two warehouses from the command line (e.g. the embedded default run
before and after a refactoring) and prints each table it compared."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from semmem.catalog import TABLES
from semmem.tables import RUNS, list_tables, open_delta

WALL_CLOCK = {("model_family", "seconds")}  # how long training took: the only column two runs may not share


def table_rows(warehouse: str, name: str) -> pa.Table:
    """A table's published snapshot in key order, columns by name; its Delta log must count exactly its rows."""
    dt = open_delta(warehouse, name)
    t = dt.to_pyarrow_table()
    logged = sum(a["num_records"] for a in pa.table(dt.get_add_actions(flatten=True)).to_pylist())
    assert logged == t.num_rows, f"{name}: the log counts {logged} rows, the files hold {t.num_rows}"
    t = t.select(sorted(t.column_names))
    keys = [k for k in TABLES[name].key if k in t.column_names]
    return t.sort_by([(k, "ascending") for k in keys]) if keys else t


def assert_same_warehouse(want: str, got: str, *, ignore: set[tuple[str, str]] = WALL_CLOCK) -> list[str]:
    """Every published table of `want` is in `got` with equal rows (floats within 1e-9 relative, NaN = NaN), the
    publication log aside (run ids and times); returns the table names."""
    names = sorted(i.name for i in list_tables(want) if i.name != RUNS)
    assert names == sorted(i.name for i in list_tables(got) if i.name != RUNS)
    for name in names:
        a_table, b_table = table_rows(want, name), table_rows(got, name)
        assert b_table.schema == a_table.schema, name
        assert b_table.num_rows == a_table.num_rows, name
        for column in a_table.column_names:
            if (name, column) in ignore:
                continue
            a, b = a_table.column(column), b_table.column(column)
            if pa.types.is_floating(a.type):  # equal, or both NULL, or both NaN, or within 1e-9 relative
                x, y = a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False)
                same = (x == y) | (np.isnan(x) & np.isnan(y)) | (np.abs(x - y) <= 1e-9 * (1 + np.abs(x)))
                assert bool(np.all(same)), f"{name}.{column} differs"
            else:
                assert a.equals(b), f"{name}.{column} differs"
    return names


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m tests.warehouses WH_A WH_B")
    for name in assert_same_warehouse(sys.argv[1], sys.argv[2]):
        print(f"same: {name}")
