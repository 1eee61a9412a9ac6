"""Stage `ingest`: corpus files -> token_rows (the training stream) and sequences (the evaluation windows)."""
