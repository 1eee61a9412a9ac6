"""Stages `duplicates`, `frequencies`, `templating`, `huffman`: the intrinsic and corpus features of the taxonomy.

Each reads `sequences` (and the training stream where needed), calls the pure functions of semmem.features and
overwrites its output table.
"""

from __future__ import annotations

from semmem.features.duplicates import sequence_duplicates
from semmem.features.frequencies import token_frequencies, token_frequency_stats
from semmem.features.huffman import huffman as huffman_lengths
from semmem.features.templating import templating as templating_flags
from semmem.ingest.stream import read_stream, stream_shards
from semmem.stages.registry import StageContext, stage


@stage("duplicates", inputs=("sequences", "stream"), outputs=("sequence_duplicates",))
def duplicates(ctx: StageContext) -> None:
    """Exact stream occurrences of each continuation 32-gram -> sequence_duplicates."""
    d = ctx.cfg.duplicates
    stream = stream_shards(ctx.warehouse, ctx.cfg, d.rows_per_task) if d.direct_read else \
        read_stream(ctx.warehouse, ctx.cfg)
    out = sequence_duplicates(ctx.warehouse.read("sequences"), stream,
                              hash_base=d.hash_base, hash_modulus=d.hash_modulus, rows_per_batch=d.rows_per_batch)
    ctx.warehouse.write(out, "sequence_duplicates", mode="overwrite")


@stage("frequencies", inputs=("sequences", "stream"), outputs=("token_frequencies", "token_frequency_stats"))
def frequencies(ctx: StageContext) -> None:
    """Corpus token counts -> token_frequencies; per-sequence statistics -> token_frequency_stats."""
    ctx.warehouse.write(token_frequencies(read_stream(ctx.warehouse, ctx.cfg)), "token_frequencies",
                        mode="overwrite")
    stats = token_frequency_stats(ctx.warehouse.read("sequences"), ctx.warehouse.read("token_frequencies"))
    ctx.warehouse.write(stats, "token_frequency_stats", mode="overwrite")


@stage("templating", inputs=("sequences",), outputs=("templating",))
def templating(ctx: StageContext) -> None:
    """Incrementing / repeating text flags (spec §2.7) -> templating."""
    out = templating_flags(ctx.warehouse.read("sequences"), upstream_quirks=ctx.cfg.templating.upstream_quirks)
    ctx.warehouse.write(out, "templating", mode="overwrite")


@stage("huffman", inputs=("sequences",), outputs=("huffman",))
def huffman(ctx: StageContext) -> None:
    """Shannon and true Huffman code lengths of the text (spec §2.8) -> huffman."""
    ctx.warehouse.write(huffman_lengths(ctx.warehouse.read("sequences")), "huffman", mode="overwrite")
