"""Wasserstein-robust DPO (docs/methods.md#robust-dpo): the LP solver against brute force and a
hand-worked case, its behaviour in epsilon, the loss at epsilon = 0, gradients, bad input, training.

The worst case is Mohajerin Esfahani & Kuhn's program (arXiv:1505.05116, Theorem 4.2). Brute force
here needs no LP: on each interval between consecutive points of C = {xi_min, 1, the samples, the
kinks of l^} both l^ and every |. - xi_i| are affine, so mass inside an interval can be split to its
two ends without changing cost or value; an optimal worst case therefore lives on C, and a basic
optimum of the transport problem (N equality rows + 1 budget row) moves every sample to one point of
C except at most one, split between two. Enumerating those (primal) and the breakpoints of the
one-dimensional dual ``min_{lam >= 0} lam eps + sum_i w_i max_{c in C} [l^(c) - lam |c - xi_i|]``
gives the optimum twice, exactly.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from rankalign.errors import ConfigError
from rankalign.losses import build_loss
from rankalign.losses.dpo_wdro import piecewise_loss, solve_worst_case, tangent_pieces
from test_losses import make_batch, rows
from training_tiny import save_tiny, tiny_records

F64 = torch.float64


# --------------------------------------------------------------------------- brute force
def lhat(x: float, a: np.ndarray, b: np.ndarray) -> float:
    return max(float(ak * x + bk) for ak, bk in zip(a, b))


def candidates(xi: list[float], a: np.ndarray, b: np.ndarray, xi_min: float) -> list[float]:
    kinks = [(b[k + 1] - b[k]) / (a[k] - a[k + 1]) for k in range(len(a) - 1)]
    return sorted({xi_min, 1.0, *xi, *(x for x in kinks if xi_min < x < 1)})


def primal_brute_force(xi: list[float], w: list[float], eps: float, a: np.ndarray, b: np.ndarray,
                       xi_min: float) -> float:
    """Every sample to one point of C, one sample split between two (fraction theta): the best value."""
    c = candidates(xi, a, b, xi_min)
    n, best = len(xi), -math.inf
    for split in range(n):
        for dest in itertools.product(c, repeat=n):
            for other in c:
                base_cost = sum(w[i] * abs(dest[i] - xi[i]) for i in range(n) if i != split)
                base_val = sum(w[i] * lhat(dest[i], a, b) for i in range(n) if i != split)
                cost1, cost2 = w[split] * abs(dest[split] - xi[split]), w[split] * abs(other - xi[split])
                val1, val2 = w[split] * lhat(dest[split], a, b), w[split] * lhat(other, a, b)
                thetas = [0.0, 1.0]
                if cost2 != cost1:
                    thetas.append((eps - base_cost - cost1) / (cost2 - cost1))
                for th in thetas:
                    if 0 <= th <= 1 and base_cost + (1 - th) * cost1 + th * cost2 <= eps + 1e-12:
                        best = max(best, base_val + (1 - th) * val1 + th * val2)
    return best


def dual_brute_force(xi: list[float], w: list[float], eps: float, a: np.ndarray, b: np.ndarray,
                     xi_min: float) -> float:
    """The dual is convex and piecewise affine in lam; its minimum is at 0 or where an inner argmax changes."""
    c = candidates(xi, a, b, xi_min)

    def dual(lam: float) -> float:
        return lam * eps + sum(wi * max(lhat(p, a, b) - lam * abs(p - x) for p in c) for wi, x in zip(w, xi))

    lams = {0.0}
    for x in xi:
        for p, r in itertools.combinations(c, 2):
            dp, dr = abs(p - x), abs(r - x)
            if dp != dr:
                lam = (lhat(p, a, b) - lhat(r, a, b)) / (dp - dr)
                if lam >= 0:
                    lams.add(lam)
    return min(dual(lam) for lam in lams)


INSTANCES = [
    ([0.5, 0.8], [0.5, 0.5], 0.05, 3, 0.1),
    ([0.3, 0.55, 0.8], [0.25, 0.25, 0.5], 0.08, 4, 0.05),
    ([0.12, 0.9, 0.97], [0.5, 0.3, 0.2], 0.2, 2, 0.1),
    ([0.6, 0.61], [0.4, 0.6], 0.5, 5, 0.2),  # budget beyond moving everything: all mass at xi_min
    ([0.25, 0.7, 0.4], [1 / 3, 1 / 3, 1 / 3], 0.01, 1, 0.05),  # one piece: a linear loss
]


@pytest.mark.parametrize(("xi", "w", "eps", "k", "xi_min"), INSTANCES)
def test_lp_equals_brute_force(xi: list[float], w: list[float], eps: float, k: int, xi_min: float) -> None:
    a, b = tangent_pieces(k, xi_min)
    sol = solve_worst_case(np.array(xi), np.array(w), eps, a, b, xi_min)
    primal = primal_brute_force(xi, w, eps, a, b, xi_min)
    dual = dual_brute_force(xi, w, eps, a, b, xi_min)
    assert sol.objective == pytest.approx(primal, abs=1e-9)
    assert sol.objective == pytest.approx(dual, abs=1e-9)
    # the distribution the solver returns is feasible and has that value
    assert np.allclose(sol.alpha.sum(1), 1) and (sol.alpha >= -1e-12).all()
    assert ((sol.atoms >= xi_min - 1e-12) & (sol.atoms <= 1 + 1e-12)).all()
    cost = sum(w[i] * sol.alpha[i, j] * abs(sol.atoms[i, j] - xi[i]) for i in range(len(xi)) for j in range(k))
    assert cost <= eps + 1e-9 and cost == pytest.approx(sol.transport, abs=1e-12)
    value = sum(w[i] * sol.alpha[i, j] * lhat(sol.atoms[i, j], a, b) for i in range(len(xi)) for j in range(k))
    assert value == pytest.approx(sol.objective, abs=1e-9)


def test_hand_worked_instance() -> None:
    """K = 2, xi_min = 1/4: tangents at 1/4 and 1: l^ = max(-4 xi + 1 + ln 4, 1 - xi).
    One sample xi = 1/2 (l^ = 1/2), eps = 0.05. Moving a share theta to 1/4 costs theta/4, so
    theta = 0.2, and l^(1/4) = ln 4: V = 0.8 * 0.5 + 0.2 * ln 4 = 0.6772589. Moving the whole mass
    by 0.05 instead gives only l^(0.45) = 0.5862944. The budget's price is the secant slope
    (ln 4 - 0.5) / 0.25 = 3.5451774; dV/dxi = 0.8 * (-1) - 0.2 * 3.5451774 = -1.5090355."""
    a, b = tangent_pieces(2, 0.25)
    np.testing.assert_allclose(a, [-4, -1])
    np.testing.assert_allclose(b, [1 + math.log(4), 1])
    sol = solve_worst_case(np.array([0.5]), np.array([1.0]), 0.05, a, b, 0.25)
    assert sol.objective == pytest.approx(0.6772589, abs=1e-7)
    assert sol.nominal == pytest.approx(0.5)
    assert sol.lam == pytest.approx(3.5451774, abs=1e-7)
    assert sol.grad[0] == pytest.approx(-1.5090355, abs=1e-7)
    moved = sol.alpha[0, 0]  # the piece of the tangent at xi_min holds the moved share
    assert moved == pytest.approx(0.2) and sol.atoms[0, 0] == pytest.approx(0.25)


def test_tangents_touch_and_bound_minus_log() -> None:
    a, b = tangent_pieces(16, 0.01)
    t = -1 / a
    assert t[0] == pytest.approx(0.01) and t[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(np.diff(np.log(t)), np.log(100) / 15)  # geometric spacing
    xs = np.linspace(0.01, 1, 2001)
    val, _ = piecewise_loss(xs, a, b)
    gap = -np.log(xs) - val
    assert gap.min() >= -1e-12  # a lower bound of -log xi ...
    np.testing.assert_allclose(piecewise_loss(t, a, b)[0], -np.log(t), atol=1e-12)  # ... touching at the t_k
    c = 100 ** (1 / 15)
    u = c * math.log(c) / (c - 1)
    kinks = np.array(candidates([], a, b, 0.01)[1:-1])  # the gap is largest where two tangents meet
    at_kinks = -np.log(kinks) - piecewise_loss(kinks, a, b)[0]
    np.testing.assert_allclose(at_kinks, u - 1 - math.log(u), rtol=1e-9)  # the same everywhere: 0.0118
    assert gap.max() <= at_kinks.max() + 1e-12


def test_gradient_of_the_worst_case_is_the_envelope() -> None:
    rng = np.random.default_rng(3)
    xi = rng.uniform(0.05, 0.95, 7)
    w = rng.uniform(0.5, 1.5, 7)
    w /= w.sum()
    a, b = tangent_pieces(8, 0.02)
    sol = solve_worst_case(xi, w, 0.06, a, b, 0.02)
    for i in range(7):
        d = np.zeros(7)
        d[i] = 1e-6
        up = solve_worst_case(xi + d, w, 0.06, a, b, 0.02).objective
        down = solve_worst_case(xi - d, w, 0.06, a, b, 0.02).objective
        assert sol.grad[i] == pytest.approx((up - down) / 2e-6, abs=1e-6)


# --------------------------------------------------------------------------- epsilon
def test_epsilon_zero_moves_nothing_and_weights_are_uniform() -> None:
    rng = np.random.default_rng(0)
    xi = rng.uniform(0.01, 1, 12)
    w = np.full(12, 1 / 12)
    a, b = tangent_pieces(16, 0.01)
    sol = solve_worst_case(xi, w, 0.0, a, b, 0.01)
    np.testing.assert_allclose(sol.atoms, np.repeat(xi[:, None], 16, 1), atol=1e-12)
    np.testing.assert_allclose(sol.alpha.sum(1), 1, atol=1e-12)
    np.testing.assert_allclose(sol.weights, 1, atol=1e-9)
    assert sol.transport == 0 and sol.objective == pytest.approx(sol.nominal, abs=1e-12)


@pytest.mark.parametrize("pair_mode", ["1vso", "pw"])
def test_loss_at_epsilon_zero_is_dpo_bt(pair_mode: str) -> None:
    batch = make_batch([5, 2, 4, 3], m=6, seed=21)
    robust = build_loss("dpo_wdro", beta=0.4, pair_mode=pair_mode, wdro_epsilon=0.0)
    dpo = build_loss("dpo_bt", beta=0.4, pair_mode=pair_mode)
    policy = batch.policy.clone().requires_grad_(True)
    got = robust(replace(batch, policy=policy))
    torch.testing.assert_close(got.loss, dpo(batch).loss, rtol=1e-12, atol=1e-12)
    got.loss.sum().backward()
    want = policy.detach().clone().requires_grad_(True)
    dpo(replace(batch, policy=want)).loss.sum().backward()
    torch.testing.assert_close(policy.grad, want.grad, rtol=1e-12, atol=1e-12)
    assert got.metrics["wdro/excess"].item() == pytest.approx(0.0, abs=1e-12)


def test_worst_case_grows_with_epsilon() -> None:
    rng = np.random.default_rng(1)
    xi = rng.uniform(0.02, 1, 20)
    w = rng.uniform(0.5, 1.5, 20)
    w /= w.sum()
    a, b = tangent_pieces(16, 0.02)
    values = [solve_worst_case(xi, w, eps, a, b, 0.02).objective for eps in np.linspace(0, 1, 21)]
    assert all(v2 >= v1 - 1e-12 for v1, v2 in itertools.pairwise(values))
    assert values[1] > values[0]  # strictly, at first
    # past the cost of moving every sample to xi_min the worst case is l^(xi_min) = -log xi_min
    assert float((w * (xi - 0.02)).sum()) < 1.0
    assert values[-1] == pytest.approx(-math.log(0.02), abs=1e-9)


def test_loss_grows_with_epsilon_and_equals_dpo_plus_the_batch_excess() -> None:
    batch = make_batch([4, 3, 2], seed=5)
    dpo = build_loss("dpo_bt", beta=0.5)(batch).loss
    prev = -math.inf
    for eps in (0.0, 0.01, 0.05, 0.2):
        out = build_loss("dpo_wdro", beta=0.5, wdro_epsilon=eps)(batch)
        excess = out.metrics["wdro/excess"].item()
        torch.testing.assert_close(out.loss, dpo + excess, rtol=1e-6, atol=1e-6)  # metrics are float32
        assert out.metrics["wdro/objective"].item() >= prev - 1e-9
        prev = out.metrics["wdro/objective"].item()
        assert out.metrics["wdro/transport"].item() <= eps + 1e-6
        assert out.metrics["wdro/solve_ms"].item() > 0


def test_pair_masses_and_probabilities_given_to_the_solver() -> None:
    """The pair masses are 1 / (B n_b): with lists of 3 and 2 (1vsO: 2 and 1 pairs) they are 1/4, 1/4, 1/2."""
    batch = make_batch([3, 2], seed=2)
    captured = {}
    import rankalign.losses.dpo_wdro as mod

    real = mod.solve_worst_case

    def spy(xi, w, *args):  # type: ignore[no-untyped-def]
        captured["w"], captured["xi"] = w, xi
        return real(xi, w, *args)

    mod.solve_worst_case = spy
    try:
        build_loss("dpo_wdro", beta=0.3)(batch)
    finally:
        mod.solve_worst_case = real
    np.testing.assert_allclose(captured["w"], [0.25, 0.25, 0.5])
    want = []
    for r in rows(batch):
        s = [0.3 * (r.policy[i] - r.reference[i]) for i in r.order]
        want += [max(0.01, 1 / (1 + math.exp(-(s[0] - s[j])))) for j in range(1, r.n)]
    np.testing.assert_allclose(captured["xi"], want, rtol=1e-12)


def test_moved_pairs_get_a_larger_gradient() -> None:
    """Mass moved to xi_min trades the slope of l^ at xi for the budget's price lambda: the hardest
    pair (lowest xi) gets more than its DPO gradient; with a small ball the easy ones keep theirs."""
    batch = make_batch([2, 2, 2, 2, 2, 2], seed=8)
    policy = batch.policy.clone().requires_grad_(True)
    build_loss("dpo_wdro", beta=0.2, wdro_epsilon=0.02)(replace(batch, policy=policy)).loss.mean().backward()
    ref = batch.policy.clone().requires_grad_(True)
    build_loss("dpo_bt", beta=0.2)(replace(batch, policy=ref)).loss.mean().backward()
    s = batch.sorted(0.2 * batch.ratio)
    margins = (s[:, 0] - s[:, 1]).tolist()
    top = batch.top.tolist()
    ratio = [policy.grad[i, top[i]].item() / ref.grad[i, top[i]].item() for i in range(6)]
    hardest = int(np.argmin(margins))
    assert ratio[hardest] > 1.5
    assert sorted(ratio)[:3] == pytest.approx([1.0, 1.0, 1.0], abs=1e-9)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"wdro_epsilon": -0.1}, "wdro_epsilon must be >= 0"),
    ({"wdro_epsilon": float("inf")}, "wdro_epsilon must be a finite number"),
    ({"wdro_pieces": 0}, "wdro_pieces must be an integer from 1 to 256"),
    ({"wdro_pieces": 257}, "wdro_pieces must be an integer from 1 to 256"),
    ({"wdro_pieces": 2.5}, r"wdro_pieces must be an integer from 1 to 256 \(got 2.5\)"),
    ({"wdro_xi_min": 0.0}, "0 < wdro_xi_min < 1"),
    ({"wdro_xi_min": 1.0}, "0 < wdro_xi_min < 1"),
])
def test_bad_hyper_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_loss("dpo_wdro", **kwargs)


def test_bad_epsilon_is_a_config_error_before_any_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from rankalign.cli import main
    from rankalign.training.config import ListwiseConfig

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("a model was loaded before the config was checked")

    monkeypatch.setattr("rankalign.training.models.load_model_and_tokenizer", refuse)
    with pytest.raises(ConfigError, match="dpo_wdro hyper-parameters: wdro_epsilon must be >= 0"):
        ListwiseConfig(method="dpo_wdro", output_dir=str(tmp_path / "o"), hparams={"wdro_epsilon": -1.0})
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tiny_records(2)))
    rc = main(["train", "--method", "dpo_wdro", "--data", str(data), "--output-dir", str(tmp_path / "o"),
               "--wdro_pieces", "0"])
    assert rc == 2
    assert "wdro_pieces must be an integer from 1 to 256 (got 0)" in capsys.readouterr().err


# --------------------------------------------------------------------------- training
def test_trains_on_a_tiny_model_and_logs_the_solve_time(tmp_path: Path) -> None:
    from rankalign.data.record import ListRecord
    from rankalign.training.config import ListwiseConfig
    from rankalign.training.trainer import train

    torch.set_num_threads(1)
    base = save_tiny(tmp_path / "tiny")
    config = ListwiseConfig(method="dpo_wdro", model=str(base), output_dir=str(tmp_path / "run"), use_cpu=True,
                            report_to="none", disable_tqdm=True, save_strategy="no", max_length=48,
                            max_prompt_length=24, seed=0, logging_steps=1, max_steps=3,
                            per_device_train_batch_size=2, hparams={"wdro_epsilon": 0.1, "wdro_pieces": 8})
    result = train(config, [ListRecord.from_dict(r) for r in tiny_records(4)])
    steps = [r for r in result.log if r.get("type") == "train"]
    assert len(steps) == 3
    for row in steps:
        m = row["metrics"]
        assert m["wdro/solve_ms"] > 0 and math.isfinite(row["loss"])
        assert m["wdro/objective"] >= m["wdro/excess"] >= 0
        assert m["wdro/transport"] <= 0.1 + 1e-6
    model = copy.deepcopy(result.model)
    assert all(torch.isfinite(p).all() for p in model.parameters())
