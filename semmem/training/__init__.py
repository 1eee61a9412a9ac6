"""Training code: the trainer of GPT-NeoX models, the model family of controlled experiments, and capacity runs."""
