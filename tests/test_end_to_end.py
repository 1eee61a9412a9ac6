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
               "--set", "train_model.hidden_size=32", "--set", "train_model.num_layers=1",
               "--set", "train_model.epochs=1", "--set", "score.batch_size=16"])
    assert rc == 0
    out = capsys.readouterr().out
    ran = [s.name for s in resolve([])]
    assert f"ran {', '.join(ran)}" in out
    n = run_sql(wh, "SELECT count(*) AS n FROM sequences").to_pylist()[0]["n"]
    assert n == run_sql(wh, "SELECT count(*) AS n FROM token_rows").to_pylist()[0]["n"] > 10
    # Every per-sequence table has exactly one row per sequence, joined on sequence_id.
    for t in ("sequence_duplicates", "token_frequency_stats", "templating", "huffman", "memorization", "embeddings",
              "semantic_matches", "textual_matches", "code_scores", "combined"):
        got = run_sql(wh, f"SELECT count(*) AS n, count(DISTINCT s.sequence_id) AS d FROM sequences s "
                          f"JOIN {t} x ON s.sequence_id = x.sequence_id").to_pylist()[0]
        assert got == {"n": n, "d": n}, t
    # Every evaluation window occurs in the stream at least once (at its own row's offset 32).
    assert run_sql(wh, "SELECT min(sequence_duplicates) AS m FROM sequence_duplicates").to_pylist()[0]["m"] >= 1
    models = run_sql(wh, "SELECT DISTINCT model, revision FROM memorization").to_pylist()
    assert models == [{"model": "trained", "revision": "local"}]
    # It ends with the answer, read from the tables, and the report's path.
    tail = out[out.index("What the model memorized"):]
    assert f"trained@local: {n:,} sequences" in tail and "recitation" in tail and "taxonomic" in tail
    assert (wh / "report" / "index.html").is_file() and str(wh / "report" / "index.html") in tail
    cats = run_sql(wh, "SELECT count(*) AS n FROM combined WHERE category IN "
                       "('recitation', 'reconstruction', 'recollection')").to_pylist()[0]["n"]
    assert cats == n
