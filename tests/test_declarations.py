"""The feature declarations are the one place a feature is described: the catalog, `combined`, `combine` and the
taxonomy follow them."""

from __future__ import annotations

import pyarrow as pa
import pytest

from semmem.catalog import table
from semmem.errors import StageError
from semmem.features.declarations import COMBINE_COLUMNS, FEATURES, MODEL_COLUMNS
from semmem.stages import REGISTRY
from semmem.taxonomy import DISPLAY_NAMES, MODEL_FEATURES, UPSTREAM_NAMES
from semmem.taxonomy.combine import FEATURE_TABLES, combine


def test_each_feature_table_is_its_key_and_its_declared_columns():
    for f in FEATURES:
        schema = table(f.table).schema
        assert schema == pa.schema([*f.key, *((c.name, c.type) for c in f.columns)]), f.table
        assert f.table in REGISTRY[f.stage].outputs


def test_combined_is_the_union_of_the_columns_declared_to_enter_it():
    combined = table("combined").schema
    from_features = [(c.name, c.type) for f in FEATURES for c in f.columns if c.combined]
    own = [("model", pa.string()), ("revision", pa.string()), ("sequence_id", pa.int64()),
           ("pile_set_name", pa.string()), *COMBINE_COLUMNS]
    assert sorted(map(str, combined)) == sorted(str(pa.field(*c)) for c in [*own, *from_features])
    assert len(combined.names) == len(set(combined.names))
    left_out = {c.name for f in FEATURES for c in f.columns if not c.combined}
    assert left_out == {"continuation_nll_bits", "frequencies", "loss", "min_k_prob", "min_k_plus_plus", "memorized_at",
                        "zlib_ratio"} and not left_out & set(combined.names)
    assert list(FEATURE_TABLES) == [f.table for f in FEATURES if f.table != "memorization"]


def test_the_model_features_are_upstreams_in_its_order():
    # spec §4.1: 13 continuous features + is_templating, in upstream's order, under upstream's names
    upstream = ["sequence_duplicates", "max_frequency", "avg_frequency", "min_frequency", "median_frequency",
                "p25_frequency", "p75_frequency", "generation_perplexity", "prompt_perplexity", "sequence_perplexity",
                "0_8_templates", "0_8_snowclones", "huffman_coding_length", "is_templating"]
    assert [UPSTREAM_NAMES[f] for f in MODEL_FEATURES] == upstream
    assert [c.model for c in MODEL_COLUMNS] == list(range(1, 15))
    assert all(DISPLAY_NAMES[f] for f in MODEL_FEATURES) and set(MODEL_FEATURES) <= set(table("combined").columns)


def test_combine_refuses_a_column_no_declaration_lists(spark):
    labels = spark.createDataFrame([("m", "r", 1, 1.0, True, 32, 1.0, 1.0, 1.0, 0.0, 0.1, -0.5, -0.2, {32: True},
                                     0.01)],
                                   table("memorization").spark_schema)
    sequences = spark.createDataFrame([(1, "Pile-CC")], "sequence_id long, pile_set_name string")
    huffman = spark.createDataFrame([(1, 3.0, 3.1, 7)], "sequence_id long, huffman_coding_length double, "
                                                        "huffman_code_length_true double, zlib_ratio long")
    with pytest.raises(StageError, match="huffman has column.s. zlib_ratio that its declaration"):
        combine(labels, sequences, {"huffman": huffman}, 5)
    ok = combine(labels, sequences, {"huffman": huffman.drop("zlib_ratio")}, 5)
    row = ok.first().asDict()
    assert row["huffman_coding_length"] == 3.0 and row["sequence_duplicates"] is None and row["category"] is None
