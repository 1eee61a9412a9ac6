"""A stage's scratch Parquet files (semmem.tables.Scratch) read by path inside a Spark task, without Spark: the numpy
kernels of the features get plain arrays (the all-pairs grid's blocks, the duplicate scan's query hashes), and the
file access stays here."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from semmem import storage
from semmem.features.allpairs import EMPTY_BLOCK, Block, block_of_table


@functools.lru_cache(maxsize=2)
def read_block(files: tuple[str, ...], with_prompts: bool) -> Block:
    """The items of one grid block (cached per Python worker: consecutive tasks of a worker often share a block)."""
    if not files:
        return EMPTY_BLOCK
    columns = ["item_id", "embedding", "weight"] + (["prompt_text"] if with_prompts else [])
    return block_of_table(pa.concat_tables([storage.read_parquet(f, columns=columns) for f in files]), with_prompts)


def read_int64_column(files: Sequence[str], column: str) -> np.ndarray:
    """One int64 column of `files` as one array, filled a file at a time (one file's column next to the array, never
    a second copy of the whole)."""
    flat = np.empty(sum(storage.parquet_file(f).metadata.num_rows for f in files), np.int64)
    at = 0
    for f in files:
        h = storage.read_parquet(f, columns=[column]).column(column).to_numpy()
        flat[at:at + len(h)] = h
        at += len(h)
        del h
    return flat
