"""Texts a user brings to `semmem texts` ("did my model memorize this?"): each JSON line `{"text": ..., "id": ...}`.

A text is tokenized with the scored model's own tokenizer (never one trained for the occasion) and cut into windows
of at most 64 tokens, each scored as the corpus sequences are: its continuation is its last min(32, n - 1) tokens,
its prompt the tokens before them, and the model sees only real tokens (no padding). A text of up to 64 tokens is
one window; a longer one has a window at every `stride` tokens plus one ending at its last token, so with a stride
of at most 32 every token after the first 32 lies in some window's continuation. The answer per text is found from
its windows' scores: memorized when one window is, and the longest run of memorized continuations (overlapping or
adjacent ones merged), in tokens and characters.

Everything here is a pure function over Arrow batches or small arrays; `semmem.stages.texts` does the I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark import Accumulator

from semmem.errors import InputError
from semmem.ingest.pile import _Reject, document_fields, parse_json, record_batches, shard_batch
from semmem.ingest.sequences import WINDOW_LENGTH
from semmem.ingest.tokenizer import from_json
from semmem.scoring.memorization import continuation_length

MAX_WINDOWS_BITS = 24  # window keys are text_id << 24 | window: 16M windows (0.5B tokens at stride 32) per text

TEXT_SCHEMA = pa.schema([
    ("shard_id", pa.int32()), ("line", pa.int64()), ("record", pa.int64()), ("id", pa.int64()),
    ("text", pa.string()), ("tokens", pa.list_(pa.int32())), ("starts", pa.list_(pa.int32())),
    ("ends", pa.list_(pa.int32())), ("reject_reason", pa.string()), ("reject_detail", pa.string()),
])
WINDOW_SCHEMA = pa.schema([
    ("text_id", pa.int64()), ("window", pa.int32()), ("key", pa.int64()), ("token_start", pa.int32()),
    ("n_tokens", pa.int32()), ("continuation_start", pa.int32()), ("char_start", pa.int32()),
    ("continuation_char_start", pa.int32()), ("char_end", pa.int32()), ("tokens", pa.list_(pa.int32())),
])
ANSWER_COLUMNS = ("memorized", "windows", "memorized_windows", "span_tokens", "span_token_start",
                  "span_char_start", "span_char_end", "best_matched_prefix", "best_memorization_score",
                  "lowest_loss", "stream_count")


def parse_record(raw: bytes) -> tuple[str, int | None]:
    """(text, id) of one line; _Reject for bad JSON, a missing or empty text, or a non-integer id."""
    obj = parse_json(raw)
    text, _ = document_fields(obj)
    if not text.strip():
        raise _Reject("empty_text", "'text' is empty")
    ident = obj.get("id")
    if ident is not None and (isinstance(ident, bool) or not isinstance(ident, int) or not -2**63 <= ident < 2**63):
        raise _Reject("bad_id", f"'id' must be an integer, found {ident!r}")
    return text, ident


def read_texts(batches: Iterator[pa.RecordBatch], tokenizer_json: str, batch_size: int,
               counter: Accumulator | None = None) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: (shard_id, path) rows -> one row per line: its text, token ids and each token's character
    span in the text, or a reject (a text of fewer than 2 tokens has no continuation: `too_short`). `record` numbers
    the good lines of a shard from 0."""
    tok = from_json(tokenizer_json)
    for batch in batches:
        for shard_id, path in zip(batch.column("shard_id").to_pylist(), batch.column("path").to_pylist()):
            record = 0
            for good, rejects in record_batches(path, parse_record, batch_size):
                encoded = tok.encode_batch([text for _, (text, _) in good], add_special_tokens=False)
                kept = []
                for (line, parsed), enc in zip(good, encoded):
                    if len(enc.ids) < 2:
                        rejects.append((line, "too_short", f"{len(enc.ids)} token(s); a text needs at least 2 (a "
                                                           "prompt token and a continuation token)"))
                    else:
                        kept.append((line, parsed, enc))
                out = shard_batch(shard_id, [n for n, _, _ in kept], {
                    "record": list(range(record, record + len(kept))), "id": [i for _, (_, i), _ in kept],
                    "text": [t for _, (t, _), _ in kept], "tokens": [e.ids for _, _, e in kept],
                    "starts": [[a for a, _ in e.offsets] for _, _, e in kept],
                    "ends": [[b for _, b in e.offsets] for _, _, e in kept]}, sorted(rejects), TEXT_SCHEMA)
                record += len(kept)
                if counter is not None:
                    counter.add(out.num_rows)
                yield out


def window_starts(n_tokens: int, stride: int) -> list[int]:
    """Token offsets of a text's windows: 0 for a text of up to 64 tokens; else every `stride` tokens while a whole
    window fits, plus the window ending at the last token when that one is not already there."""
    if n_tokens <= WINDOW_LENGTH:
        return [0]
    last = n_tokens - WINDOW_LENGTH
    starts = list(range(0, last + 1, stride))
    return starts if starts[-1] == last else [*starts, last]


def text_windows(batches: Iterator[pa.RecordBatch], stride: int) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: texts (text_id, tokens, starts, ends) -> their windows (WINDOW_SCHEMA), with each window's
    token range, where its continuation starts, and the character spans of both."""
    for batch in batches:
        cols: dict[str, list] = {f.name: [] for f in WINDOW_SCHEMA}
        for text_id, tokens, starts, ends in zip(*(batch.column(c).to_pylist()
                                                   for c in ("text_id", "tokens", "starts", "ends"))):
            n = len(tokens)
            starts_at = window_starts(n, stride)
            if len(starts_at) >= 1 << MAX_WINDOWS_BITS:
                raise InputError(f"text {text_id} ({n:,} tokens) makes {len(starts_at):,} windows at stride {stride}; "
                                 f"a text can have at most {(1 << MAX_WINDOWS_BITS) - 1:,}: raise texts.stride or "
                                 "split the text")
            for w, s in enumerate(starts_at):
                length = min(WINDOW_LENGTH, n - s)
                cont = s + length - continuation_length(length)
                for name, value in (("text_id", text_id), ("window", w), ("key", (text_id << MAX_WINDOWS_BITS) | w),
                                    ("token_start", s), ("n_tokens", length), ("continuation_start", cont),
                                    ("char_start", starts[s]), ("continuation_char_start", starts[cont]),
                                    ("char_end", ends[s + length - 1]), ("tokens", tokens[s:s + length])):
                    cols[name].append(value)
        yield pa.RecordBatch.from_pydict(cols, schema=WINDOW_SCHEMA)


def memorized_spans(starts: np.ndarray, ends: np.ndarray) -> list[tuple[int, int]]:
    """Token intervals [start, end) of memorized continuations merged where they overlap or touch, in order."""
    spans: list[tuple[int, int]] = []
    for s, e in sorted(zip(starts.tolist(), ends.tolist())):
        if spans and s <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], e))
        else:
            spans.append((s, e))
    return spans


def text_answer(windows: pd.DataFrame) -> dict:
    """The answer for one text under one model from its scored windows (columns continuation_start, n_tokens,
    token_start, continuation_char_start, char_end, is_memorized, matched_prefix, memorization_score, loss,
    stream_count): memorized or not, the longest memorized span (tokens, characters; the first when tied), the best
    window figures, and the most times one of its windows' continuations occurs in the training stream."""
    mem = windows[windows["is_memorized"]]
    ends = (mem["token_start"] + mem["n_tokens"]).to_numpy()
    spans = memorized_spans(mem["continuation_start"].to_numpy(), ends)
    span = max(spans, key=lambda ab: ab[1] - ab[0]) if spans else None
    if span is not None:
        first = mem[mem["continuation_start"] == span[0]].iloc[0]
        last = mem[(mem["token_start"] + mem["n_tokens"]) == span[1]].iloc[0]
    counts = windows["stream_count"].dropna()
    return {
        "memorized": span is not None, "windows": len(windows), "memorized_windows": len(mem),
        "span_tokens": span[1] - span[0] if span else 0, "span_token_start": span[0] if span else None,
        "span_char_start": int(first["continuation_char_start"]) if span else None,
        "span_char_end": int(last["char_end"]) if span else None,
        "best_matched_prefix": int(windows["matched_prefix"].max()),
        "best_memorization_score": float(windows["memorization_score"].max()),
        "lowest_loss": float(windows["loss"].min()),
        "stream_count": int(counts.max()) if len(counts) else None}
