"""One exception tree: every error a user can cause says what was found, what was expected and how to fix it."""


class SemmemError(Exception):
    """Base of all errors semmem raises on purpose; the CLI prints the message without a traceback."""


class ConfigError(SemmemError):
    """A config file, key or value is wrong."""


class InputError(SemmemError):
    """An input corpus file is missing, malformed or inconsistent."""


class TableError(SemmemError):
    """A table is missing, has the wrong schema, or a write could not be committed."""


class StageError(SemmemError):
    """A stage cannot run: unknown name, or a table it needs has not been produced yet."""


class ModelError(SemmemError):
    """A model or tokenizer cannot be loaded."""
