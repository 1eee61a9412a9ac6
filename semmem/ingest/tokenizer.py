"""The tokenizer: Pythia's by default, or a byte-level BPE trained on the corpus when the hub is out of reach.

Whatever was used at ingest is saved as one `tokenizers` JSON under the warehouse, so every later stage (decoding,
model training, scoring) and every executor uses exactly the same vocabulary. Executors get the JSON string and
build the fast Rust tokenizer once per Python worker.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from semmem import storage
from semmem.artifacts import digest, short_sha256
from semmem.config import TokenizerConfig
from semmem.errors import ModelError

log = logging.getLogger(__name__)

EOD_TOKEN = "<|endoftext|>"  # id 0, like GPT-NeoX
PAD_TOKEN = "<|padding|>"  # id 1


def saved_tokenizer_path(warehouse: str | Path, recorded: str | None = None) -> str:
    """The tokenizer a warehouse's tables were made with: the one their lineage records (`recorded`), else where
    warehouses made before versioned tokenizers kept it, <warehouse>/_semmem/tokenizer/tokenizer.json."""
    return recorded or storage.join(warehouse, "_semmem", "tokenizer", "tokenizer.json")


def save_tokenizer(warehouse: str | Path, tok: Tokenizer) -> tuple[str, str]:
    """Save `tok` beside the tables under a name of its content, <warehouse>/_semmem/tokenizer/<sha256>/
    tokenizer.json, and return (its JSON, that location). A saved tokenizer is never replaced: tables keep pairing
    with the one recorded in their lineage even when a later ingest fails."""
    text = tok.to_str()
    location = storage.join(warehouse, "_semmem", "tokenizer", short_sha256(text.encode()),
                            "tokenizer.json")
    if not storage.is_file(location):
        storage.write_text(location, text)
    return text, location


def saved_tokenizer_json(warehouse: str | Path, recorded: str | None = None) -> str | None:
    """The JSON of the tokenizer the tables were made with (`saved_tokenizer_path`), or None when there is none."""
    path = saved_tokenizer_path(warehouse, recorded)
    return storage.read_text(path) if storage.is_file(path) else None


def tokenizer_digest(tok: Tokenizer) -> str:
    """The identity of a tokenizer, 16 hex digits: a hash of what decides the ids it gives (normalizer,
    pre-tokenizer, model with its vocabulary and merges, added tokens and their ids). Two tokenizers of the same
    vocabulary size are not the same tokenizer; padding, truncation and decoding settings do not change ids."""
    spec = json.loads(tok.to_str())
    key = {k: spec.get(k) for k in ("normalizer", "pre_tokenizer", "model")}
    key["added_tokens"] = sorted((t["id"], t["content"]) for t in spec.get("added_tokens") or [])
    return digest(key)


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE is set or huggingface.co does not resolve/connect (fails in ms, not minutes)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_named(cfg: TokenizerConfig) -> Tokenizer | None:
    """The tokenizer `cfg.name` names (local file/dir, HF cache, or hub), or None when it cannot be had."""
    path = Path(cfg.name)
    if path.is_file():
        return Tokenizer.from_file(str(path))
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    from transformers import AutoTokenizer

    try:  # the local cache first: fast and works offline
        hf = AutoTokenizer.from_pretrained(cfg.name, revision=cfg.revision, local_files_only=True)
    except (OSError, ValueError):
        if not hub_reachable():
            return None
        try:
            hf = AutoTokenizer.from_pretrained(cfg.name, revision=cfg.revision)
        except (OSError, ValueError):
            return None
    return hf.backend_tokenizer


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE like GPT-NeoX's (EOD id 0, padding id 1), trained deterministically on `texts`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOD_TOKEN, PAD_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def resolve_tokenizer(cfg: TokenizerConfig, training_texts: Iterable[str]) -> tuple[Tokenizer, str]:
    """The tokenizer to ingest with and a word on where it came from; trains the fallback when allowed."""
    tok = load_named(cfg)
    if tok is not None:
        return tok, cfg.name
    if cfg.offline_fallback != "train-bpe":
        raise ModelError(
            f"tokenizer {cfg.name!r} is not in the local Hugging Face cache and the hub cannot be reached. "
            f"Download it on a connected machine (`huggingface-cli download {cfg.name}`) and copy the cache "
            "(HF_HOME), or set tokenizer.name to a local tokenizer.json / directory, or set "
            "tokenizer.offline_fallback=train-bpe to train a byte-level BPE on the corpus.")
    log.info("tokenizer %s unavailable offline: training a byte-level BPE (vocab %d) on the corpus",
             cfg.name, cfg.vocab_size)
    return train_bpe(training_texts, cfg.vocab_size), f"byte-level BPE trained on the corpus (vocab {cfg.vocab_size})"


def check_eod(tok: Tokenizer, eod_id: int) -> None:
    if tok.id_to_token(eod_id) != EOD_TOKEN:
        raise ModelError(f"the tokenizer's id {eod_id} is {tok.id_to_token(eod_id)!r}, expected {EOD_TOKEN!r} "
                         "(set stream.eod_id to the id of the end-of-document token)")


@functools.lru_cache(maxsize=4)
def from_json(tokenizer_json: str) -> Tokenizer:
    """Build (once per Python worker) the tokenizer shipped to executors as a JSON string."""
    return Tokenizer.from_str(tokenizer_json)


def encode_batch(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def decode_batch(tok: Tokenizer, ids: list[list[int]]) -> list[str]:
    """Default decode settings of the Pythia tokenizer: special tokens such as <|endoftext|> stay in the text."""
    return tok.decode_batch(ids, skip_special_tokens=False)
