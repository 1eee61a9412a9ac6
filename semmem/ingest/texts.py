"""Texts a user brings (`input.format: texts-jsonl`): each JSON line `{"text": ..., "id": ...}` is one evaluation
sequence, for "did the model memorize these strings?" and for evaluating the code classifier.

Each text is tokenized and cut to its first 64 tokens, or left-padded to 64 with the tokenizer's padding token
(`<|padding|>`), so the continuation is always the text's last tokens. `text` and `prompt_text` are decoded from the
text's own tokens (padding left out). `id` (an integer) becomes sequence_id; without ids, sequences are numbered
0, 1, ... in file order (files sorted by path, lines in order). There is no training stream.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from pyspark import Accumulator

from semmem.errors import ModelError
from semmem.ingest.pile import _Reject, document_fields, parse_json, record_batches, shard_batch
from semmem.ingest.sequences import PROMPT_LENGTH, WINDOW_LENGTH
from semmem.ingest.tokenizer import PAD_TOKEN, decode_batch, encode_batch, from_json

TEXT_SCHEMA = pa.schema([
    ("shard_id", pa.int32()), ("line", pa.int64()), ("record", pa.int64()), ("id", pa.int64()),
    ("tokens", pa.list_(pa.int32())), ("text", pa.string()), ("prompt_text", pa.string()),
    ("pile_set_name", pa.string()), ("reject_reason", pa.string()), ("reject_detail", pa.string()),
])


def parse_record(raw: bytes) -> tuple[str, str | None, int | None]:
    """(text, pile_set_name, id) of one line; _Reject for bad JSON, a missing or empty text, or a non-integer id."""
    obj = parse_json(raw)
    text, name = document_fields(obj)
    if not text.strip():
        raise _Reject("empty_text", "'text' is empty")
    ident = obj.get("id")
    if ident is not None and (isinstance(ident, bool) or not isinstance(ident, int) or not -2**63 <= ident < 2**63):
        raise _Reject("bad_id", f"'id' must be an integer, found {ident!r}")
    return text, name, ident


def window_of(ids: list[int], pad_id: int) -> tuple[list[int], list[int], list[int]]:
    """(64 tokens, the text's own tokens in them, its own tokens in the 32-token prompt) for one text's ids."""
    own = ids[:WINDOW_LENGTH]
    pads = WINDOW_LENGTH - len(own)
    return [pad_id] * pads + own, own, own[:max(0, PROMPT_LENGTH - pads)]


def read_texts(batches: Iterator[pa.RecordBatch], tokenizer_json: str, batch_size: int,
               counter: Accumulator | None = None) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: (shard_id, path) rows -> one row per line: the 64-token window and its decoded texts, or a
    reject. `record` numbers the good lines of a shard from 0."""
    tok = from_json(tokenizer_json)
    pad_id = tok.token_to_id(PAD_TOKEN)
    if pad_id is None:
        raise ModelError(f"the tokenizer has no {PAD_TOKEN} token to left-pad texts shorter than {WINDOW_LENGTH} "
                         "tokens: texts-jsonl input needs a GPT-NeoX-style tokenizer (set tokenizer.name to one that "
                         f"has {PAD_TOKEN}, e.g. EleutherAI/pythia-70m-deduped)")
    for batch in batches:
        for shard_id, path in zip(batch.column("shard_id").to_pylist(), batch.column("path").to_pylist()):
            for out in _read_shard(shard_id, path, tok, pad_id, batch_size):
                if counter is not None:
                    counter.add(out.num_rows)
                yield out


def _read_shard(shard_id: int, path: str, tok, pad_id: int, batch_size: int) -> Iterator[pa.RecordBatch]:
    record = 0
    for good, rejects in record_batches(path, parse_record, batch_size):
        windows = [window_of(ids, pad_id) for ids in encode_batch(tok, [text for _, (text, _, _) in good])]
        yield shard_batch(shard_id, [n for n, _ in good], {
            "record": list(range(record, record + len(good))), "id": [i for _, (_, _, i) in good],
            "tokens": [w[0] for w in windows], "text": decode_batch(tok, [w[1] for w in windows]),
            "prompt_text": decode_batch(tok, [w[2] for w in windows]),
            "pile_set_name": [name for _, (_, name, _) in good]}, rejects, TEXT_SCHEMA)
        record += len(good)
