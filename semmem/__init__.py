"""semmem: what a language model memorized from its training data, and why.

A distributed re-implementation of EleutherAI's semantic-memorization pipeline on Spark and Delta Lake.
"""

__version__ = "0.1.0"
