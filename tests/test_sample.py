"""The bundled sample is what its generator writes, byte for byte (`make sample`), and holds every kind of text the
taxonomy needs."""

from __future__ import annotations

import random
import re

from semmem.features.templating import classify
from semmem.sample import LICENCE, N_DOCS, NOTICES, SAMPLE_DIR, SEED, counting, documents, write_sample


def test_the_generator_rewrites_the_shipped_sample_byte_for_byte(tmp_path):
    written = write_sample(tmp_path)
    shipped = sorted(SAMPLE_DIR.glob("*.jsonl.zst"))
    assert [p.name for p in written] == [p.name for p in shipped]
    assert all(w.read_bytes() == s.read_bytes() for w, s in zip(written, shipped))


def test_counting_documents_increment_and_boilerplate_repeats():
    r = random.Random(5)
    for _ in range(50):
        text = counting(r)
        assert classify(text) == (True, False, True)
        numbers = [int(x) for x in re.findall(r"[0-9]+", text)]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) and 60 <= len(numbers) <= 150
        assert numbers[-1] < 300
    texts = [d["text"] for d in documents(SEED, N_DOCS)]
    assert texts.count(LICENCE) > 100
    assert sum(t.startswith(NOTICES) for t in texts) > 200
