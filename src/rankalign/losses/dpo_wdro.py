"""Wasserstein-robust DPO: DPO against the worst-case distribution of the preference
probabilities xi = sigmoid(margin) in a Wasserstein-1 ball around the batch's pairs
(docs/methods.md#robust-dpo).

The worst case is the finite linear program of Mohajerin Esfahani & Kuhn, *Data-driven
Distributionally Robust Optimization Using the Wasserstein Metric* (arXiv:1505.05116),
Theorem 4.2 for a loss that is the maximum of K affine pieces, solved per micro-batch with
HiGHS (``scipy.optimize.linprog``). :func:`solve_worst_case` is the solver on its own;
:class:`DPOWDROLoss` turns its answer into a differentiable loss on the model's margins.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rankalign.losses._util import (
    check_nonnegative,
    check_pair_mode,
    check_positive,
    list_metrics,
    pair_mask,
    pair_mean,
    sorted_rewards,
)
from rankalign.losses.base import ListLogps, ListwiseLoss, LossOutput
from rankalign.losses.params import Beta, PairMode, hparam
from rankalign.losses.registry import register_loss

#: the most affine pieces a run may ask for (the program has 3 * K variables per pair)
MAX_PIECES = 256


@dataclass
class DPOWDROParams(Beta, PairMode):
    """Wasserstein-robust DPO hyper-parameters: ``beta``, ``pair_mode`` (shared) and the ball."""

    wdro_epsilon: float = hparam(0.05, "Radius epsilon (>= 0) of the Wasserstein-1 ball around the batch's "
                                       "empirical distribution of xi = sigmoid(DPO margin), in units of xi "
                                       "(Mohajerin Esfahani & Kuhn, arXiv:1505.05116, eq. 6); 0 = plain DPO-BT.")
    wdro_pieces: int = hparam(16, f"K, the number of affine pieces (1..{MAX_PIECES}) whose maximum approximates "
                                  "-log xi on [wdro_xi_min, 1]: tangents at K geometrically spaced points.")
    wdro_xi_min: float = hparam(0.01, "Lower end xi_min of the support [xi_min, 1] of xi (0 < xi_min < 1); the "
                                      "adversary can move a pair's probability down to xi_min, at most.")


@dataclass
class WorstCase:
    """The solver's answer for N samples (pairs) and K pieces.

    Attributes:
        objective: the worst-case expectation sup_Q E_Q[l^(xi)] over the ball (the LP's optimum).
        nominal: E_P[l^(xi)] under the empirical distribution (the value at epsilon = 0).
        contrib: ``[N]`` each sample's part of ``objective`` before its weight:
            ``sum_k alpha_ik l_k(atom_ik)``.
        grad: ``[N]`` d objective / d xi_i (envelope theorem; docs/methods.md#robust-dpo).
        alpha: ``[N, K]`` the share of sample i's mass on piece k (rows sum to 1).
        atoms: ``[N, K]`` where that share sits: ``xi_i - q_ik / alpha_ik`` (``xi_i`` where alpha_ik = 0).
        weights: ``[N]`` the factor on each sample's DPO gradient d(-log xi)/d xi that the robust
            term adds up to (1 = plain DPO; see :class:`DPOWDROLoss`).
        lam: the price of the transport budget (the dual of the ball constraint).
        transport: the transport cost used, ``sum_i w_i sum_k q_ik`` (<= epsilon).
        solve_ms: time to build and solve the program, in milliseconds.
    """

    objective: float
    nominal: float
    contrib: np.ndarray
    grad: np.ndarray
    alpha: np.ndarray
    atoms: np.ndarray
    weights: np.ndarray
    lam: float
    transport: float
    solve_ms: float


def tangent_pieces(k: int, xi_min: float) -> tuple[np.ndarray, np.ndarray]:
    """Slopes ``a [K]`` and intercepts ``b [K]`` of the tangents of ``-log xi`` at K points.

    The points are geometrically spaced from ``xi_min`` to 1, ``t_k = xi_min^((K-k)/(K-1))``
    (K = 1: the single point 1). The tangent at t is ``-log t - (xi - t)/t``, so
    ``a = -1/t``, ``b = 1 - log t``. Their maximum ``l^`` is a convex, piecewise-affine lower
    bound of ``-log xi`` that touches it at every t_k (an outer approximation of its
    epigraph); the geometric spacing makes the largest gap between consecutive tangent
    points the same, ``u - 1 - log u`` with ``u = c log c / (c - 1)`` and ``c`` the ratio of
    neighbouring points (K = 16, xi_min = 0.01: gap 0.0118), because ``-log`` is scale-free.
    """
    if k == 1:
        t = np.array([1.0])
    else:
        t = xi_min ** ((k - 1 - np.arange(k)) / (k - 1))
    return -1.0 / t, 1.0 - np.log(t)


def piecewise_loss(xi: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(l^(xi), its slope)``: the value and the slope of the maximal piece at each xi."""
    vals = xi[:, None] * a[None, :] + b[None, :]  # [N, K]
    top = vals.argmax(1)
    return vals[np.arange(len(xi)), top], a[top]


def solve_worst_case(xi: np.ndarray, weights: np.ndarray, epsilon: float, a: np.ndarray, b: np.ndarray,
                     xi_min: float) -> WorstCase:
    """The worst-case distribution of ``xi`` in the Wasserstein-1 ball, by linear programming.

    Paper: Mohajerin Esfahani & Kuhn (arXiv:1505.05116), Theorem 4.2 with affine pieces
    ``l_k(xi) = a_k xi + b_k`` and the support Xi = [xi_min, 1]; here the empirical
    distribution may carry unequal masses ``w_i`` (the proof is the same):

        maximise   sum_i w_i sum_k (alpha_ik (a_k xi_i + b_k) - a_k q_ik)
        subject to sum_i w_i sum_k |q_ik| <= epsilon,   sum_k alpha_ik = 1,   alpha_ik >= 0,
                   alpha_ik xi_min <= alpha_ik xi_i - q_ik <= alpha_ik      (atoms in Xi)

    The worst-case distribution is ``sum_i w_i sum_k alpha_ik delta(xi_i - q_ik / alpha_ik)``.
    Every piece decreases (``a_k < 0``), so moving an atom to the right lowers the loss and
    spends budget: some optimum has ``q >= 0``, which makes ``|q| = q`` and the upper support
    row (``xi_i - q/alpha <= xi_i <= 1``) redundant; the program solved is that smaller LP
    (2NK variables, NK + 1 inequality rows, N equality rows). The gradient of the optimum in
    ``xi_i`` comes from its duals (envelope theorem): ``w_i sum_k a_k alpha_ik + sum_k y_ik
    alpha_ik``, y_ik the price of the support row ``(xi_min - xi_i) alpha_ik + q_ik <= 0``.

    Args:
        xi: ``[N]`` values in [xi_min, 1] (callers clip).
        weights: ``[N]`` masses w_i > 0 of the empirical distribution (summing to 1).
        epsilon: the radius (>= 0).
        a, b: ``[K]`` slopes (< 0) and intercepts of the pieces (:func:`tangent_pieces`).
        xi_min: the lower end of the support.
    Raises:
        ValueError: a piece that does not decrease.
        RuntimeError: HiGHS did not find an optimum (it always exists: the feasible set is
            non-empty and bounded).
    """
    from scipy import sparse
    from scipy.optimize import linprog

    if not (np.asarray(a) < 0).all():
        raise ValueError("solve_worst_case: every piece must decrease (a_k < 0), as the tangents of -log xi do")
    t0 = time.perf_counter()
    xi = np.asarray(xi, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    n, k = len(xi), len(a)
    nk = n * k
    xi_rep = np.repeat(xi, k)  # [N*K], index i*K + k
    w_rep = np.repeat(w, k)
    a_rep = np.tile(a, n)
    # variables x = [alpha (NK), q (NK)]; linprog minimises, so the objective is negated
    c = -np.concatenate([w_rep * (a_rep * xi_rep + np.tile(b, n)), -w_rep * a_rep])
    budget = sparse.csr_matrix(np.concatenate([np.zeros(nk), w_rep])[None, :])  # sum w q <= eps
    support = sparse.hstack([sparse.diags(xi_min - xi_rep), sparse.identity(nk)])  # (xi_min - xi) alpha + q <= 0
    a_ub = sparse.vstack([budget, support], format="csr")
    b_ub = np.concatenate([[epsilon], np.zeros(nk)])
    a_eq = sparse.hstack([sparse.kron(sparse.identity(n), np.ones((1, k))), sparse.csr_matrix((n, nk))],
                         format="csr")
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=np.ones(n), bounds=(0, None), method="highs")
    if res.status != 0:
        raise RuntimeError(f"dpo_wdro: the worst-case program was not solved ({res.message})")
    alpha = res.x[:nk].reshape(n, k)
    q = res.x[nk:].reshape(n, k)
    y = -res.ineqlin.marginals  # prices of the <= rows for the maximisation (>= 0)
    y_support = y[1:].reshape(n, k)
    contrib = (alpha * (a[None] * xi[:, None] + b[None]) - a[None] * q).sum(1)  # [N]
    grad = w * (alpha * a[None]).sum(1) + (y_support * alpha).sum(1)  # [N]
    with np.errstate(divide="ignore", invalid="ignore"):
        atoms = np.where(alpha > 0, xi[:, None] - q / np.where(alpha > 0, alpha, 1.0), xi[:, None])
    nominal_vals, slopes = piecewise_loss(xi, a, b)
    # the loss's gradient in xi is -1/xi + (grad/w - slope) (DPOWDROLoss); as a factor on DPO's -1/xi:
    weights_eff = 1.0 - (grad / w - slopes) * xi
    return WorstCase(objective=float(-res.fun), nominal=float((w * nominal_vals).sum()), contrib=contrib, grad=grad,
                     alpha=alpha, atoms=atoms, weights=weights_eff, lam=float(y[0]),
                     transport=float((w[:, None] * q).sum()), solve_ms=(time.perf_counter() - t0) * 1e3)


@register_loss("dpo_wdro")
class DPOWDROLoss(ListwiseLoss):
    """DPO-BT trained against the worst-case distribution of xi = sigmoid(margin) in a Wasserstein ball.

    Papers: DPO (Rafailov et al., arXiv:2305.18290) eq. 7 on pairs from lists (as ``dpo_bt``,
    ``pair_mode``); the worst case over a Wasserstein-1 ball of radius epsilon around the
    empirical distribution, as the finite program of Mohajerin Esfahani & Kuhn
    (arXiv:1505.05116) Theorem 4.2 (:func:`solve_worst_case`, HiGHS).

    Per micro-batch: every pair p (w above l) of list b gets ``m_p = s_w - s_l`` with
    ``s = beta * (logp_pi - logp_ref)`` and ``xi_p = sigmoid(m_p)``, clipped to [xi_min, 1]
    for the program; the empirical distribution gives pair p the mass
    ``w_p = 1 / (B n_b)`` (n_b pairs in list b, B lists), so at epsilon = 0 it is exactly the
    distribution DPO-BT averages over. ``l = -log xi`` is approximated by ``l^ = max_k l_k``,
    the tangents at K points (:func:`tangent_pieces`). The program gives the worst-case
    value ``V_eps = sup_Q E_Q[l^]`` and its gradient ``g_p = dV_eps / d xi_p``.

    Loss of pair p (the list's loss is the mean over its pairs, as DPO-BT):
    ``L_p = -log sigmoid(m_p) + [c_p - l^(xi_p)] + (g_p / w_p - l^'(xi_p)) * (xi_p - sg(xi_p))``,
    with ``c_p = sum_k alpha_pk l_k(atom_pk)`` sample p's worst-case part and sg = stop-gradient.
    The batch mean is therefore ``E_P[-log xi] + (V_eps - V_0)``: DPO plus the worst case's
    excess over the empirical expectation of the same piecewise loss, and its gradient is
    exactly that of this objective (the bracketed term and the correction are constants,
    the last term carries the envelope gradient of ``V_eps - V_0``). So:

    - at epsilon = 0 nothing moves (q = 0), the excess and its gradient are 0: the loss is DPO-BT;
    - mass the adversary moves to the atom xi_min adds ``l^(xi_min) - l^(xi_p)`` to the loss and
      its gradient in xi_p becomes the budget's price ``-lambda`` instead of the slope
      (``weights``: the resulting factor on the pair's DPO gradient);
    - as K grows (``l^ -> l``) the objective tends to the exact robust objective
      ``sup_Q E_Q[-log xi]`` plus the (vanishing) approximation gap at the data.

    Shapes: ``policy``/``reference`` ``[B, M]`` -> ``loss`` ``[B]``. Metrics besides DPO's:
    ``wdro/solve_ms`` (build + solve time of the program), ``wdro/objective`` (V_eps),
    ``wdro/excess`` (V_eps - V_0), ``wdro/lambda``, ``wdro/transport`` (cost used),
    ``wdro/max_weight``.

    Naive equivalent: ``pairs = [(b, w, l)]; xi = [sigmoid(m)]; solve the program by a loop that
    writes its rows; per list: mean(-log sigmoid(m_p) + c_p - max_k(a_k xi_p + b_k))``.
    """

    needs_reference = True
    hyperparams = DPOWDROParams

    def __init__(self, **hparams: float | int | str) -> None:
        super().__init__(**hparams)
        self.beta = check_positive("beta", self.hparams.beta)
        self.pair_mode = check_pair_mode(self.hparams.pair_mode)
        eps = self.hparams.wdro_epsilon
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
            raise ValueError(f"wdro_epsilon must be a finite number >= 0 (got {eps!r})")
        self.epsilon = check_nonnegative("wdro_epsilon", eps)
        k = self.hparams.wdro_pieces
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_PIECES:
            raise ValueError(f"wdro_pieces must be an integer from 1 to {MAX_PIECES} (got {k!r})")
        xi_min = self.hparams.wdro_xi_min
        if isinstance(xi_min, bool) or not isinstance(xi_min, (int, float)) or not 0 < xi_min < 1:
            raise ValueError(f"wdro_xi_min must be a number with 0 < wdro_xi_min < 1 (got {xi_min!r})")
        self.xi_min = float(xi_min)
        self.slopes, self.intercepts = tangent_pieces(k, self.xi_min)

    def forward(self, batch: ListLogps) -> LossOutput:
        self.check_inputs(batch)
        smask, s = sorted_rewards(batch, self.beta)  # [B, M] each
        pairs = pair_mask(smask, self.pair_mode)  # [B, M, M]
        margins = s[:, :, None] - s[:, None, :]  # [B, M, M]
        idx = pairs.nonzero(as_tuple=True)  # row-major: list, then winner, then loser
        per_pair = -F.logsigmoid(margins)  # [B, M, M]
        metrics = list_metrics(batch, s, s)
        if len(idx[0]) == 0:
            return LossOutput(pair_mean(per_pair, pairs), metrics)
        n_pairs = pairs.sum(dim=(1, 2))  # [B]
        lists = int((n_pairs > 0).sum())
        xi = torch.sigmoid(margins[idx]).clamp(self.xi_min, 1.0)  # [N]
        w = 1.0 / (lists * n_pairs[idx[0]].double())  # [N]
        sol = solve_worst_case(xi.detach().double().cpu().numpy(), w.cpu().numpy(), self.epsilon,
                               self.slopes, self.intercepts, self.xi_min)
        clipped = xi.detach() <= self.xi_min  # the clamp passes no gradient there
        nominal, slope = piecewise_loss(xi.detach().double().cpu().numpy(), self.slopes, self.intercepts)
        excess = sol.objective - float((w.cpu().numpy() * nominal).sum())  # V_eps - V_0, a constant
        # its envelope gradient in xi: dV_eps/dxi - w * l^'(xi); carried by a term whose value is 0
        slope_gap = torch.as_tensor(sol.grad - w.cpu().numpy() * slope, dtype=s.dtype, device=s.device)  # [N]
        robust = excess + (slope_gap * (xi - xi.detach())).sum()  # scalar: the batch's excess
        loss = pair_mean(per_pair, pairs) + robust  # [B]
        weights = np.where(clipped.cpu().numpy(), 1.0, sol.weights)
        metrics.update({
            "wdro/solve_ms": torch.tensor(sol.solve_ms), "wdro/objective": torch.tensor(sol.objective),
            "wdro/excess": torch.tensor(excess), "wdro/lambda": torch.tensor(sol.lam),
            "wdro/transport": torch.tensor(sol.transport), "wdro/max_weight": torch.tensor(float(weights.max())),
        })
        return LossOutput(loss, metrics)
