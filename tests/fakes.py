"""Test doubles shared by several test modules."""

from __future__ import annotations

import numpy as np


class LetterEncoder:
    """Deterministic letter-count embedding (27-d: a..z plus a constant) standing in for MiniLM.

    Counts its ``encode`` calls and the texts it saw, so tests can check the embedding cache.
    """

    def __init__(self, model_id: str = "fake-letters") -> None:
        self.model_id = model_id
        self.calls = 0
        self.texts_seen: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts_seen.extend(texts)
        out = np.zeros((len(texts), 27), dtype=np.float32)
        for k, t in enumerate(texts):
            for ch in t.lower():
                if "a" <= ch <= "z":
                    out[k, ord(ch) - 97] += 1
            out[k, 26] = 1.0
        return out
