"""Model scoring: memorization (spec §1.2) and perplexities (§2.9) per model@revision, and the tiny default model.

- `memorization`: pure torch scoring (teacher-forced fast path + partial greedy generation) and its Spark wrapper.
- `models`: model specs (`name@revision`, local folders, `trained`) and loading with offline-friendly errors.
- `train`: the small GPT-NeoX trainer used by stage train_model.
"""
