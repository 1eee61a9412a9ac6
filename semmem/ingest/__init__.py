"""Corpus ingestion: Pile jsonl(.zst) shards, Megatron .bin/.idx, or a table of sequences."""
