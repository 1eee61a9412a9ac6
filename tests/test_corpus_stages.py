"""The four corpus stages end to end: Delta tables in, Delta tables out, equal to the brute-force references."""

from __future__ import annotations

import pytest

from semmem.config import with_overrides
from semmem.stages import StageContext, run_stages
from semmem.tables import Warehouse
from tests import reference as ref

TEXTS = ["0x10 0x11 0x12 0x13 0x14", "abcabcabcabc", "5 3 0", "", "hello world, this is text", "x 1 a 3 2 1 a 3 2 1 y",
         "10 9 8 7 6 5", "aaaa", "\u4e2d\u6587 text", "1 2 3", "zz", "item 1 item 2 item 3 item 4", "plain"]


@pytest.mark.parametrize("quirks,modulus", [(True, (1 << 61) - 1), (False, 97)])
def test_corpus_stages_write_reference_tables(spark, base_cfg, quirks, modulus):
    cfg = with_overrides(base_cfg, [f"templating.upstream_quirks={str(quirks).lower()}",
                                    f"duplicates.hash_modulus={modulus}", "duplicates.rows_per_batch=4"])
    wh = Warehouse(spark, cfg.warehouse)
    rows, sequences = ref.make_stream(seed=11)
    texts = {sid: TEXTS[i % len(TEXTS)] for i, sid in enumerate(sorted(sequences))}
    wh.write(spark.createDataFrame([(i, r) for i, r in enumerate(rows)], "row_id BIGINT, tokens ARRAY<INT>"),
             "token_rows", mode="overwrite")
    seq_rows = [(sid, toks, texts[sid], texts[sid][:5], "Pile-CC") for sid, toks in sequences.items()]
    wh.write(spark.createDataFrame(seq_rows, "sequence_id BIGINT, tokens ARRAY<INT>, text STRING, prompt_text STRING, "
                                             "pile_set_name STRING"), "sequences", mode="overwrite")

    ran = run_stages(StageContext(spark, cfg, wh), ["duplicates", "frequencies", "templating", "huffman"])
    assert ran == ["duplicates", "frequencies", "templating", "huffman"]

    dup = {r["sequence_id"]: r["sequence_duplicates"] for r in wh.read("sequence_duplicates").collect()}
    assert dup == ref.duplicates(rows, sequences)

    freq = ref.token_frequencies(rows)
    assert {r["token_id"]: r["frequency"] for r in wh.read("token_frequencies").collect()} == freq
    stats = {r["sequence_id"]: r.asDict() for r in wh.read("token_frequency_stats").collect()}
    assert {sid: {k: v for k, v in s.items() if k != "sequence_id"} for sid, s in stats.items()} == \
        {sid: ref.frequency_stats(toks, freq) for sid, toks in sequences.items()}

    tmpl = {r["sequence_id"]: (r["is_incrementing"], r["is_repeating"], r["is_templating"])
            for r in wh.read("templating").collect()}
    assert tmpl == {sid: ref.templating(t, quirks) for sid, t in texts.items()}

    huff = {r["sequence_id"]: (r["huffman_coding_length"], r["huffman_code_length_true"])
            for r in wh.read("huffman").collect()}
    want = {sid: ref.huffman(t) for sid, t in texts.items()}
    assert set(huff) == set(want)
    for sid, (sh, hu) in want.items():
        if sh is None:
            assert huff[sid] == (None, None)
        else:
            assert abs(huff[sid][0] - sh) <= 1e-12 and huff[sid][1] == hu
