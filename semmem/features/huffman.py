"""Code-length features over the characters (Unicode code points) of `text` (spec §2.8).

- `huffman_coding_length`: what upstream computes under that name, sum_c p_c·ceil(-log2 p_c) with p_c = count/len,
  evaluated with numpy in first-occurrence order as upstream does. It is a Shannon code length, not Huffman's.
- `huffman_code_length_true`: the average length in bits per character of an optimal (Huffman) prefix code for the
  same character counts: the sum of all merged weights of the Huffman tree, divided by len. It is exact (an integer
  over len) and independent of tie-breaking. A text with one distinct character gets 1.0: a prefix code needs at
  least one bit per symbol to be decodable (the Shannon column gives 0.0 there, as upstream).
Empty or NULL text gives NULL in both columns (upstream gives 0.0, `np.sum` of an empty array, the value of a text
of one repeated character too: NULL keeps "no text" apart).

Rows are processed inside Arrow batches (`mapInArrow`) over the evaluation sequences, never over the stream.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame

_SCHEMA = "sequence_id BIGINT, huffman_coding_length DOUBLE, huffman_code_length_true DOUBLE"


def shannon_length(counts: np.ndarray, n: int) -> float:
    """sum p·ceil(-log2 p) over the character counts (upstream's `huffman_coding_length`)."""
    p = counts / n
    return float(np.sum(np.ceil(-np.log2(p)) * p))


def huffman_length(counts: list[int], n: int) -> float:
    """Average bits per character of a Huffman code for these counts (1.0 for a single distinct character)."""
    if len(counts) == 1:
        return 1.0
    heap = list(counts)
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total / n


def code_lengths(text: str | None) -> tuple[float | None, float | None]:
    """(huffman_coding_length, huffman_code_length_true) of one text; NULL for empty or NULL text."""
    if not text:
        return None, None
    counts = list(Counter(text).values())
    return shannon_length(np.array(counts), len(text)), huffman_length(counts, len(text))


def huffman_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: (sequence_id, text) -> huffman rows."""
    for batch in batches:
        vals = [code_lengths(t) for t in batch.column("text").to_pylist()]
        shannon = [v[0] for v in vals]
        true = [v[1] for v in vals]
        yield pa.RecordBatch.from_arrays(
            [batch.column("sequence_id").cast(pa.int64()), pa.array(shannon, pa.float64()),
             pa.array(true, pa.float64())],
            names=["sequence_id", "huffman_coding_length", "huffman_code_length_true"])


def huffman(sequences: DataFrame) -> DataFrame:
    """(sequence_id, huffman_coding_length, huffman_code_length_true) from `text`."""
    return sequences.select("sequence_id", "text").mapInArrow(huffman_batches, _SCHEMA)
