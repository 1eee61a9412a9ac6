"""Fuzzing the ingestion readers (hypothesis): random bytes, random JSON lines, truncated .zst shards and truncated
megatron pairs give only the documented outcomes (a parsed record, or a reject with a documented reason; for a
megatron pair, InputError), never another exception. The readers run without Spark here; that a reject stops the
ingest before any table is written is tests/test_ingest.py's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semmem.errors import InputError
from semmem.ingest import megatron, pile, texts
from tests.corpus import write_megatron

RECORD_REASONS = {"invalid_utf8", "invalid_json", "missing_text"}  # a bad line of a Pile shard (README, Ingestion)
TEXT_REASONS = RECORD_REASONS | {"empty_text", "bad_id"}  # ... and of a file for `semmem texts`
FILE_REASONS = {"corrupt_zstd", "unreadable_file", "empty_shard"}  # the whole file (line 0)
FUZZ = settings(max_examples=200, deadline=None, derandomize=True,  # the same examples on every run: CI is repeatable
                suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                           max_leaves=8)
records = st.one_of(
    json_values,
    st.fixed_dictionaries({"text": st.text()}, optional={"meta": json_values, "id": json_values}),
    st.fixed_dictionaries({"text": json_values, "meta": st.fixed_dictionaries({"pile_set_name": json_values})}),
)


def _outcomes(path: Path, parse, reasons: set[str]) -> list[tuple[int, object, str | None]]:
    """Every (line, parsed, reason) the reader yields, checked against the documented outcomes."""
    out = []
    for n, parsed, reject in pile.iter_records(str(path), parse):
        if reject is None:
            assert n >= 1 and parsed is not None
            out.append((n, parsed, None))
        else:
            assert parsed is None
            assert (reject.reason in FILE_REASONS) if n == 0 else (reject.reason in reasons), (n, reject.reason)
            out.append((n, None, reject.reason))
    assert [n for n, _, _ in out if n] == sorted(n for n, _, _ in out if n)  # line order
    assert all(n == 0 for n, _, _ in out[len([x for x in out if x[0]]):])  # file problems come last
    return out


@FUZZ
@given(data=st.binary(max_size=2000), compressed=st.booleans())
def test_random_bytes(tmp_path, data, compressed):
    path = tmp_path / ("shard.jsonl.zst" if compressed else "shard.jsonl")
    path.write_bytes(data)
    for parse, reasons in ((pile.parse_line, RECORD_REASONS), (texts.parse_record, TEXT_REASONS)):
        out = _outcomes(path, parse, reasons)
        if not compressed and data.strip():
            assert any(n for n, _, _ in out)  # a plain file with content has lines, good or bad


@FUZZ
@given(lines=st.lists(records, max_size=12))
def test_random_json_lines(tmp_path, lines):
    raw = b"".join(json.dumps(r).encode() + b"\n" for r in lines)
    path = tmp_path / "shard.jsonl"
    path.write_bytes(raw)
    out = _outcomes(path, pile.parse_line, RECORD_REASONS)
    for (n, parsed, reason), record in zip([x for x in out if x[0]], lines):
        good = isinstance(record, dict) and isinstance(record.get("text"), str)
        assert (reason is None) == good, (record, reason)
        if good:
            assert parsed[0] == record["text"]
    _outcomes(path, texts.parse_record, TEXT_REASONS)


@FUZZ
@given(cut=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_truncated_zstd_shard(tmp_path, cut):
    lines = [{"text": f"document {i} " * (i % 7 + 1), "meta": {"pile_set_name": "Pile-CC"}} for i in range(200)]
    whole = zstandard.ZstdCompressor().compress(b"".join(json.dumps(r).encode() + b"\n" for r in lines))
    path = tmp_path / "shard.jsonl.zst"
    path.write_bytes(whole[:int(len(whole) * cut)])
    out = _outcomes(path, pile.parse_line, RECORD_REASONS)
    good = [parsed[0] for n, parsed, _ in out if n]
    assert good == [r["text"] for r in lines[:len(good)]]  # a prefix of the documents, intact
    assert out and out[-1][2] in {"corrupt_zstd", "empty_shard"}  # then the file's problem, never silence


@FUZZ
@given(cut=st.integers(min_value=0, max_value=34 + 40 * 12 + 41 * 8 - 1), which=st.sampled_from([".idx", ".bin"]))
def test_truncated_megatron_pair(tmp_path, cut, which):
    rows = np.arange(40 * 64, dtype=np.int64).reshape(40, 64) % 500
    write_megatron(tmp_path / "document", rows)
    target = tmp_path / f"document{which}"
    data = target.read_bytes()
    if cut >= len(data):
        return
    target.write_bytes(data[:cut])
    with pytest.raises(InputError):
        megatron.open_index(str(tmp_path / "document"), 64)


@FUZZ
@given(data=st.binary(min_size=0, max_size=600))
def test_random_megatron_index(tmp_path, data):
    (tmp_path / "document.idx").write_bytes(megatron.MAGIC + data if data[:1] == b"\x01" else data)
    (tmp_path / "document.bin").write_bytes(b"\x00" * 256)
    try:
        index = megatron.open_index(str(tmp_path / "document"), 64)
    except InputError:
        return
    assert index.num_rows * 64 * np.dtype(index.dtype).itemsize + index.first_pointer == 256  # only a consistent pair
