"""One end-to-end run of every default stage, as `semmem run` does it, on a small corpus."""

from __future__ import annotations

import json

from tokenizers import Tokenizer

from semmem.cli import main
from semmem.sql import run_sql
from semmem.stages import resolve
from semmem.summary import summary_text
from semmem.tables import Warehouse, list_tables
from tests.corpus import small_corpus, small_tokenizer
from tests.stage_reads import declaration_errors, record_stage_reads


def test_semmem_run_all_default_stages(spark, tmp_path, capsys, monkeypatch):
    small_corpus(tmp_path / "corpus", n_docs=90)
    tok = small_tokenizer(tmp_path / "tokenizer.json")
    wh = tmp_path / "wh"
    reads = record_stage_reads(monkeypatch)
    rc = main(["run", "--config", "conf/local.yaml", "--set", f"input.path=[{tmp_path / 'corpus'}]",
               "--set", f"tokenizer.name={tok}", "--set", "stream.seq_length=128", "--set", f"warehouse={wh}",
               "--set", ("train_model.sizes=[{name: s, hidden_size: 16, num_layers: 1, num_heads: 2}, "
                         "{name: l, hidden_size: 32, num_layers: 1, num_heads: 2}]"),
               "--set", "train_model.checkpoints=[0.5, 1.0]", "--set", "score.batch_size=16",
               "--set", "train_model.epochs=12", "--set", "train_model.learning_rate=0.01",  # memorizes ~10
               "--set", "taxonomy.min_memorized=1", "--set", "taxonomy.bootstrap_rounds=20",  # the fits, briefly:
               "--set", "taxonomy.search_quantiles=[0.5]", "--set", "taxonomy.kl_bootstrap_rounds=50"])
    assert rc == 0
    out = capsys.readouterr().out
    ran = [s.name for s in resolve([])]
    assert f"ran {', '.join(ran)}" in out
    n = run_sql(wh, "SELECT count(*) AS n FROM sequences").to_pylist()[0]["n"]
    assert n == run_sql(wh, "SELECT count(*) AS n FROM token_rows").to_pylist()[0]["n"] > 10
    # Every per-sequence table has exactly one row per sequence, joined on sequence_id.
    for t in ("sequence_duplicates", "token_frequency_stats", "templating", "huffman", "embeddings",
              "semantic_matches", "textual_matches", "code_scores"):
        got = run_sql(wh, f"SELECT count(*) AS n, count(DISTINCT s.sequence_id) AS d FROM sequences s "
                          f"JOIN {t} x ON s.sequence_id = x.sequence_id").to_pylist()[0]
        assert got == {"n": n, "d": n}, t
    # Every evaluation window occurs in the stream at least once (at its own row's offset 32).
    assert run_sql(wh, "SELECT min(sequence_duplicates) AS m FROM sequence_duplicates").to_pylist()[0]["m"] >= 1
    models = run_sql(wh, "SELECT DISTINCT model, revision FROM memorization ORDER BY model, revision").to_pylist()
    family = run_sql(wh, "SELECT model, revision FROM model_family ORDER BY model, revision").to_pylist()
    assert models == family and [m["model"] for m in models] == ["trained-l"] * 2 + ["trained-s"] * 2
    forecast = run_sql(wh, "SELECT count(*) AS n FROM memorization_forecast WHERE NOT restricted").to_pylist()
    assert forecast[0]["n"] == 4 * 3
    # Provenance and exposure: every sequence's own row is among its occurrences, named by its document; each final
    # checkpoint has seen the sequences its training windows held whole, and both checkpoints of a size the same
    # ones or more; restricted forecasts exist for the pairs that share seen sequences.
    listed = run_sql(wh, "SELECT count(*) AS n FROM sequence_occurrences o JOIN sequence_duplicates d USING "
                         "(sequence_id) WHERE d.sequence_duplicates <= 100 AND o.row_id = o.sequence_id AND "
                         "o.offset = 32 AND o.document LIKE '%.jsonl%:%'").to_pylist()[0]["n"]
    assert listed == run_sql(wh, "SELECT count(*) AS n FROM sequence_duplicates WHERE sequence_duplicates <= 100"
                             ).to_pylist()[0]["n"] > 0
    seen = {(r["model"], int(r["revision"][4:])): (r["n"], r["e"]) for r in run_sql(
        wh, "SELECT model, revision, count(*) AS n, sum(exposures_before) AS e FROM combined "
            "WHERE seen_by_checkpoint GROUP BY model, revision").to_pylist()}
    assert len(seen) == 4 and all(0 < k <= e for k, e in seen.values())
    for model in ("trained-s", "trained-l"):
        early, late = sorted(step for m, step in seen if m == model)
        assert seen[(model, early)][0] <= seen[(model, late)][0]
    assert run_sql(wh, "SELECT count(*) AS n FROM memorization_forecast WHERE restricted").to_pylist()[0]["n"] > 0
    # It ends with the answer, read from the tables, and the report's path.
    tail = out[out.index("What the model memorized"):]
    last = max((m["revision"] for m in models if m["model"] == "trained-l"), key=lambda r: int(r[4:]))
    assert f"trained-l@{last}: {n:,} sequences" in tail and "recitation" in tail
    assert "taxonomic" in tail and "forecasts" in tail
    assert (wh / "report" / "index.html").is_file() and str(wh / "report" / "index.html") in tail
    # The evidence (stage evidence): bounded tables with sane values, in the summary and the report.
    final = [(m, max((r["revision"] for r in models if r["model"] == m), key=lambda r: int(r[4:])))
             for m in ("trained-l", "trained-s")]
    context = run_sql(wh, "SELECT model, revision, category, context_length, sequences, memorized, share, ci_low, "
                          "ci_high FROM memorization_by_context").to_pylist()
    assert {(r["model"], r["revision"]) for r in context} == {(m["model"], m["revision"]) for m in models}
    assert {r["context_length"] for r in context} == {8, 16, 24, 32}
    assert all(r["sequences"] == n for r in context if r["category"] == "all")
    assert all(0 <= r["ci_low"] <= r["share"] <= r["ci_high"] <= 1 for r in context)
    separation = run_sql(wh, "SELECT model, revision, category, score, roc_auc, ci_low, ci_high, n_rows "
                             "FROM score_separation").to_pylist()
    assert {(r["model"], r["revision"]) for r in separation} == set(final)
    assert {"loss", "zlib_ratio", "min_k_prob", "min_k_plus_plus", "memorized_bits"} == {r["score"] for r in separation}
    alls = [r for r in separation if r["category"] == "all" and r["score"] == "loss"]
    memorized = {(r["model"], r["revision"]): r["m"] for r in run_sql(
        wh, "SELECT model, revision, sum(CAST(is_memorized AS INT)) AS m FROM combined GROUP BY model, revision"
    ).to_pylist()}
    assert len(alls) == 2 and all(r["n_rows"] == n for r in alls) and memorized[final[0]] > 0
    for r in alls:  # loss separates where the model memorized some; no AUC without both classes
        m = memorized[(r["model"], r["revision"])]
        assert 0.5 < r["roc_auc"] <= 1 if 0 < m < n else r["roc_auc"] is None
    assert all(r["ci_low"] <= r["ci_high"] for r in separation if r["ci_low"] is not None)
    medians = run_sql(wh, "SELECT model, revision, memorized, measure, sequences, median FROM exposure_medians "
                          "WHERE category = 'all'").to_pylist()
    assert (*final[0], "exposures_before") in {(r["model"], r["revision"], r["measure"]) for r in medians
                                               if r["memorized"]}  # trained-l memorizes some at its end
    assert all(r["median"] >= 0 for r in medians)
    cards = run_sql(wh, "SELECT model, revision, sequence_id, text, exposures_before, documents "
                        "FROM memorization_examples").to_pylist()
    assert cards and {(r["model"], r["revision"]) for r in cards} <= set(final)
    assert all(r["text"] and r["exposures_before"] >= 1 and 1 <= len(r["documents"]) <= 10 for r in cards)
    page = (wh / "report" / "index.html").read_text()
    for heading in ("Memorization vs context length", "Memorization vs exposure and recency",
                    "How well each score separates memorized from other sequences", "Memorized examples"):
        assert heading in page
    assert "memorized from the last k prompt tokens (k = 8, 16, 24, 32)" in out
    assert "median exposures before the checkpoint: memorized" in out
    cats = run_sql(wh, "SELECT count(*) AS n FROM combined WHERE category IN "
                       "('recitation', 'reconstruction', 'recollection')").to_pylist()[0]["n"]
    assert cats == 4 * n  # every sequence of every checkpoint
    assert (wh / "report" / "family.png").is_file()
    # Where in the model (stage localize): each final checkpoint rewound to its first, block by block; the counts
    # are those of combined (no sampling at this size), the gradient shares of a block and category add to 1.
    early = {m: min((r["revision"] for r in models if r["model"] == m), key=lambda r: int(r[4:])) for m, _ in final}
    loc = run_sql(wh, "SELECT model, revision, rewound_to, layer, block, taxonomy, category, memorized, "
                      "still_memorized FROM localization").to_pylist()
    by_category = {(r["model"], r["revision"], r["c"]): r["m"] for r in run_sql(
        wh, "SELECT model, revision, category AS c, sum(CAST(is_memorized AS INT)) AS m FROM combined "
            "GROUP BY model, revision, category").to_pylist()}
    assert {(r["model"], r["revision"], r["rewound_to"]) for r in loc} == \
        {(m, rev, early[m]) for m, rev in final if memorized[(m, rev)] > 0}
    assert {(r["layer"], r["block"]) for r in loc} == {(0, "layer"), (0, "attention"), (0, "mlp")}
    for r in loc:
        assert 0 <= r["still_memorized"] <= r["memorized"]
        if r["taxonomy"] == "paper":
            assert r["memorized"] == by_category[(r["model"], r["revision"], r["category"])]
    shares = run_sql(wh, "SELECT model, revision, layer, block, category, sum(share) AS s, sum(n) AS n FROM "
                         "gradient_shares GROUP BY model, revision, layer, block, category").to_pylist()
    assert {(r["model"], r["revision"]) for r in shares} == set(final)
    assert all(abs(r["s"] - 1) < 1e-9 for r in shares)
    assert all(r["n"] == n for r in shares if r["category"] == "all")
    assert "rewinding one layer to " in out and "Where in the model" in page

    # "Did my model memorize this text?": the text of a sequence the final model memorizes, alone and inside a long
    # document, through `semmem texts` (no --config: the warehouse's own family resolves trained-l@<last>).
    tokenizer = Tokenizer.from_file(str(tok))
    memorized = run_sql(wh, "SELECT c.sequence_id, s.text, s.tokens, c.memorization_score, c.matched_prefix, "
                            "c.sequence_duplicates FROM combined c JOIN sequences s ON c.sequence_id = s.sequence_id "
                            f"WHERE c.model = 'trained-l' AND c.revision = '{last}' AND c.is_memorized "
                            "ORDER BY c.sequence_id").to_pylist()
    row = next((r for r in memorized if tokenizer.encode(r["text"], add_special_tokens=False).ids == r["tokens"]),
               None)
    assert row is not None, f"none of the {len(memorized)} memorized sequences' texts tokenizes back to its tokens"
    before = "The harbour lights were dim."
    while len(tokenizer.encode(before + "\n").ids) % 32 or len(tokenizer.encode(before + "\n").ids) < 96:
        before += " Lanterns drifted past."
    doc = before + "\n" + row["text"] + "\nNobody on the quay said a word about it. " * 3
    at = len(tokenizer.encode(before + "\n").ids)
    assert tokenizer.encode(doc, add_special_tokens=False).ids[at:at + 64] == row["tokens"]
    texts = tmp_path / "mine.jsonl"
    texts.write_text("\n".join(json.dumps({"text": t}) for t in [row["text"], doc]) + "\n")
    corpus_versions = {i.name: i.version for i in list_tables(str(wh)) if i.name != "stage_runs"}  # but the log
    assert main(["texts", "--warehouse", str(wh), "--model", f"trained-l@{last}", str(texts)]) == 0
    out = capsys.readouterr().out
    window = run_sql(wh, "SELECT w.tokens, w.stream_count, m.memorization_score, m.matched_prefix, m.is_memorized "
                         "FROM text_windows w JOIN text_memorization m ON w.text_id = m.text_id AND "
                         "w.window = m.window WHERE w.text_id = 0").to_pylist()
    assert len(window) == 1 and window[0]["tokens"] == row["tokens"] and window[0]["is_memorized"]
    assert (window[0]["memorization_score"], window[0]["matched_prefix"]) == (row["memorization_score"],
                                                                               row["matched_prefix"])
    assert window[0]["stream_count"] == row["sequence_duplicates"]
    answer = run_sql(wh, "SELECT text_id, memorized, span_token_start, span_tokens FROM text_answers "
                         "ORDER BY text_id").to_pylist()
    assert answer[0]["memorized"] and answer[1]["memorized"] and answer[1]["span_token_start"] == at + 32
    assert "mine.jsonl:2" in out and f"from token {at + 32}" in out
    after = {i.name: i.version for i in list_tables(str(wh))}
    assert {t: after[t] for t in corpus_versions} == corpus_versions  # beside the corpus, not over it
    assert f"trained-l@{last}: {n:,} sequences" in summary_text(wh)  # the corpus answer is still current
    errors = declaration_errors(reads)  # each stage declares exactly the tables and config keys it reads
    assert not errors, "\n".join(errors)

    # A newer `sequences` makes the answer stale: the summary names why instead of printing old figures.
    seqs = Warehouse(spark, str(wh))
    seqs.write(spark.createDataFrame(seqs.read("sequences").toPandas()), "sequences", mode="overwrite")
    stale = summary_text(wh)
    assert "combined is stale: sequences changed" in stale and "run stage combine" in stale
    assert f"{n:,} sequences" not in stale
