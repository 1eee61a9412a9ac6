"""The training stream as a DataFrame (row_id BIGINT, tokens ARRAY<INT>), wherever it lives."""

from __future__ import annotations

from pyspark.sql import DataFrame

from semmem.config import Config
from semmem.tables import Warehouse


def read_stream(warehouse: Warehouse, cfg: Config) -> DataFrame:
    """token_rows, or the megatron .bin recorded in stream_sources, read in place."""
    if warehouse.exists("stream_sources"):
        from semmem.ingest.megatron import read_megatron_stream

        return read_megatron_stream(warehouse, cfg)
    return warehouse.read("token_rows")
