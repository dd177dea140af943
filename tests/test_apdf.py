"""APDF matrices and the dynamic ranking (SeAdpra, arXiv:2502.12189, eq. 1-5 and Algorithm 1; docs/methods.md#dynamic-ranking)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankalign.ranking.apdf import (
    apdf,
    arank_from_scores,
    dynamic_ranking,
    input_order,
    multi_apdf,
    positions_from_gains,
)
from rankalign.ranking.attributes import popularity_gain, semantic_gain

# --------------------------------------------------------------------------- naive references


def naive_apdf(g: list[float], source: str = "gain") -> np.ndarray:
    """Double loop over pairs, positions from a plain Python stable sort."""
    m = len(g)
    if source == "gain":
        order = sorted(range(m), key=lambda i: -g[i])
        pos = {i: k + 1 for k, i in enumerate(order)}
    else:
        pos = {i: i + 1 for i in range(m)}
    t = [1.0 / math.log(pos[i] + 1) for i in range(m)]
    out = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            out[i, j] = (g[i] - g[j]) * (t[i] - t[j])
    return out


def naive_dynamic(d: np.ndarray, arank: list[int]) -> list[int]:
    """The project's reading of Algorithm 1 (docs/methods.md#dynamic-ranking) on one list, with lists and dicts only."""
    m = d.shape[0]
    apos = {i: k for k, i in enumerate(arank)}
    remaining = list(range(m))
    out: list[int] = []
    while len(remaining) >= 2:
        pairs = [(r, c) for r in remaining for c in remaining if r < c]  # row-major
        if all(d[r, c] == 0 for r, c in pairs):
            break
        best = pairs[0]
        for rc in pairs[1:]:
            if d[rc] > d[best]:
                best = rc
        r, c = best
        w = r if apos[r] < apos[c] else c
        out.append(w)
        remaining.remove(w)
    return out + sorted(remaining, key=apos.__getitem__)


def literal_pseudo_code(d: np.ndarray, arank_pos: list[int]) -> list[int]:
    """Algorithm 1 exactly as printed in the SeAdpra paper (for the duplicate case)."""
    d = d.copy()
    m = d.shape[0]
    out: list[int] = []
    for _ in range(m - 1):
        idx = np.where(d == d.max())
        row, col = int(idx[0][0]), int(idx[1][0])
        w = row if arank_pos[row] < arank_pos[col] else col
        out.append(w)
        d[:, w] = 0
        d[w, :] = 0
    order = sorted(range(m), key=arank_pos.__getitem__)
    return out + [i for i in order if i not in out]


# --------------------------------------------------------------------------- hand-worked example

PHI = [0.5, 0.9, 0.7, 0.1, 0.3]
VOTES = [999, 9, 99, 0, 9]


def test_hand_worked_five_responses() -> None:
    """Five responses, semantic + popularity, every number derived by hand.

    phi = [0.5, 0.9, 0.7, 0.1, 0.3] -> G_Se = 2**phi - 1 = [0.414214, 0.866066, 0.624505, 0.071773, 0.231144];
    sorted desc: 1, 2, 0, 4, 3 -> l_Se = [3, 1, 2, 5, 4]; T = 1/ln(l+1) = [0.721348, 1.442695,
    0.910239, 0.558111, 0.621335].
    votes = [999, 9, 99, 0, 9], no dates -> G_Po = log10(v + 1) = [3, 1, 2, 0, 1]; stable sort desc:
    0, 2, 1, 4, 3 (1 and 4 tie, 1 first) -> l_Po = [1, 3, 2, 5, 4]; T = [1.442695, 0.721348,
    0.910239, 0.558111, 0.621335].

    pair   delta_Se  delta_Po  Delta_M
    (0,1)  0.325943  1.442695  0.470236
    (0,2)  0.039722  0.532456  0.021150
    (0,3)  0.055899  2.653753  0.148342
    (0,4)  0.018309  1.642720  0.030077
    (1,2)  0.128621  0.188892  0.024295
    (1,3)  0.702619  0.163237  0.114693
    (1,4)  0.521499  0.000000  0.000000   (equal popularity)
    (2,3)  0.194633  0.704257  0.137071
    (2,4)  0.113644  0.288904  0.032832
    (3,4)  0.010076  0.063224  0.000637

    ARank (phi desc) = [1, 2, 0, 4, 3].
    round 1: max (0,1) 0.470236 -> 1 is ahead in ARank -> append 1.
    round 2: among {0,2,3,4} max (0,3) 0.148342 -> append 0 (ahead of 3), although 2 is ARank-better.
    round 3: among {2,3,4} max (2,3) 0.137071 -> append 2.
    round 4: {3,4}: (3,4) 0.000637 -> append 4; then the rest: 3.
    D^R = [1, 0, 2, 4, 3].
    """
    g_se = semantic_gain(np.array(PHI))
    np.testing.assert_allclose(g_se, [0.414214, 0.866066, 0.624505, 0.071773, 0.231144], atol=1e-6)
    g_po = popularity_gain(np.array(VOTES))
    np.testing.assert_allclose(g_po, [3, 1, 2, 0, 1], atol=1e-12)
    assert positions_from_gains(g_se).tolist() == [3, 1, 2, 5, 4]
    assert positions_from_gains(g_po).tolist() == [1, 3, 2, 5, 4]
    d_se, d_po = apdf(g_se), apdf(g_po)
    d_m = multi_apdf([d_se, d_po])
    expected = {
        (0, 1): (0.325943, 1.442695, 0.470236), (0, 2): (0.039722, 0.532456, 0.021150),
        (0, 3): (0.055899, 2.653753, 0.148342), (0, 4): (0.018309, 1.642720, 0.030077),
        (1, 2): (0.128621, 0.188892, 0.024295), (1, 3): (0.702619, 0.163237, 0.114693),
        (1, 4): (0.521499, 0.0, 0.0), (2, 3): (0.194633, 0.704257, 0.137071),
        (2, 4): (0.113644, 0.288904, 0.032832), (3, 4): (0.010076, 0.063224, 0.000637),
    }
    for (i, j), (se, po, mm) in expected.items():
        for mat, val in ((d_se, se), (d_po, po), (d_m, mm)):
            assert mat[i, j] == pytest.approx(val, abs=2e-6)
            assert mat[j, i] == mat[i, j]
    assert np.all(np.diag(d_m) == 0)
    arank = arank_from_scores(np.array(PHI))
    assert arank.tolist() == [1, 2, 0, 4, 3]
    assert dynamic_ranking(d_m, arank).tolist() == [1, 0, 2, 4, 3]
    # the stacked [B, L, M, M] form gives the same matrix
    np.testing.assert_array_equal(multi_apdf(np.stack([d_se, d_po])[None])[0], d_m)


# --------------------------------------------------------------------------- APDF properties


def test_vectorised_apdf_equals_naive_double_loop() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = int(rng.integers(2, 9))
        g = np.round(rng.normal(size=m), 1)  # rounding makes ties common
        for source in ("gain", "input"):
            np.testing.assert_allclose(apdf(g, position_source=source), naive_apdf(g.tolist(), source), atol=1e-12)


def test_gain_positions_make_apdf_symmetric_nonnegative() -> None:
    rng = np.random.default_rng(1)
    g = rng.normal(size=(20, 7))
    d = apdf(g)
    assert d.shape == (20, 7, 7)
    np.testing.assert_array_equal(d, np.swapaxes(d, 1, 2))
    assert (d >= 0).all()
    assert (np.diagonal(d, axis1=1, axis2=2) == 0).all()


def test_positions_stable_on_ties_and_padding_last() -> None:
    g = np.array([[0.5, 0.9, 0.5, 0.9], [1.0, 2.0, 0.0, 0.0]])
    mask = np.array([[True, True, True, True], [True, True, False, False]])
    pos = positions_from_gains(g, mask)
    assert pos.tolist() == [[3, 1, 4, 2], [2, 1, 3, 4]]
    assert positions_from_gains(g, mask, "input").tolist() == [[1, 2, 3, 4], [1, 2, 3, 4]]


def test_padded_rows_and_columns_are_zero_and_real_block_unchanged() -> None:
    g = np.array([[0.3, 0.1, 0.7, 99.0, -5.0]])
    mask = np.array([[True, True, True, False, False]])
    d = apdf(g, mask)
    assert (d[0, 3:, :] == 0).all() and (d[0, :, 3:] == 0).all()
    np.testing.assert_allclose(d[0, :3, :3], apdf(g[0, :3]))


def test_masked_lists_rank_like_unpadded() -> None:
    rng = np.random.default_rng(2)
    big_m = 8
    for _ in range(40):
        m = int(rng.integers(2, big_m + 1))
        g1, g2, phi = rng.normal(size=(3, m))
        d_small = multi_apdf([apdf(g1), apdf(g2)])
        small = dynamic_ranking(d_small, arank_from_scores(phi))
        junk = rng.normal(size=(3, big_m - m))  # arbitrary values in the padded slots

        def pad(x: np.ndarray, k: int, junk=junk) -> np.ndarray:
            return np.concatenate([x, junk[k]])

        mask = np.arange(big_m) < m
        d_big = multi_apdf([apdf(pad(g1, 0), mask), apdf(pad(g2, 1), mask)])
        big = dynamic_ranking(d_big, arank_from_scores(pad(phi, 2), mask), mask)
        assert big.tolist() == small.tolist() + list(range(m, big_m))


# --------------------------------------------------------------------------- dynamic ranking


def test_dynamic_ranking_matches_naive_and_is_permutation_random() -> None:
    """Many B/M/tie/mask combinations: always a permutation; equal to the naive loop per list."""
    rng = np.random.default_rng(3)
    for trial in range(60):
        b, big_m = int(rng.integers(1, 6)), int(rng.integers(2, 9))
        lengths = rng.integers(2, big_m + 1, size=b) if trial % 2 else np.full(b, big_m)
        mask = np.arange(big_m)[None, :] < lengths[:, None]
        levels = int(rng.integers(1, 4))  # few distinct values -> many ties and zero entries
        g1 = rng.integers(0, levels + 1, size=(b, big_m)).astype(float)
        g2 = rng.integers(0, levels + 1, size=(b, big_m)).astype(float)
        phi = rng.integers(0, 3, size=(b, big_m)).astype(float)
        d = multi_apdf([apdf(g1, mask), apdf(g2, mask)])
        arank = arank_from_scores(phi, mask)
        out = dynamic_ranking(d, arank, mask)
        for k in range(b):
            m = int(lengths[k])
            assert sorted(out[k].tolist()) == list(range(big_m))
            assert out[k, m:].tolist() == list(range(m, big_m))
            sub_arank = [i for i in arank[k].tolist() if i < m]
            assert out[k, :m].tolist() == naive_dynamic(d[k, :m, :m], sub_arank)


def test_all_zero_submatrix_stops_instead_of_duplicating() -> None:
    """The literal pseudo-code appends a response twice when the rest of Delta_M is zero."""
    d = np.zeros((4, 4))
    d[0, 1] = d[1, 0] = 0.5  # only one non-zero pair
    arank_order = [2, 1, 3, 0]
    arank_pos = [3, 1, 0, 2]
    literal = literal_pseudo_code(d, arank_pos)
    assert len(literal) != len(set(literal))  # the bug the project's reading avoids
    out = dynamic_ranking(d, np.array(arank_order))
    # round 1 picks 1 (ahead of 0 in ARank); the rest is all zero -> ARank order of {0, 2, 3}
    assert out.tolist() == [1, 2, 3, 0]
    # everything zero: pure ARank order
    assert dynamic_ranking(np.zeros((3, 3)), np.array([2, 0, 1])).tolist() == [2, 0, 1]


def test_ties_take_first_row_major_pair() -> None:
    d = np.zeros((4, 4))
    for i, j in ((0, 3), (1, 2)):  # equal largest entries; (0,3) comes first in row-major order
        d[i, j] = d[j, i] = 1.0
    assert dynamic_ranking(d, np.array([3, 2, 1, 0])).tolist()[0] == 3
    assert dynamic_ranking(d, np.array([0, 1, 2, 3])).tolist()[0] == 0


def test_default_arank_is_input_order() -> None:
    mask = np.array([[True, True, False]])
    assert input_order(mask).tolist() == [[0, 1, 2]]
    d = np.array([[0, 2.0, 0], [2.0, 0, 0], [0, 0, 0]])
    assert dynamic_ranking(d[None], mask=mask).tolist() == [[0, 1, 2]]


def test_dynamic_ranking_invariant_to_shuffling_candidates() -> None:
    """Permuting the responses (gains and phi together) permutes D^R the same way (no ties)."""
    rng = np.random.default_rng(4)
    for _ in range(20):
        m = 6
        g1, g2, phi = rng.normal(size=(3, m))
        base = dynamic_ranking(multi_apdf([apdf(g1), apdf(g2)]), arank_from_scores(phi))
        perm = rng.permutation(m)
        shuffled = dynamic_ranking(multi_apdf([apdf(g1[perm]), apdf(g2[perm])]), arank_from_scores(phi[perm]))
        assert [int(perm[i]) for i in shuffled] == base.tolist()


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="list 0, response 1 is nan"):
        apdf(np.array([[0.1, np.nan, 0.3]]))
    with pytest.raises(ValueError, match="position source"):
        positions_from_gains(np.array([1.0, 2.0]), source="rank")
    with pytest.raises(ValueError, match="not a permutation"):
        dynamic_ranking(np.zeros((3, 3)), np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="symmetric"):
        dynamic_ranking(np.array([[0, 1.0], [0, 0]]))
    with pytest.raises(ValueError, match="mask shape"):
        apdf(np.zeros((2, 3)), np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="mask must have shape"):
        dynamic_ranking(np.zeros((1, 2, 2)), mask=np.ones((2, 1), dtype=bool))
    with pytest.raises(ValueError, match="differ in shape"):
        multi_apdf([np.zeros((2, 2)), np.zeros((3, 3))])
    # NaN in padded entries is ignored
    d = apdf(np.array([[0.1, 0.2, np.nan]]), np.array([[True, True, False]]))
    assert np.isfinite(d).all()
