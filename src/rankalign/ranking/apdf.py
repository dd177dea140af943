"""Attribute-Perceptual Distance Factors and the self-supervised dynamic ranking.

SeAdpra (Yang et al., arXiv:2502.12189) §2.2, eq. 1-5 and Algorithm 1, with the decisions
of docs/methods.md#apdf and docs/methods.md#dynamic-ranking. Everything is
batched numpy over ``[B, M]`` lists with a boolean ``mask`` (``True`` = a real response) for
lists shorter than ``M``; there is no Python loop over pairs. Only numpy is needed.

Shapes: ``gains``/``mask``/positions ``[B, M]``; APDF matrices ``[B, M, M]``; a stack of L
attribute matrices ``[B, L, M, M]``; orders (ARank, D^R) ``[B, M]`` int64 permutations, best
first, padded responses last.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POSITION_SOURCES = ("gain", "input")


def _as_batch(gains: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Promote ``[M]`` to ``[1, M]``; default mask all-True; reject NaN/inf on real entries."""
    g = np.asarray(gains, dtype=np.float64)
    squeeze = g.ndim == 1
    if squeeze:
        g = g[None, :]
    if g.ndim != 2:
        raise ValueError(f"gains must have shape [B, M] or [M], got {g.shape}")
    if mask is None:
        m = np.ones(g.shape, dtype=bool)
    else:
        m = np.asarray(mask, dtype=bool)
        if squeeze and m.ndim == 1:
            m = m[None, :]
        if m.shape != g.shape:
            raise ValueError(f"mask shape {m.shape} differs from gains shape {g.shape}")
    bad = m & ~np.isfinite(g)
    if bad.any():
        b, i = map(int, np.argwhere(bad)[0])
        raise ValueError(f"gain of list {b}, response {i} is {g[b, i]}; gains must be finite numbers")
    return g, m, squeeze


def positions_from_gains(
    gains: np.ndarray, mask: np.ndarray | None = None, source: str = "gain"
) -> np.ndarray:
    """1-based ranking positions l_i used by T(i) = 1/ln(l_i + 1) (SeAdpra eq. 2).

    ``source="gain"`` (the project's decision, docs/methods.md#apdf): l_i is the position of
    response i when the real responses are sorted by gain descending with a stable sort
    (equal gains keep the lower index first). ``source="input"``: l_i = i + 1, the order the
    responses were given in. Padded entries get the positions after the real ones (they are ignored downstream).

    Args:
        gains: ``[B, M]`` (or ``[M]``) gains G(i).
        mask: ``[B, M]`` bool, ``True`` for real responses; default all real.
        source: ``"gain"`` or ``"input"``.
    Returns:
        ``[B, M]`` (or ``[M]``) int64 positions, a permutation of 1..M per list.
    """
    if source not in POSITION_SOURCES:
        raise ValueError(f"position source must be one of {POSITION_SOURCES}, got {source!r}")
    g, m, squeeze = _as_batch(gains, mask)
    b, n = g.shape
    if source == "input":
        # real responses in input order, padded ones after them
        key = np.where(m, 0, 1)
        order = np.argsort(key, axis=1, kind="stable")
    else:
        key = np.where(m, -g, np.inf)  # descending gain; padded last
        order = np.argsort(key, axis=1, kind="stable")
    pos = np.empty((b, n), dtype=np.int64)
    np.put_along_axis(pos, order, np.broadcast_to(np.arange(1, n + 1), (b, n)), axis=1)
    return pos[0] if squeeze else pos


def apdf(gains: np.ndarray, mask: np.ndarray | None = None, position_source: str = "gain") -> np.ndarray:
    """Single-attribute APDF matrix (SeAdpra eq. 1-2).

    delta(i, j) = (G(i) - G(j)) * (T(i) - T(j)),   T(i) = 1 / ln(l_i + 1),

    l_i from :func:`positions_from_gains`. With gain positions, delta is symmetric, >= 0, with a
    zero diagonal; rows and columns of padded responses are 0.

    Naive equivalent::

        for b, i, j: out[b, i, j] = (G[b,i] - G[b,j]) * (T[b,i] - T[b,j]) if mask[b,i] and mask[b,j] else 0

    Args:
        gains: ``[B, M]`` (or ``[M]``).
        mask: ``[B, M]`` bool, default all real.
        position_source: ``"gain"`` (default, docs/methods.md#apdf) or ``"input"``.
    Returns:
        ``[B, M, M]`` (or ``[M, M]``) float64.
    """
    g, m, squeeze = _as_batch(gains, mask)
    g = np.where(m, g, 0.0)
    pos = positions_from_gains(g, m, position_source)
    t = 1.0 / np.log(pos + 1.0)  # [B, M]
    delta = (g[:, :, None] - g[:, None, :]) * (t[:, :, None] - t[:, None, :])  # [B, M, M]
    pair = m[:, :, None] & m[:, None, :]
    delta = np.where(pair, delta, 0.0)
    return delta[0] if squeeze else delta


def multi_apdf(matrices: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Multi-APDF matrix Delta_M = elementwise product of the L single-attribute matrices (eq. 3-4).

    Args:
        matrices: a sequence of L arrays ``[B, M, M]`` (or ``[M, M]``), or one array ``[B, L, M, M]``.
    Returns:
        ``[B, M, M]`` (or ``[M, M]``).
    """
    if isinstance(matrices, np.ndarray):
        if matrices.ndim != 4:
            raise ValueError(f"a stacked multi-APDF input must be [B, L, M, M], got {matrices.shape}")
        if matrices.shape[1] == 0:
            raise ValueError("multi_apdf needs at least one attribute matrix")
        return np.prod(matrices, axis=1)
    mats = [np.asarray(x, dtype=np.float64) for x in matrices]
    if not mats:
        raise ValueError("multi_apdf needs at least one attribute matrix")
    shapes = {x.shape for x in mats}
    if len(shapes) != 1:
        raise ValueError(f"APDF matrices differ in shape: {sorted(shapes)}")
    out = mats[0].copy()
    for x in mats[1:]:
        out *= x
    return out


def arank_from_scores(phi: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """ARank: the semantic order, phi descending, stable (ties keep the lower index first).

    Args:
        phi: ``[B, M]`` cosine similarities (or any score, higher = better).
        mask: ``[B, M]``; padded entries go last in index order.
    Returns:
        ``[B, M]`` int64 order, best first.
    """
    p, m, squeeze = _as_batch(phi, mask)
    order = np.argsort(np.where(m, -p, np.inf), axis=1, kind="stable")
    return order[0] if squeeze else order


def input_order(mask: np.ndarray) -> np.ndarray:
    """ARank when no semantic attribute is used: real responses in input order, padded last."""
    m = np.asarray(mask, dtype=bool)
    return np.argsort(np.where(m, 0, 1), axis=-1, kind="stable").astype(np.int64)


def _check_order(order: np.ndarray, b: int, n: int, name: str) -> np.ndarray:
    o = np.asarray(order)
    if o.shape != (b, n):
        raise ValueError(f"{name} must have shape {(b, n)}, got {o.shape}")
    if not np.issubdtype(o.dtype, np.integer):
        raise ValueError(f"{name} must hold integer indices, got dtype {o.dtype}")
    ok = (np.sort(o, axis=1) == np.arange(n)).all(axis=1)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise ValueError(f"{name} of list {bad} is {o[bad].tolist()}, not a permutation of 0..{n - 1}")
    return o.astype(np.int64)


def dynamic_ranking(
    delta: np.ndarray, arank: np.ndarray | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    """Self-supervised dynamic ranking D^R (SeAdpra Algorithm 1, eq. 5; decisions in
    docs/methods.md#dynamic-ranking).

    While at least two real responses remain: take the largest entry (r, c), r < c, of Delta_M
    restricted to the remaining responses (ties: the first in row-major order); append whichever
    of r and c comes first in ARank; remove it (its row and column). When the remaining
    submatrix is all zeros, stop early (the literal pseudo-code would append a response twice).
    Then append the remaining responses in ARank order, then the padded indices in index order.

    Naive equivalent (one list)::

        remaining = list(range(m)); out = []
        while len(remaining) >= 2:
            pairs = [(r, c) for r in remaining for c in remaining if r < c]
            if all(D[r][c] == 0 for r, c in pairs): break
            r, c = max(pairs, key=lambda rc: D[rc])   # first max in row-major order
            w = r if apos[r] < apos[c] else c
            out.append(w); remaining.remove(w)
        out += sorted(remaining, key=apos.__getitem__)

    The loop runs over rounds (<= M - 1); every round is vectorised over the batch.

    Args:
        delta: ``[B, M, M]`` (or ``[M, M]``) symmetric multi-APDF matrix.
        arank: ``[B, M]`` ARank order (a permutation, best first; padded responses may sit
            anywhere — they are ignored). Default: the input order.
        mask: ``[B, M]`` bool, ``True`` for real responses; default all real.
    Returns:
        ``[B, M]`` (or ``[M]``) int64 permutations: D^R of the real responses, then padded indices.
    Raises:
        ValueError: wrong shapes, a non-finite or asymmetric ``delta``, an ARank that is not a
            permutation.
    """
    d, m, squeeze = _checked_apdf(delta, mask)
    b, n, _ = d.shape
    if arank is None:
        order = input_order(m)
    else:
        a = np.asarray(arank)
        order = _check_order(a[None] if squeeze and a.ndim == 1 else a, b, n, "arank")
    # apos[b, i] = position of response i in ARank (0 = best)
    apos = np.empty((b, n), dtype=np.int64)
    np.put_along_axis(apos, order, np.broadcast_to(np.arange(n), (b, n)), axis=1)
    picked_at = _pick_rounds(d, m, apos)
    # final order: picked responses by round, then the rest in ARank order, then padding
    key = np.where(picked_at >= 0, picked_at, np.where(m, n + apos, 2 * n + np.arange(n)))
    out = np.argsort(key, axis=1, kind="stable").astype(np.int64)
    return out[0] if squeeze else out


def _checked_apdf(delta: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(delta [B, M, M] float64 with padded pairs zeroed, mask [B, M] bool, squeeze)``.

    ``squeeze`` is True when a single ``[M, M]`` matrix was given. Raises ``ValueError`` on
    wrong shapes, non-finite entries among real pairs, or an asymmetric matrix.
    """
    d = np.asarray(delta, dtype=np.float64)
    squeeze = d.ndim == 2
    if squeeze:
        d = d[None]
    if d.ndim != 3 or d.shape[1] != d.shape[2]:
        raise ValueError(f"delta must have shape [B, M, M] or [M, M], got {np.shape(delta)}")
    b, n, _ = d.shape
    if mask is None:
        m = np.ones((b, n), dtype=bool)
    else:
        m = np.asarray(mask, dtype=bool)
        if squeeze and m.ndim == 1:
            m = m[None, :]
        if m.shape != (b, n):
            raise ValueError(f"mask must have shape {(b, n)}, got {np.shape(mask)}")
    pair_real = m[:, :, None] & m[:, None, :]
    if not np.isfinite(d[pair_real]).all():
        raise ValueError("delta holds NaN or infinite entries")
    d = np.where(pair_real, d, 0.0)
    if not np.allclose(d, np.swapaxes(d, 1, 2), rtol=1e-9, atol=1e-12):
        raise ValueError("delta must be symmetric (an APDF matrix is); got an asymmetric matrix")
    return d, m, squeeze


def _pick_rounds(d: np.ndarray, m: np.ndarray, apos: np.ndarray) -> np.ndarray:
    """``[B, M]`` round in which each response is appended to D^R (-1: never picked).

    Each round, per list: the largest remaining entry (r, c), r < c (first in row-major order),
    gives the one of r, c ranked first in ARank (``apos``); stop when the remaining submatrix
    is all zeros. Vectorised over the batch; at most M - 1 rounds.
    """
    b, n, _ = d.shape
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)  # r < c
    remaining = m.copy()
    picked_at = np.full((b, n), -1, dtype=np.int64)  # round in which a response was appended
    rows = np.arange(b)
    for step in range(max(n - 1, 0)):
        live = remaining[:, :, None] & remaining[:, None, :] & upper  # [B, M, M]
        go = (live & (d != 0)).any(axis=(1, 2))  # >= 2 remain and something non-zero among them
        if not go.any():
            break
        vals = np.where(live, d, -np.inf).reshape(b, n * n)
        flat = vals.argmax(axis=1)  # first maximum in row-major order
        r, c = np.divmod(flat, n)
        win = np.where(apos[rows, r] < apos[rows, c], r, c)
        sel = rows[go]
        picked_at[sel, win[go]] = step
        remaining[sel, win[go]] = False
    return picked_at
