"""One end-to-end run of every default stage, as `semmem run` does it, on a small corpus."""

from __future__ import annotations

from semmem.cli import main
from semmem.sql import run_sql
from semmem.stages import resolve
from tests.corpus import small_corpus, small_tokenizer


def test_semmem_run_all_default_stages(spark, tmp_path, capsys):
    small_corpus(tmp_path / "corpus", n_docs=90)
    tok = small_tokenizer(tmp_path / "tokenizer.json")
    wh = tmp_path / "wh"
    rc = main(["run", "--config", "conf/local.yaml", "--set", f"input.path=[{tmp_path / 'corpus'}]",
               "--set", f"tokenizer.name={tok}", "--set", "stream.seq_length=128", "--set", f"warehouse={wh}",
               "--set", ("train_model.sizes=[{name: s, hidden_size: 16, num_layers: 1, num_heads: 2}, "
                         "{name: l, hidden_size: 32, num_layers: 1, num_heads: 2}]"),
               "--set", "train_model.checkpoints=[0.5, 1.0]", "--set", "score.batch_size=16",
               "--set", "taxonomy.min_memorized=1"])  # the tiny family memorizes a few sequences
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
    forecast = run_sql(wh, "SELECT count(*) AS n FROM memorization_forecast").to_pylist()[0]["n"]
    assert forecast == 4 * 3
    # It ends with the answer, read from the tables, and the report's path.
    tail = out[out.index("What the model memorized"):]
    last = max((m["revision"] for m in models if m["model"] == "trained-l"), key=lambda r: int(r[4:]))
    assert f"trained-l@{last}: {n:,} sequences" in tail and "recitation" in tail
    assert "taxonomic" in tail and "forecasts" in tail
    assert (wh / "report" / "index.html").is_file() and str(wh / "report" / "index.html") in tail
    cats = run_sql(wh, "SELECT count(*) AS n FROM combined WHERE category IN "
                       "('recitation', 'reconstruction', 'recollection')").to_pylist()[0]["n"]
    assert cats == 4 * n  # every sequence of every checkpoint
    assert (wh / "report" / "family.png").is_file()
